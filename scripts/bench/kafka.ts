// Kafka benchmark: records/s from the outbox to the test Kafka broker (a wire-protocol broker
// in another process, test/support/kafka-broker.ts), counted when the broker has acknowledged
// them all (acks: all, idempotent producer). 100 devices, so records spread over the
// partitions; batching of max_records per send, for each compression. Medians of ROUNDS runs.
import { TS_NODE_ARGS } from '../../test/support/cli.js';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import pino from 'pino';
import type { KafkaUpstreamConfig } from '../../src/upstream/kafka/config.js';
import type { Reading } from '../../src/core/reading.js';
import { KafkaUpstream } from '../../src/upstream/kafka/kafka.js';
import type { Upstream } from '../../src/upstream/upstream.js';
import { drainRate, fmt, median } from './drain.js';

const RECORDS = Number(process.env.BENCH_RECORDS ?? 200_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const log = pino({ level: 'silent' });
const reading = (i: number): Reading => ({ device: `meter-${i % 100}`, ts: 1_763_719_200_000 + i * 1000, values: { power_kw: 12.5 + (i % 100), energy_kwh: 1000 + i * 0.01 } });

/** A test broker in a process of its own, fresh for each run (a full one would slow the next runs with its garbage collection). */
async function startBroker(): Promise<{ port: number; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, [...TS_NODE_ARGS, join(import.meta.dirname, 'kafka-broker.ts')], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.on('data', (chunk) => {
      const announced = /port (\d+)/.exec(String(chunk));
      if (announced) resolve(Number(announced[1]));
    });
    child.once('exit', (code) => reject(new Error(`the test Kafka broker exited (code ${code}) before it listened`)));
  });
  return { port, stop: () => new Promise<void>((resolve) => child.once('exit', () => resolve()).kill('SIGTERM')) };
}

async function drain(compression: KafkaUpstreamConfig['compression'], maxRecords: number): Promise<number> {
  const broker = await startBroker();
  try {
    return await drainRate(RECORDS, reading, 'lake', () =>
      new KafkaUpstream(
        { name: 'lake', type: 'kafka', brokers: [`127.0.0.1:${broker.port}`], topic: `bench-${compression}-${maxRecords}`, key: '{device}', acks: 'all', idempotent: true, compression, batch: { max_records: maxRecords, max_wait: 10 }, timeout: 10_000 },
        'gw-bench',
        log,
      ), log);
  } finally {
    await broker.stop();
  }
}

console.log(`${RECORDS.toLocaleString('en-US')} records per run, 100 devices, 3 partitions, acks all, idempotent; ${ROUNDS} runs each`);
// The machine's ceiling, in the same run: the outbox read and delete alone, into an upstream
// that acknowledges at once.
const instant = (): Upstream => ({ name: 'lake', window: 1, batch: 1000, connected: true, onConnect() {}, send: async () => ({ rejected: [] }), close: async () => {} });
const reference: number[] = [];
for (let round = 0; round < ROUNDS; round++) reference.push(await drainRate(RECORDS, reading, 'lake', instant, log));
console.log(`reference: outbox read + delete alone         : median ${fmt(median(reference))} records/s  [${reference.map(fmt).join(', ')}]`);
const settings: [KafkaUpstreamConfig['compression'], number][] = [['none', 1000], ['zstd', 1000], ['gzip', 1000], ['lz4', 1000], ['snappy', 1000], ['zstd', 5000]];
for (const [compression, maxRecords] of settings) {
  const runs: number[] = [];
  for (let round = 0; round < ROUNDS; round++) runs.push(await drain(compression, maxRecords));
  const share = Math.round((100 * median(runs)) / median(reference));
  console.log(`compression ${compression.padEnd(6)} max_records ${String(maxRecords).padEnd(5)}: median ${fmt(median(runs))} records/s  [${runs.map(fmt).join(', ')}]  ${share} % of the reference  (target >= 50,000)`);
}
