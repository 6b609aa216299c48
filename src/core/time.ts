/** ms to add to UTC to get local time in `timezone` at an instant. */
export function timezoneOffset(timezone: string): (ts: number) => number {
  if (timezone === 'UTC') return () => 0;
  const format = new Intl.DateTimeFormat('en-US', {
    timeZone: timezone,
    hourCycle: 'h23',
    year: 'numeric',
    month: 'numeric',
    day: 'numeric',
    hour: 'numeric',
    minute: 'numeric',
    second: 'numeric',
  });
  return (ts) => {
    const parts: Record<string, number> = {};
    for (const part of format.formatToParts(ts)) if (part.type !== 'literal') parts[part.type] = Number(part.value);
    const local = Date.UTC(parts.year, parts.month - 1, parts.day, parts.hour, parts.minute, parts.second);
    return local - Math.floor(ts / 1000) * 1000;
  };
}

const offsets = new Map<string, (ts: number) => number>();

/**
 * Epoch ms of a time written as epoch ms or ISO 8601. One without an offset (`2026-01-05T10:00`)
 * is local time in `timezone` (the agent's), never the host's: the same file means the same
 * instants on every gateway. NaN when it is neither.
 */
export function parseTime(text: string, timezone: string): number {
  const trimmed = text.trim();
  if (/^-?\d+$/.test(trimmed)) return Number(trimmed);
  if (/(Z|[+-]\d\d(:?\d\d)?)$/i.test(trimmed) && trimmed.includes('T')) return Date.parse(trimmed);
  const asUtc = Date.parse(/[T ]/.test(trimmed) ? `${trimmed.replace(' ', 'T')}Z` : `${trimmed}T00:00:00Z`);
  if (!Number.isFinite(asUtc)) return NaN;
  let offset = offsets.get(timezone);
  if (!offset) offsets.set(timezone, (offset = timezoneOffset(timezone)));
  // the offset at the instant meant, which a change of daylight saving time may move
  const first = asUtc - offset(asUtc);
  return asUtc - offset(first);
}
