/** A config problem with its place: file, line and column, and the key path within the document. */
export interface ConfigIssue {
  file: string;
  line?: number;
  col?: number;
  path: string;
  message: string;
}

export function formatIssue(issue: ConfigIssue): string {
  const where = issue.line ? `${issue.file}:${issue.line}:${issue.col}` : issue.file;
  return issue.path ? `${where}: ${issue.path}: ${issue.message}` : `${where}: ${issue.message}`;
}

export class ConfigError extends Error {
  readonly issues: ConfigIssue[];

  constructor(issues: ConfigIssue[]) {
    // In file order, as a reader goes through the file to fix them.
    const sorted = [...issues].sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.col ?? 0) - (b.col ?? 0));
    super(sorted.map(formatIssue).join('\n'));
    this.issues = sorted;
    this.name = 'ConfigError';
  }
}

/** `['devices', 0, 'port']` → `devices[0].port` */
export function formatPath(path: readonly (string | number)[]): string {
  let out = '';
  for (const part of path) out += typeof part === 'number' ? `[${part}]` : out ? `.${part}` : part;
  return out;
}
