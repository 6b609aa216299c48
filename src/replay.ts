import { readFileSync } from 'node:fs';
import pino from 'pino';
import { loadConfigFile } from './config/load.js';
import { TimerSchedule } from './connectors/timer/timer.js';
import { recordJson } from './outbox/record.js';
import { buildStreams } from './streams/build.js';
import { LatestValues } from './core/latest.js';
import type { Reading, Value } from './core/reading.js';
import type { Stream } from './streams/stream.js';
import { wireStream, type StreamSinks } from './streams/wiring.js';

export class ReplayInputError extends Error {}

export interface ReplaySummary {
  readings: number;
  records: number;
  actions: number;
}

export interface ReplayOptions {
  /** `time` (default): rows sorted by ts, stable; `file`: the file's row order, late data included. */
  order?: 'time' | 'file';
}

/**
 * Runs a config's streams over recorded data instead of live devices, and writes what would
 * have gone upstream as JSON lines (events included), and each action as a line
 * `{"action": ...}` (printed, not performed). Time is the data's: server-clock operators,
 * window closing, timeouts (absence, debounce, sequence, count) and timer sources all follow
 * the readings' ts, never going back, and the clock ticks once more at the last reading's time
 * at the end of the input, so a replay is deterministic.
 *
 * Input: CSV with columns ts,device,point,value (a header line is optional); ts in epoch ms or
 * ISO 8601; rows with the same device and ts are one reading; an empty value is missing.
 */
export function replay(configFile: string, inputFile: string, write: (line: string) => void, options: ReplayOptions = {}): ReplaySummary {
  const loaded = loadConfigFile(configFile);
  const { config } = loaded;
  const readings = readCsv(inputFile, options.order ?? 'time');
  let clock = readings[0]?.ts ?? 0;
  const now = () => clock;
  const latest = new LatestValues();
  const built = buildStreams(loaded, { now, latest });
  const summary: ReplaySummary = { readings: readings.length, records: 0, actions: 0 };
  let seq = 0;
  const sinks: StreamSinks = {
    send(_upstreams, stream, reading) {
      summary.records++;
      write(recordJson(config.agent.id, stream, reading, ++seq));
    },
    async write(device, point, value, stream) {
      summary.actions++;
      write(JSON.stringify({ action: { stream, device, point, value, ts: clock } }));
    },
    log: pino({ level: 'silent' }),
    now,
    actionEvents: false,
  };

  const streams: Stream[] = [];
  const timers: { stream: Stream; schedule: TimerSchedule; due: number }[] = [];
  for (const streamConfig of config.streams) {
    const stream = wireStream(streamConfig, built.get(streamConfig.name)!, sinks);
    streams.push(stream);
    if (streamConfig.from.timer) {
      const schedule = new TimerSchedule(streamConfig.from.timer, config.agent.timezone);
      timers.push({ stream, schedule, due: schedule.first(clock) });
    }
  }

  let lastTick = -Infinity;
  for (const reading of readings) {
    for (const timer of timers) {
      while (timer.due <= reading.ts) {
        clock = timer.due;
        timer.stream.push({ device: 'timer', ts: timer.due, values: {} });
        timer.due = timer.schedule.next(timer.due);
      }
    }
    // the data's clock never goes back: a late row (--order file) is judged at the time reached
    if (reading.ts > clock) clock = reading.ts;
    if (clock - lastTick >= 1000) {
      for (const stream of streams) stream.tick(clock);
      lastTick = clock;
    }
    latest.update(reading);
    for (const stream of streams) if (stream.reads(reading.device)) stream.push(reading);
  }
  // what is due by the end of the data fires (an absence, a timeout, a window closed by the clock)
  if (readings.length > 0) for (const stream of streams) stream.tick(clock);
  return summary;
}

function readCsv(file: string, order: 'time' | 'file'): Reading[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ReplayInputError(`cannot read ${file}: ${(err as Error).message}`);
  }
  const rows: { ts: number; device: string; point: string; value: Value | null; line: number }[] = [];
  text.split(/\r?\n/).forEach((line, index) => {
    if (!line.trim() || (index === 0 && /^\s*ts\s*,/i.test(line))) return;
    const cells = line.split(',');
    if (cells.length < 4) throw new ReplayInputError(`${file}:${index + 1}: expected ts,device,point,value but found ${JSON.stringify(line)}`);
    const [tsText, device, point] = cells.map((c) => c.trim());
    const ts = /^\d+$/.test(tsText) ? Number(tsText) : Date.parse(tsText);
    if (!Number.isFinite(ts)) throw new ReplayInputError(`${file}:${index + 1}: "${tsText}" is neither epoch ms nor an ISO 8601 time`);
    rows.push({ ts, device, point, value: parseValue(cells.slice(3).join(',').trim()), line: index + 1 });
  });
  // Stable by time: recordings kept per device still interleave as they happened.
  if (order === 'time') rows.sort((a, b) => a.ts - b.ts || a.line - b.line);
  const readings: Reading[] = [];
  const open = new Map<string, Reading>();
  let openTs = NaN;
  for (const row of rows) {
    // rows of one reading are adjacent: in file order, the same ts further on is another reading
    if (row.ts !== openTs) {
      open.clear();
      openTs = row.ts;
    }
    let reading = open.get(row.device);
    if (!reading) {
      reading = { device: row.device, ts: row.ts, values: Object.create(null) }; // `__proto__` is a point name too
      open.set(row.device, reading);
      readings.push(reading);
    }
    reading.values[row.point] = row.value;
  }
  return readings;
}

function parseValue(text: string): Value | null {
  if (text === '') return null;
  if (text === 'true' || text === 'false') return text === 'true';
  const number = Number(text);
  if (Number.isFinite(number) || text === 'NaN') return number;
  return text.replace(/^"(.*)"$/, '$1');
}
