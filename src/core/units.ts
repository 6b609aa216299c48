/** Durations ("250ms 1s 15m 1h 7d") and sizes ("512KB 64MB 1GB"), parsed once at config load. */

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/;
const DURATION_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

const SIZE = /^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB)$/i;
const SIZE_BYTES = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3, TB: 1024 ** 4 } as const;

/** Milliseconds, or undefined when the text is not a duration. */
export function parseDuration(text: string): number | undefined {
  const m = DURATION.exec(text.trim());
  if (!m) return undefined;
  return Number(m[1]) * DURATION_MS[m[2] as keyof typeof DURATION_MS];
}

/** Bytes, or undefined when the text is not a size. */
export function parseSize(text: string): number | undefined {
  const m = SIZE.exec(text.trim());
  if (!m) return undefined;
  return Math.floor(Number(m[1]) * SIZE_BYTES[m[2].toUpperCase() as keyof typeof SIZE_BYTES]);
}

/** `host:port`, `[v6]:port`: the host without brackets and the port (checked by the schema). */
export function parseHostPort(text: string): { host: string; port: number } {
  const at = text.lastIndexOf(':');
  return { host: text.slice(0, at).replace(/^\[|\]$/g, ''), port: Number(text.slice(at + 1)) };
}
