import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Agent } from '../src/agent/agent.js';
import { startAgent as launchAgent } from '../src/start.js';
import { ConfigError } from '../src/core/config-error.js';
import { testLog } from './support/log.js';
import { Mosquitto } from './support/mosquitto.js';
import { until } from './support/ports.js';
import { Subscriber } from './support/subscriber.js';

let broker: Mosquitto;
beforeAll(async () => {
  broker = await Mosquitto.start();
});
afterAll(async () => {
  await broker?.stop('SIGKILL');
});

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

interface Options {
  poll?: string;
  batch?: number;
  qos?: 0 | 1;
  extraStreams?: string;
}

function writeConfig(dir: string, { poll = '20ms', batch = 1, qos = 1, extraStreams = '' }: Options = {}): string {
  const file = join(dir, 'agent.yaml');
  writeFileSync(
    file,
    `agent: { id: gw-test, data_dir: ${dir}/data, log_level: warn }
devices:
  - id: sim
    protocol: simulator
    poll: ${poll}
    points:
      - { name: energy_kwh, signal: counter, rate: 3600 }
      - { name: power_kw, signal: sine, min: 0, max: 10, period: 1m }
      - { name: breaker, signal: constant, value: true, writable: true }
streams:
  - name: meter
    from: { device: sim, points: [energy_kwh, power_kw] }
    to: [broker, file]
${extraStreams}
upstream:
  - { name: broker, type: mqtt, url: "${broker.url}", topic: "plant/{agent}/{stream}/{device}", qos: ${qos}, batch: ${batch} }
  - { name: file, type: file, path: out.jsonl }
`,
  );
  return file;
}

async function startAgent(file: string): Promise<Agent> {
  const agent = await launchAgent(file, testLog);
  cleanups.push(() => agent.stop());
  return agent;
}

async function subscribe(): Promise<Subscriber> {
  const subscriber = await Subscriber.connect(broker.url, 'plant/#');
  cleanups.push(() => subscriber.close());
  return subscriber;
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('agent: simulator → stream → outbox → MQTT and file', () => {
  it('delivers records of the contract format to the templated topic and to the file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'agent-'));
    const subscriber = await subscribe();
    const agent = await startAgent(writeConfig(dir));
    await until(() => subscriber.records.length >= 10, 10_000, '10 records');
    const [first] = subscriber.records;
    expect(subscriber.topics[0]).toBe('plant/gw-test/meter/sim');
    expect(first).toMatchObject({ agent: 'gw-test', stream: 'meter', device: 'sim', seq: 1 });
    expect(Object.keys(first.values!).sort()).toEqual(['energy_kwh', 'power_kw']);
    expect(first.ts).toBeGreaterThan(Date.now() - 10_000);
    const lines = () => readFileSync(join(dir, 'out.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    await until(() => lines().length >= 10, 5000, 'ten lines in the file');
    expect(lines().slice(0, 10).map((r) => r.seq)).toEqual(range(1, 10));
    expect(agent.outbox.lastSeq).toBeGreaterThanOrEqual(10);
  });

  it('keeps accepting while the broker is down and delivers everything, in order, once it is back', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'agent-'));
    const subscriber = await subscribe();
    const agent = await startAgent(writeConfig(dir));
    await until(() => subscriber.records.length >= 20, 10_000, 'records before the outage');

    await broker.stop();
    const seqAtStop = agent.outbox.lastSeq;
    await new Promise((r) => setTimeout(r, 3000));
    const queued = agent.outbox.depth('broker');
    expect(agent.outbox.lastSeq - seqAtStop).toBeGreaterThan(50); // 20 ms poll: readings kept coming
    expect(queued).toBeGreaterThan(50);
    await broker.resume();
    const seqAtResume = agent.outbox.lastSeq;

    await until(() => subscriber.seqs.distinct.size >= seqAtResume, 30_000, 'the backlog to arrive');
    const last = Math.max(...subscriber.seqs.distinct);
    expect(subscriber.firstArrivals()).toEqual(range(1, last));
  });

  it('batches records into JSON arrays per topic when batch > 1', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'agent-'));
    const subscriber = await subscribe();
    await startAgent(writeConfig(dir, { batch: 50 }));
    await broker.stop();
    await new Promise((r) => setTimeout(r, 1500));
    await broker.resume();
    // (the outbox is seldom seen empty here: a reading arrives every 20 ms)
    await until(() => subscriber.records.length > 60, 20_000, 'the backlog to arrive');
    expect(subscriber.messages).toBeLessThan(subscriber.records.length / 5);
    expect(subscriber.firstArrivals().slice(0, 60)).toEqual(range(1, 60));
  });

  it('publishes at QoS 0 too', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'agent-'));
    const subscriber = await subscribe();
    await startAgent(writeConfig(dir, { qos: 0 }));
    await until(() => subscriber.records.length >= 5, 10_000, 'records at QoS 0');
    expect(subscriber.records[0].seq).toBe(1);
  });

  it('writes through the action sink once per min_interval and reports the write as an ACTION event', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'agent-'));
    const subscriber = await subscribe();
    const extraStreams = `  - name: trip
    from: { device: sim, points: [power_kw] }
    to:
      - broker
      - action: { device: sim, point: breaker, value: false, min_interval: 1h }
`;
    await startAgent(writeConfig(dir, { extraStreams }));
    await until(() => subscriber.records.some((r) => r.event?.code === 'ACTION'), 10_000, 'the ACTION event');
    await until(() => subscriber.records.filter((r) => r.stream === 'trip').length > 20, 10_000, 'more readings');
    const actions = subscriber.records.filter((r) => r.event?.code === 'ACTION');
    expect(actions).toHaveLength(1);
    expect(actions[0]).toMatchObject({ stream: 'trip', device: 'sim', event: { code: 'ACTION', severity: 'info', state: 'raised', point: 'breaker', value: false, ok: true } });
    // stamped by the wall clock (it was the monotonic clock's ms since the process started: 1970)
    expect(Math.abs(actions[0].ts - Date.now())).toBeLessThan(60_000);
  });

  it('reloads a good config, and rejects a bad one while the running config stays', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'agent-'));
    const subscriber = await subscribe();
    const file = writeConfig(dir);
    const agent = await startAgent(file);
    await until(() => subscriber.records.length >= 5, 10_000, 'first records');

    writeFileSync(file, readFileSync(file, 'utf8').replace('poll: 20ms', 'poll: 20 ms'));
    await expect(agent.reload()).rejects.toThrow(ConfigError);
    const before = subscriber.records.length;
    await until(() => subscriber.records.length > before + 5, 5000, 'records after the rejected reload');

    writeConfig(dir, { poll: '100ms' });
    await agent.reload();
    expect(agent.config.devices[0].poll).toBe(100);
    const seqBefore = agent.outbox.lastSeq;
    await until(() => subscriber.records.some((r) => r.seq > seqBefore + 3), 5000, 'records after the reload');
    // seq continues across the reload: no gap, no restart from 1
    expect(subscriber.firstArrivals()).toEqual(range(1, Math.max(...subscriber.seqs.distinct)));
  });
});
