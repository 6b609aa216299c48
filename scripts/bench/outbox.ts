// Outbox benchmark. Prints, from one run on this machine:
//  - ingest: records/s through Outbox.add (JSON, seq, group commit of 1000) beside a raw
//    better-sqlite3 loop inserting the same JSON rows into the same table in transactions of
//    1000, with the same pragmas (the JSON built per row, and built beforehand); rounds
//    alternate and medians are compared;
//  - drain: records/s from the outbox to a real Mosquitto at QoS 1 (batch: 100 records per
//    message), counted when the broker has acknowledged them all.
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import type { Reading } from '../../src/core/reading.js';
import { MqttUpstream } from '../../src/upstream/mqtt/mqtt.js';
import { benchOutboxConfig, drainRate, fmt, median, openOutbox as openBenchOutbox } from './drain.js';
import { startMosquitto } from './mosquitto.js';

const RECORDS = Number(process.env.BENCH_RECORDS ?? 200_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const log = pino({ level: 'silent' });
const config = benchOutboxConfig;
const reading = (i: number): Reading => ({ device: 'meter-1', ts: 1_763_719_200_000 + i * 1000, values: { power_kw: 12.5 + (i % 100), energy_kwh: 1000 + i * 0.01 } });

const openOutbox = (dir: string) => openBenchOutbox(dir, log);

function ingestOutbox() {
  const dir = mkdtempSync(join(tmpdir(), 'bench-outbox-'));
  const { db, outbox } = openOutbox(dir);
  const upstreams = ['cloud'];
  const started = process.hrtime.bigint();
  for (let i = 0; i < RECORDS; i++) outbox.add(upstreams, 'power-15m', reading(i));
  outbox.commit();
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  outbox.close();
  db.close();
  rmSync(dir, { recursive: true });
  return RECORDS / seconds;
}

// The same JSON row into the same table in transactions of 1000: built per row (what any
// store of these records must do), or built once beforehand (the insert alone).
function ingestRaw(prebuilt: boolean): number {
  const dir = mkdtempSync(join(tmpdir(), 'bench-raw-'));
  const { db } = openOutbox(dir); // same file, pragmas and table
  const insert = db.prepare('INSERT INTO outbox (upstream, at, stream, device, payload) VALUES (?, ?, ?, ?, ?)');
  const json = (i: number): string => {
    const r = reading(i);
    return JSON.stringify({ agent: 'gw-bench', stream: 'power-15m', device: r.device, ts: r.ts, seq: i + 1, values: r.values });
  };
  const payloads = prebuilt ? Array.from({ length: RECORDS }, (_, i) => json(i)) : undefined;
  const at = Date.now();
  const insertMany = db.transaction((from: number, to: number) => {
    for (let i = from; i < to; i++) insert.run('cloud', payloads ? at : Date.now(), 'power-15m', 'meter-1', payloads ? payloads[i] : json(i));
  });
  const started = process.hrtime.bigint();
  for (let i = 0; i < RECORDS; i += 1000) insertMany(i, Math.min(RECORDS, i + 1000));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  db.close();
  rmSync(dir, { recursive: true });
  return RECORDS / seconds;
}

const drain = (url: string, batch: number) =>
  drainRate(RECORDS, reading, 'cloud', async () => {
    const upstream = new MqttUpstream({ name: 'cloud', type: 'mqtt', url, topic: 'bench/{agent}/{stream}/{device}', qos: 1, batch, keepalive: 30_000 }, 'gw-bench', log);
    await new Promise<void>((resolve) => upstream.onConnect(() => resolve()));
    return upstream;
  }, log);

const raw: number[] = [];
const rawPrebuilt: number[] = [];
const ingest: number[] = [];
for (let round = 0; round < ROUNDS; round++) {
  raw.push(ingestRaw(false));
  rawPrebuilt.push(ingestRaw(true));
  ingest.push(ingestOutbox());
}
console.log(`records per round: ${fmt(RECORDS)}, rounds: ${ROUNDS}, node ${process.version}`);
console.log(`raw insert, JSON built per row:       median ${fmt(median(raw))} records/s  [${raw.map(fmt).join(', ')}]`);
console.log(`raw insert, JSON built beforehand:    median ${fmt(median(rawPrebuilt))} records/s  [${rawPrebuilt.map(fmt).join(', ')}]`);
console.log(`outbox ingest (add + group commit):   median ${fmt(median(ingest))} records/s  [${ingest.map(fmt).join(', ')}]`);
console.log(`outbox ingest / raw insert:           ${(median(ingest) / median(raw) * 100).toFixed(1)} % of the first, ${(median(ingest) / median(rawPrebuilt) * 100).toFixed(1)} % of the second  (target >= 50 %)`);

const broker = await startMosquitto();
try {
  const drains: number[] = [];
  for (let round = 0; round < Math.min(ROUNDS, 3); round++) drains.push(await drain(broker.url, 100));
  console.log(`drain to Mosquitto, QoS 1, batch 100: median ${fmt(median(drains))} records/s  [${drains.map(fmt).join(', ')}]  (target >= 50,000)`);
  const single = await drain(broker.url, 1);
  console.log(`drain to Mosquitto, QoS 1, batch 1:   ${fmt(single)} records/s (one message per record, for reference)`);
} finally {
  broker.stop();
}
