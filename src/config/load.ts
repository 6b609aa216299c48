import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Ajv, type ErrorObject } from 'ajv';
import { isMap, isScalar, LineCounter, parseDocument, visit, type Document, type Node } from 'yaml';
import { ConfigError, formatPath, type ConfigIssue } from './errors.js';
import { configSchema } from './schema.js';
import type { AgentConfig } from './types.js';
import { parseDuration, parseSize } from './units.js';

export type ConfigPath = readonly (string | number)[];

/** A loaded config and where each of its keys came from, for errors found after the schema. */
export interface LoadedConfig {
  config: AgentConfig;
  file: string;
  text: string;
  /** An issue located at `path` in the file (the nearest existing node). */
  issueAt(path: ConfigPath, message: string): ConfigIssue;
}

const ajv = new Ajv({ allErrors: true, strict: false, verbose: true });
ajv.addKeyword({
  keyword: 'duration',
  type: 'string',
  modifying: true,
  errors: true,
  validate: unitKeyword(parseDuration, 'must be a duration such as 250ms, 1s, 15m, 1h or 7d'),
});
ajv.addKeyword({
  keyword: 'size',
  type: 'string',
  modifying: true,
  errors: true,
  validate: unitKeyword(parseSize, 'must be a size such as 512KB, 64MB or 1GB'),
});
const validateSchema = ajv.compile(configSchema);

function unitKeyword(parse: (text: string) => number | undefined, message: string) {
  const check = (_schema: unknown, data: string, _parent: unknown, cxt?: { parentData: any; parentDataProperty: string | number }) => {
    const parsed = parse(data);
    if (parsed === undefined) {
      check.errors = [{ keyword: 'unit', message, params: {} }];
      return false;
    }
    if (cxt) cxt.parentData[cxt.parentDataProperty] = parsed;
    return true;
  };
  check.errors = undefined as Partial<ErrorObject>[] | undefined;
  return check;
}

export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError([{ file, path: '', message: `cannot read the config file: ${(err as Error).message}` }]);
  }
  return parseConfig(text, file, env);
}

export function parseConfig(text: string, file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false });
  const position = (offset: number | undefined) => (offset === undefined ? {} : lineCounter.linePos(offset));

  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((e) => ({ file, ...position(e.pos[0]), path: '', message: `invalid YAML: ${firstLine(e.message)}` })),
    );
  }
  if (!isMap(doc.contents)) {
    throw new ConfigError([{ file, line: 1, col: 1, path: '', message: 'the config must be a YAML mapping with an "agent" key' }]);
  }

  const issueAt = (path: ConfigPath, message: string): ConfigIssue => {
    const node = nearestNode(doc, path);
    return { file, ...position(node?.range?.[0]), path: formatPath(path), message };
  };

  const issues = substitute(doc, env, file, position);
  if (issues.length > 0) throw new ConfigError(issues);

  const data = doc.toJS() as Record<string, unknown>;
  if (!validateSchema(data)) {
    throw new ConfigError(schemaIssues(validateSchema.errors ?? [], doc, issueAt, position));
  }
  const config = withDefaults(data, dirname(resolve(file)));
  return { config, file, text, issueAt };
}

function firstLine(message: string): string {
  return message.split('\n')[0];
}

/** Replaces ${NAME}, ${NAME:-default} and ${file:/path} in every string scalar of the document. */
function substitute(
  doc: Document,
  env: NodeJS.ProcessEnv,
  file: string,
  position: (offset: number | undefined) => { line?: number; col?: number },
): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const reference = /\$\{([^}]+)\}/g;
  visit(doc, {
    Scalar(_key, node, path) {
      if (typeof node.value !== 'string' || !node.value.includes('${')) return;
      const original = node.value;
      const replaced = original.replace(reference, (_match, expr: string) => {
        if (expr.startsWith('file:')) {
          const source = expr.slice(5);
          try {
            return readFileSync(source, 'utf8').trim();
          } catch (err) {
            issues.push({ file, ...position(node.range?.[0]), path: keyPath(path), message: `\${${expr}}: cannot read ${source}: ${(err as Error).message}` });
            return '';
          }
        }
        const [nameOnly, fallback] = expr.split(':-', 2);
        const value = env[nameOnly];
        if (value !== undefined && value !== '') return value;
        if (fallback !== undefined) return fallback;
        issues.push({ file, ...position(node.range?.[0]), path: keyPath(path), message: `environment variable ${nameOnly} is not set` });
        return '';
      });
      // `port: ${PORT}` should give the number 502, as if it had been written in place.
      const whole = /^\$\{[^}]+\}$/.test(original);
      node.value = whole ? plainScalar(replaced) : replaced;
    },
  });
  return issues;
}

function plainScalar(text: string): unknown {
  if (/^-?\d+(\.\d+)?$/.test(text)) return Number(text);
  if (text === 'true' || text === 'false') return text === 'true';
  return text;
}

