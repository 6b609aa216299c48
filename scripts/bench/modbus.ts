// (a) points/s: 100 devices × 50 uint16 points (one request per poll each), polled every
//     10 ms, for 10 s: as 100 devices with a connection each (100 modbus-serial ServerTCPs in
//     another process), and as 100 unit ids behind one gateway, one connection and one queue
//     (a pymodbus server: ServerTCP answers after a setTimeout(0), ~1.2 ms a request, which
//     would measure it rather than us).
// (b) latency: a device polled every 50 ms whose register swings across a threshold; a stream
//     hysteresis → action writes a coil on each rising edge. Measured from the moment the
//     reading with the breach leaves the connector (so the poll interval is not counted) to
//     the moment the server handles the write: p50 and p99 over the writes of 20 s. The
//     server's own setTimeout(0) before it handles a request (~1 ms) is included.
import { TS_NODE_ARGS } from '../../test/support/cli.js';
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { parseConfig } from '../../src/config/load.js';
import type { PointConfig } from '../../src/config/types.js';
import type { Connector } from '../../src/connectors/connector.js';
import { createModbus } from '../../src/connectors/modbus/modbus.js';
import { ActionSink } from '../../src/streams/action.js';
import { buildStreams } from '../../src/streams/build.js';
import { LatestValues } from '../../src/core/latest.js';
import { StateStore } from '../../src/streams/state.js';
import { Stream } from '../../src/streams/stream.js';
import Database from 'better-sqlite3';

const here = dirname(fileURLToPath(import.meta.url));
const log = pino({ level: 'silent' });
const now = () => performance.timeOrigin + performance.now();
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);

interface Servers {
  ports: number[];
  /** When each write of coil 0 reached a server (epoch ms, with fractions). */
  writes: number[];
  stop: () => void;
}

function servers(count: number): Promise<Servers> {
  const child = spawn(process.execPath, [...TS_NODE_ARGS, join(here, 'modbus-server.ts'), String(count)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const writes: number[] = [];
  let ports: number[] | undefined;
  let buffered = '';
  child.stdout.on('data', (chunk) => {
    buffered += chunk;
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const line of lines) {
      if (line.startsWith('ports ')) ports = line.slice(6).split(',').map(Number);
      if (line.startsWith('write ')) writes.push(Number(line.slice(6)));
    }
  });
  return new Promise((resolve) => {
    const wait = setInterval(() => {
      if (!ports) return;
      clearInterval(wait);
      resolve({ ports, writes, stop: () => void child.kill('SIGKILL') });
    }, 20);
  });
}

async function pymodbus(): Promise<{ port: number; stop: () => void }> {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const child = spawn('/usr/bin/python3', [join(here, 'modbus_tcp_server.py'), String(port)], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve) => child.stdout.on('data', (chunk) => String(chunk).includes('ready') && resolve()));
  await new Promise((r) => setTimeout(r, 300));
  return { port, stop: () => void child.kill('SIGKILL') };
}

const points: PointConfig[] = Array.from({ length: 50 }, (_, i) => ({ name: `p${i}`, area: 'holding', address: i, type: 'uint16' }));

/** Where each polled device is: its own server (`port`), or a unit behind a gateway. */
interface Target {
  id: string;
  port: number;
  unit_id?: number;
}

async function throughput(label: string, devices: Target[]): Promise<number> {
  let values = 0;
  let bad = 0;
  const connectors: Connector[] = [];
  for (const device of devices) {
    const connector = await createModbus({ protocol: 'modbus-tcp', host: '127.0.0.1', poll: 10, timeout: 1000, points, ...device }, { log, agentId: 'bench' });
    connectors.push(connector);
  }
  for (const c of connectors)
    c.start((r) => {
      for (const name in r.values) r.quality?.[name] ? bad++ : values++;
    });
  await new Promise((r) => setTimeout(r, 1000)); // warm-up
  values = 0;
  bad = 0;
  const started = now();
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  const rate = values / ((now() - started) / 1000);
  for (const c of connectors) await c.stop();
  console.log(`${label}: ${Math.round(rate).toLocaleString('en-US')} points/s (${bad} bad values; demand ${(devices.length * 50 * 100).toLocaleString('en-US')}/s at a 10 ms poll)`);
  return rate;
}

const { ports, writes, stop } = await servers(100);
try {
  await throughput('(a) 100 devices × 50 points, 100 connections', ports.map((port, i) => ({ id: `m${i}`, port })));
  const gateway = await pymodbus();
  try {
    await throughput('(a) 100 units × 50 points behind one gateway', ports.map((_, i) => ({ id: `u${i}`, port: gateway.port, unit_id: (i % 247) + 1 })));
  } finally {
    gateway.stop();
  }

  // (b) latency
  const { config, ...loaded } = parseConfig(
    `agent: { id: bench }
devices:
  - { id: meter, protocol: modbus-tcp, host: 127.0.0.1, port: ${ports[1]}, poll: 50ms, points: [{ name: power_kw, area: holding, address: 100 }, { name: breaker, area: coil, address: 0, writable: true }] }
streams:
  - name: trip
    from: { device: meter, points: [power_kw] }
    steps: [{ hysteresis: { emit: "power_kw > 400", release: "power_kw < 350" } }]
    to: [{ action: { device: meter, point: breaker, value: true } }]
`,
    'bench.yaml',
    {},
  );
  const latest = new LatestValues();
  const streams = buildStreams({ config, ...loaded }, { now: Date.now, latest }, new StateStore(new Database(':memory:')));
  const meter = await createModbus(config.devices[0], { log, agentId: 'bench' });
  const [sink] = config.streams[0].to;
  if (typeof sink !== 'object') throw new Error('the stream trip has no action sink');
  const trip = streams.get('trip');
  if (!trip) throw new Error('the stream trip was not built');
  const action = new ActionSink(sink.action, (point, value) => meter.write(point, value), () => {}, log);
  // The chain runs synchronously: a reading that comes out of it is the one the connector
  // delivered last, so the breach happened when that one left the connector.
  let deliveredAt = 0;
  const breaches: number[] = [];
  const stream = new Stream(config.streams[0], trip.steps, (reading) => {
    breaches.push(deliveredAt);
    action.handle(reading);
  });
  writes.length = 0;
  meter.start((reading) => {
    deliveredAt = now();
    stream.push(reading);
  });
  await new Promise((r) => setTimeout(r, 20_000));
  await meter.stop();
  const latencies = breaches.slice(0, writes.length).map((t, i) => writes[i] - t).sort((a, b) => a - b);
  if (latencies.length === 0) throw new Error('(b) no write reached the server in 20 s');
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))];
  console.log(`(b) breach → write at the server: p50 ${pct(50).toFixed(2)} ms, p99 ${pct(99).toFixed(2)} ms, max ${pct(100).toFixed(2)} ms over ${latencies.length} writes (target p99 <= 5 ms)`);
} finally {
  stop();
}
