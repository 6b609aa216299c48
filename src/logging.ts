import pino, { type Logger } from 'pino';

/** `agent.log_format`: `auto` is pretty at a terminal, JSON lines under systemd or into a pipe or file. */
export type LogFormat = 'auto' | 'pretty' | 'json';

const LEVELS: Record<number, { name: string; colour: string }> = {
  10: { name: 'TRACE', colour: '\x1b[90m' },
  20: { name: 'DEBUG', colour: '\x1b[36m' },
  30: { name: 'INFO ', colour: '\x1b[32m' },
  40: { name: 'WARN ', colour: '\x1b[33m' },
  50: { name: 'ERROR', colour: '\x1b[31m' },
  60: { name: 'FATAL', colour: '\x1b[41m\x1b[97m' },
};
const RESET = '\x1b[0m';
const DIM = '\x1b[2m';
/** pino's own fields, shown as the line's time, level and text rather than as key=value. */
const SHOWN = new Set(['level', 'time', 'msg', 'pid', 'hostname']);

/** What `auto` means here: a person at a terminal, unless systemd started us (journald wants JSON). */
export function resolveLogFormat(format: LogFormat, out: { isTTY?: boolean } = process.stdout, env: NodeJS.ProcessEnv = process.env): 'pretty' | 'json' {
  if (format !== 'auto') return format;
  const underSystemd = Boolean(env.JOURNAL_STREAM || env.INVOCATION_ID);
  return out.isTTY && !underSystemd ? 'pretty' : 'json';
}

/** One of pino's JSON lines as a person reads it: `14:03:07.123 INFO  the message  key=value`. */
export function prettyLine(json: string, colour: boolean): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const time = new Date(entry.time as number);
  const hms = `${String(time.getHours()).padStart(2, '0')}:${String(time.getMinutes()).padStart(2, '0')}:${String(time.getSeconds()).padStart(2, '0')}.${String(time.getMilliseconds()).padStart(3, '0')}`;
  const level = LEVELS[entry.level as number] ?? { name: String(entry.level).padEnd(5), colour: '' };
  const fields = Object.entries(entry)
    .filter(([key]) => !SHOWN.has(key))
    .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`)
    .join(' ');
  const paint = (code: string, text: string) => (colour ? `${code}${text}${RESET}` : text);
  return `${paint(DIM, hms)} ${paint(level.colour, level.name)} ${entry.msg ?? ''}${fields ? `  ${paint(DIM, fields)}` : ''}\n`;
}

/**
 * The agent's logger. JSON lines go to stdout as pino writes them; for a person at a terminal
 * each line is rewritten with a local time, a coloured level and the message first (colour off
 * with NO_COLOR).
 */
export function createLogger(format: LogFormat, out: NodeJS.WriteStream = process.stdout, env: NodeJS.ProcessEnv = process.env): Logger {
  const options = { base: { pid: process.pid } };
  // stdout through pino's own destination, as the agent always wrote it
  if (resolveLogFormat(format, out, env) === 'json') return out === process.stdout ? pino(options) : pino(options, out);
  const colour = env.NO_COLOR === undefined || env.NO_COLOR === '';
  return pino(options, { write: (line: string) => out.write(prettyLine(line, colour)) });
}