/** The key path of a node from `visit`'s ancestry (maps, pairs, sequences). */
function keyPath(ancestry: readonly unknown[]): string {
  const parts: (string | number)[] = [];
  for (let i = 0; i < ancestry.length; i++) {
    const node = ancestry[i] as { key?: unknown; items?: unknown[] };
    const next = ancestry[i + 1];
    if (node && 'key' in node && isScalar(node.key)) parts.push(String(node.key.value));
    else if (node && Array.isArray(node.items) && next !== undefined && !isMap(node)) parts.push(node.items.indexOf(next));
  }
  return formatPath(parts);
}

function nearestNode(doc: Document, path: ConfigPath): Node | undefined {
  for (let n = path.length; n >= 0; n--) {
    const node = doc.getIn(path.slice(0, n), true) as Node | undefined;
    if (node && typeof node === 'object' && 'range' in node) return node;
  }
  return undefined;
}

function instancePath(pointer: string): (string | number)[] {
  if (!pointer) return [];
  return pointer
    .slice(1)
    .split('/')
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((p) => (/^\d+$/.test(p) ? Number(p) : p));
}

function schemaIssues(
  errors: ErrorObject[],
  doc: Document,
  issueAt: LoadedConfig['issueAt'],
  position: (offset: number | undefined) => { line?: number; col?: number },
): ConfigIssue[] {
  const seen = new Set<string>();
  const issues: ConfigIssue[] = [];
  for (const error of errors) {
    // `if`/`then` and the union of sink forms add a second, vaguer line for the same fault.
    if (error.keyword === 'if') continue;
    const path = instancePath(error.instancePath);
    let issue: ConfigIssue;
    switch (error.keyword) {
      case 'additionalProperties': {
        const key = String(error.params.additionalProperty);
        const allowed = Object.keys(schemaAt(error.parentSchema)?.properties ?? {});
        issue = issueAt([...path, key], `unknown key "${key}"${allowed.length ? ` (expected one of: ${allowed.join(', ')})` : ''}`);
        Object.assign(issue, position(keyOffset(doc, path, key)));
        break;
      }
      case 'required':
        issue = issueAt(path, `missing required key "${error.params.missingProperty}"`);
        break;
      case 'enum':
        issue = issueAt(path, `must be one of: ${(error.params.allowedValues as unknown[]).join(', ')} (got ${JSON.stringify(valueAt(doc, path))})`);
        break;
      case 'type':
        issue = issueAt(path, `must be ${[error.params.type].flat().join(' or ')} (got ${JSON.stringify(valueAt(doc, path))})`);
        break;
      case 'pattern':
        issue = issueAt(path, `${JSON.stringify(valueAt(doc, path))} does not match ${error.params.pattern}`);
        break;
      case 'minProperties':
      case 'maxProperties':
        issue = issueAt(path, path.includes('steps') ? 'a step must have exactly one operator key' : (error.message ?? 'invalid'));
        break;
      default:
        issue = issueAt(path, error.message ?? 'invalid');
    }
    const id = `${issue.path}|${issue.message}`;
    if (!seen.has(id)) {
      seen.add(id);
      issues.push(issue);
    }
  }
  return issues;
}

function schemaAt(schema: unknown): { properties?: Record<string, unknown> } | undefined {
  return schema && typeof schema === 'object' ? (schema as { properties?: Record<string, unknown> }) : undefined;
}

function valueAt(doc: Document, path: ConfigPath): unknown {
  const node = doc.getIn(path, true);
  return isScalar(node) ? node.value : doc.getIn(path);
}

/** Where the key itself starts, so an unknown key is reported on its own line and column. */
function keyOffset(doc: Document, path: ConfigPath, key: string): number | undefined {
  const map = doc.getIn(path, true);
  if (!isMap(map)) return undefined;
  const pair = map.items.find((p) => isScalar(p.key) && p.key.value === key);
  return isScalar(pair?.key) ? pair.key.range?.[0] : undefined;
}

// The schema has checked `raw`; this fills what it left optional.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function withDefaults(raw: Record<string, any>, configDir: string): AgentConfig {
  const agent = {
    data_dir: '/var/lib/edge-agent',
    log_level: 'info',
    http: '127.0.0.1:8080',
    timezone: 'UTC',
    state_ttl: 7 * 86_400_000,
    state_cache: 10_000,
    max_latest_devices: 10_000,
    ...raw.agent,
  };
  agent.data_dir = resolve(configDir, agent.data_dir);
  return {
    ...raw,
    agent,
    devices: raw.devices ?? [],
    streams: (raw.streams ?? []).map((s: AgentConfig['streams'][number]) => ({ ...s, steps: s.steps ?? [] })),
    upstream: (raw.upstream ?? []).map((u: Record<string, any>) => {
      if (u.type === 'mqtt') return { qos: 1, batch: 1, keepalive: 30_000, ...u };
      if (u.type === 'file') return { ...u, path: resolve(configDir, u.path) };
      if (u.type === 'kafka') {
        return { key: '{device}', acks: 'all', idempotent: u.acks === undefined || u.acks === 'all' || u.acks === -1, compression: 'none', ...u, batch: { max_records: 1000, max_wait: 10, ...u.batch } };
      }
      return u;
    }),
    outbox: {
      max_size: 1024 ** 3,
      max_age: 7 * 86_400_000,
      when_full: 'drop-oldest',
      durability: 'normal',
      group_records: 1000,
      group_wait: 10,
      ...raw.outbox,
    },
  };
}
