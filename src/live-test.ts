import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { loadConfigFile } from './config/load.js';
import { createConnector, type connectors } from './connectors/index.js';
import type { Connector, DeviceBase } from './connectors/connector.js';
import { LatestValues } from './core/latest.js';
import type { Reading, Value } from './core/reading.js';
import { buildStreams, validateConfig } from './streams/build.js';
import type { Stream } from './streams/stream.js';
import { wireStream, type StreamSinks } from './streams/wiring.js';

export interface LiveTestOptions {
  /** Only this device (and the streams that read it). */
  device?: string;
  /** Read for this long; without it, until each device has given one good value (at most `timeout` ms). */
  seconds?: number;
  timeout?: number;
}

export interface LiveTestResult {
  /** Rows of the table: what would go upstream, and the actions that would be taken. */
  table: string;
  /** Devices that gave no good value in the time (unreachable ones give readings, all bad). */
  silent: string[];
}

export class LiveTestError extends Error {}

type Row = [time: string, stream: string, device: string, point: string, value: string, quality: string];

/**
 * `edge-agent test`: reads the devices (once each, or for a while), runs the readings through
 * the config's streams, and returns what would have gone upstream as a table, like
 * `telegraf --test`. Nothing is sent, written or kept: no outbox, no upstream connection, stream
 * state in memory, actions listed instead of performed, and connectors that keep files (OPC UA
 * certificates) given a temporary data_dir that is deleted afterwards.
 */
export async function liveTest(configFile: string, options: LiveTestOptions, log: Logger): Promise<LiveTestResult> {
  const loaded = loadConfigFile(configFile);
  validateConfig(loaded);
  const { config } = loaded;
  const devices = config.devices.filter((d) => options.device === undefined || d.id === options.device);
  if (devices.length === 0) {
    throw new LiveTestError(options.device === undefined ? `${configFile} has no devices` : `no device "${options.device}" in ${configFile} (devices: ${config.devices.map((d) => d.id).join(', ')})`);
  }

  const rows: Row[] = [];
  const actions: Row[] = [];
  const latest = new LatestValues();
  const built = buildStreams(loaded, { now: Date.now, latest });
  const sinks: StreamSinks = {
    send(_upstreams, stream, reading) {
      rows.push(...rowsOf(stream, reading));
    },
    async write(device, point, value, stream) {
      actions.push([clock(Date.now()), stream, device, point, `${display(value)} (not written)`, '']);
    },
    log,
    actionEvents: false,
    containErrors: true,
  };
  const streams: Stream[] = config.streams.filter((s) => !s.from.timer).map((s) => wireStream(s, built.get(s.name)!, sinks));

  const answered = new Set<string>();
  const dataDir = mkdtempSync(join(tmpdir(), 'edge-agent-test-'));
  const running: Connector[] = [];
  const ticker = setInterval(() => {
    for (const stream of streams) stream.tick(Date.now());
  }, 1000);
  try {
    for (const device of devices) {
      const connector = await createConnector(device as DeviceBase & { protocol: keyof typeof connectors }, { log, agentId: config.agent.id, dataDir });
      running.push(connector);
      connector.start((reading) => {
        if (reading.event) return; // DEVICE_ONLINE and the like: the agent's, not the device's values
        if (Object.entries(reading.values).some(([point, value]) => value !== null && reading.quality?.[point] !== 'bad')) answered.add(reading.device);
        latest.update(reading);
        for (const stream of streams) if (stream.reads(reading.device)) stream.push(reading);
      });
    }
    const until = Date.now() + (options.seconds !== undefined ? options.seconds * 1000 : (options.timeout ?? 10_000));
    while (Date.now() < until && (options.seconds !== undefined || answered.size < devices.length)) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } finally {
    clearInterval(ticker);
    await Promise.allSettled(running.map((c) => c.stop()));
    rmSync(dataDir, { recursive: true, force: true });
  }

  const header: Row = ['time', 'stream', 'device', 'point', 'value', 'quality'];
  const parts = [rows.length > 0 ? table([header, ...rows]) : 'nothing would go upstream'];
  if (actions.length > 0) parts.push(`actions:\n${table([header, ...actions])}`);
  return { table: parts.join('\n\n'), silent: devices.map((d) => d.id).filter((id) => !answered.has(id)) };
}

function rowsOf(stream: string, reading: Reading): Row[] {
  const time = clock(reading.ts);
  if (reading.event) {
    const { code, state, severity, description } = reading.event;
    return [[time, stream, reading.device, `event ${code}`, `${state ?? ''} ${severity ?? ''}${description ? `: ${description}` : ''}`.trim(), '']];
  }
  return Object.entries(reading.values).map(([point, value]) => [time, stream, reading.device, point, display(value), reading.quality?.[point] ?? '']);
}

function display(value: Value | null): string {
  if (value === null) return '(missing)';
  // 230.1, not the 230.10000000000002 of a register scaled by 0.1
  if (typeof value === 'number') return String(Number(value.toPrecision(12)));
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

function clock(ts: number): string {
  const d = new Date(ts);
  const two = (n: number) => String(n).padStart(2, '0');
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}

/** Columns padded to their widest cell; the last column left ragged. */
function table(rows: Row[]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((row) => row.map((cell, c) => (c === row.length - 1 ? cell : cell.padEnd(widths[c]))).join('  ').trimEnd()).join('\n');
}
