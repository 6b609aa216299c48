// Sparkplug benchmark: records and metrics per second from the outbox to Mosquitto through the
// Sparkplug upstream (DDATA at QoS 0, each send fenced by an UNSUBACK), beside the plain MQTT
// upstream (JSON at QoS 1, one message per record, and 100 records per message), in the same
// run, rounds interleaved. 100 devices, two values (metrics) per record. Medians of ROUNDS.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import type { Reading } from '../../src/core/reading.js';
import { MqttUpstream } from '../../src/upstream/mqtt/mqtt.js';
import { SparkplugUpstream } from '../../src/upstream/sparkplug/sparkplug.js';
import type { Upstream } from '../../src/upstream/upstream.js';
import { drainRate, fmt, median } from './drain.js';
import { startMosquitto } from './mosquitto.js';

const RECORDS = Number(process.env.BENCH_RECORDS ?? 100_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const METRICS_PER_RECORD = 2;
const log = pino({ level: 'silent' });
const reading = (i: number): Reading => ({ device: `meter-${i % 100}`, ts: 1_763_719_200_000 + i * 1000, values: { power_kw: 12.5 + (i % 100), energy_kwh: 1000 + i * 0.01 } });

async function connected<U extends Upstream>(upstream: U): Promise<U> {
  if (!upstream.connected) await new Promise<void>((resolve) => upstream.onConnect(() => resolve()));
  return upstream;
}

const kinds: Record<string, (url: string) => Promise<Upstream>> = {
  'sparkplug (DDATA, QoS 0 + fence)': (url) =>
    connected(
      new SparkplugUpstream({ name: 'cloud', type: 'sparkplug', url, group_id: 'bench', aliases: true, keepalive: 30_000 }, 'gw-bench', log, {
        dataDir: mkdtempSync(join(tmpdir(), 'bench-sparkplug-')),
        lastSeq: () => 0,
        device: () => undefined,
        write: () => Promise.reject(new Error('no writes in a benchmark')),
        report: () => undefined,
      }),
    ),
  'mqtt JSON, QoS 1, batch 1': (url) => connected(new MqttUpstream({ name: 'cloud', type: 'mqtt', url, topic: 'bench/{agent}/{device}', qos: 1, batch: 1, keepalive: 30_000 }, 'gw-bench', log)),
  'mqtt JSON, QoS 1, batch 100': (url) => connected(new MqttUpstream({ name: 'cloud', type: 'mqtt', url, topic: 'bench/{agent}/{device}', qos: 1, batch: 100, keepalive: 30_000 }, 'gw-bench', log)),
};

const broker = await startMosquitto();
try {
  console.log(`${fmt(RECORDS)} records per run (${METRICS_PER_RECORD} metrics each), 100 devices, ${ROUNDS} rounds, node ${process.version}`);
  const runs = new Map<string, number[]>(Object.keys(kinds).map((k) => [k, []]));
  for (let round = 0; round < ROUNDS; round++) {
    for (const [kind, connect] of Object.entries(kinds)) runs.get(kind)!.push(await drainRate(RECORDS, reading, 'cloud', () => connect(broker.url), log));
  }
  const plain = median(runs.get('mqtt JSON, QoS 1, batch 1')!);
  for (const [kind, rates] of runs) {
    const m = median(rates);
    console.log(`${kind.padEnd(34)}: median ${fmt(m)} records/s = ${fmt(m * METRICS_PER_RECORD)} metrics/s  [${rates.map(fmt).join(', ')}]  ${(m / plain).toFixed(2)} x mqtt batch 1`);
  }
} finally {
  broker.stop();
}
