import { readFileSync } from 'node:fs';
import pino from 'pino';
import { loadConfigFile } from './config/load.js';
import { TimerSchedule } from './connectors/timer/timer.js';
import { recordJson } from './outbox/record.js';
import { buildStreams } from './streams/build.js';
import { LatestValues } from './core/latest.js';
import { parseTime } from './core/time.js';
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
  /** `time` (default): rows sorted by ts (by arrival, with that column), stable; `file`: the file's row order, late data included. */
  order?: 'time' | 'file';
  /** At the end, emit what steps still hold open (windows, energy, episodes) as it stands. */
  flush?: boolean;
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
 * ISO 8601 (without an offset: in agent.timezone); rows with the same device and ts are one reading; an empty value is missing. With a
 * header `ts,device,point,value,arrival`, the fifth column is when the reading reached the
 * agent: the clock of server-time steps (sampler, window closing), as in a live run. A value a
 * step computes with that is not a number is an error naming its line.
 */
export function replay(configFile: string, inputFile: string, write: (line: string) => void, options: ReplayOptions = {}): ReplaySummary {
  const loaded = loadConfigFile(configFile);
  const { config } = loaded;
  const readings = readCsv(inputFile, options.order ?? 'time', config.agent.timezone);
  let clock = readings[0]?.arrival ?? 0;
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
  for (const { reading, arrival, lines } of readings) {
    for (const timer of timers) {
      while (timer.due <= arrival) {
        clock = timer.due;
        timer.stream.push({ device: 'timer', ts: timer.due, values: {} });
        timer.due = timer.schedule.next(timer.due);
      }
    }
    // the agent's clock is when the reading arrived (its ts without an arrival column), never going back
    if (arrival > clock) clock = arrival;
    if (clock - lastTick >= 1000) {
      for (const stream of streams) stream.tick(clock);
      lastTick = clock;
    }
    latest.update(reading);
    for (const stream of streams) {
      if (!stream.reads(reading.device)) continue;
      for (const point of stream.numeric) {
        const value = Object.hasOwn(reading.values, point) ? reading.values[point] : null;
        if (typeof value === 'string' || typeof value === 'boolean') {
          throw new ReplayInputError(`${inputFile}:${lines.get(point)}: ${reading.device}.${point} is ${JSON.stringify(value)}, not a number, and stream ${stream.name} computes with it`);
        }
      }
      stream.push(reading);
    }
  }
  // what is due by the end of the data fires (an absence, a timeout, a window closed by the clock)
  if (readings.length > 0) for (const stream of streams) stream.tick(clock);
  if (options.flush) for (const stream of streams) stream.flush();
  return summary;
}

/** A reading of the input, with when it reached the agent and the CSV line of each value. */
interface InputReading {
  reading: Reading;
  arrival: number;
  lines: Map<string, number>;
}

function readCsv(file: string, order: 'time' | 'file', timezone: string): InputReading[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ReplayInputError(`cannot read ${file}: ${(err as Error).message}`);
  }
  const rows: { ts: number; arrival: number; device: string; point: string; value: Value | null; line: number }[] = [];
  let withArrival = false;
  const time = (textValue: string, index: number, what: string) => {
    const ts = parseTime(textValue, timezone);
    if (!Number.isFinite(ts)) throw new ReplayInputError(`${file}:${index + 1}: ${what}"${textValue}" is neither epoch ms nor an ISO 8601 time`);
    return ts;
  };
  text.split(/\r?\n/).forEach((line, index) => {
    if (!line.trim()) return;
    if (index === 0 && /^\s*ts\s*,/i.test(line)) {
      withArrival = line.split(',')[4]?.trim().toLowerCase() === 'arrival';
      return;
    }
    const cells = line.split(',');
    if (cells.length < 4) throw new ReplayInputError(`${file}:${index + 1}: expected ts,device,point,value${withArrival ? ',arrival' : ''} but found ${JSON.stringify(line)}`);
    const [tsText, device, point] = cells.map((c) => c.trim());
    const ts = time(tsText, index, '');
    // without an arrival column, a value may hold commas
    const valueText = withArrival ? cells[3] : cells.slice(3).join(',');
    const arrivalText = withArrival ? cells[4]?.trim() : undefined;
    const arrival = arrivalText ? time(arrivalText, index, 'arrival ') : ts;
    rows.push({ ts, arrival, device, point, value: parseValue(valueText.trim()), line: index + 1 });
  });
  // Stable by the time readings reached the agent: recordings kept per device still interleave as they happened.
  if (order === 'time') rows.sort((a, b) => a.arrival - b.arrival || a.line - b.line);
  const readings: InputReading[] = [];
  const open = new Map<string, InputReading>();
  let openTs = NaN;
  let openArrival = NaN;
  for (const row of rows) {
    // rows of one reading are adjacent: in file order, the same ts further on is another reading
    if (row.ts !== openTs || row.arrival !== openArrival) {
      open.clear();
      openTs = row.ts;
      openArrival = row.arrival;
    }
    let input = open.get(row.device);
    if (!input) {
      // `__proto__` is a point name too
      input = { reading: { device: row.device, ts: row.ts, values: Object.create(null) }, arrival: row.arrival, lines: new Map() };
      open.set(row.device, input);
      readings.push(input);
    }
    input.reading.values[row.point] = row.value;
    input.lines.set(row.point, row.line);
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
