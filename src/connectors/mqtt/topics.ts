/**
 * MQTT topic filters: `+` matches one level, `#` the rest. Returns the levels the wildcards
 * matched (for `{1}` `{2}` … in a device id template), or undefined when the topic does not match.
 */
export function matchTopic(filter: string | readonly string[], topic: string): string[] | undefined {
  const f = typeof filter === 'string' ? filter.split('/') : filter;
  const t = topic.split('/');
  const captured: string[] = [];
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') {
      captured.push(t.slice(i).join('/'));
      return captured;
    }
    if (i >= t.length) return undefined;
    if (f[i] === '+') captured.push(t[i]);
    else if (f[i] !== t[i]) return undefined;
  }
  return f.length === t.length ? captured : undefined;
}

/** `{1}` `{2}` … replaced by the levels the wildcards matched. */
export function fillLevels(template: string, levels: readonly string[]): string {
  return template.replace(/\{(\d+)\}/g, (whole, n: string) => levels[Number(n) - 1] ?? whole);
}

/** `a.b[0].c` → ['a', 'b', '0', 'c'] */
export function pathParts(path: string): string[] {
  return path.match(/[^.[\]]+/g) ?? [];
}

/** The value at a path such as `a.b[0].c` (or its parts) in parsed JSON, or undefined. */
export function atPath(value: unknown, path: string | readonly string[]): unknown {
  let current = value;
  for (const part of typeof path === 'string' ? pathParts(path) : path) {
    if (current === null || typeof current !== 'object') return undefined;
    if (!Object.hasOwn(current, part)) return undefined;
    current = (current as Record<string, unknown>)[part];
  }
  return current;
}
