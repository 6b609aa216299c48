import Database from 'better-sqlite3';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent } from '../src/start.js';
import { testLog } from './support/log.js';
import { Mosquitto } from './support/mosquitto.js';
import { until } from './support/ports.js';
import { Subscriber } from './support/subscriber.js';

let broker: Mosquitto;
beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mosquitto-acl-'));
  writeFileSync(join(dir, 'acl'), 'topic write allowed/#\ntopic read #\n');
  broker = await Mosquitto.start({ dir, settings: ['allow_anonymous true', `acl_file ${join(dir, 'acl')}`] });
});
afterAll(async () => {
  await broker?.stop('SIGKILL');
});

describe('a broker that refuses a topic (MQTT 5)', () => {
  it('moves the refused records to the dead-letter table, trying the topic again only on a backoff, and the queue keeps flowing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'reject-'));
    const file = join(dir, 'agent.yaml');
    writeFileSync(
      file,
      `agent: { id: gw, data_dir: ${dir}/data, log_level: warn }
devices: [{ id: sim, protocol: simulator, poll: 50ms, points: [{ name: p, signal: sine }] }]
streams:
  - { name: allowed, from: { device: sim }, to: [broker] }
  - { name: denied, from: { device: sim }, to: [broker] }
upstream:
  - { name: broker, type: mqtt, url: "${broker.url}", topic: "{stream}/{device}", protocol_version: 5 }
`,
    );
    const subscriber = await Subscriber.connect(broker.url, '#');
    const agent = await startAgent(file, testLog);
    // Mosquitto closes the connection at each refusal, and each reconnect waits a jittered backoff (up to 1 s)
    await until(() => subscriber.records.length >= 40, 20_000, '40 records of the allowed stream');
    const forwarder = agent.forwarders[0];
    await until(() => forwarder.deadLettered >= 40, 10_000, '40 refused records');
    await agent.stop();
    const lastSeq = agent.outbox.lastSeq;
    await subscriber.close();

    expect(subscriber.records.every((r) => r.stream === 'allowed')).toBe(true);
    // one attempt each: what went to the dead-letter table was sent once
    const db = new Database(join(dir, 'data/edge-agent.db'), { readonly: true });
    const dead = db.prepare('SELECT reason, payload FROM dead_letter').all() as { reason: string; payload: string }[];
    const queued = (db.prepare("SELECT payload FROM outbox WHERE upstream = 'broker'").pluck().all() as string[]).map((p) => JSON.parse(p).seq as number);
    db.close();
    expect(dead.length).toBe(forwarder.deadLettered);
    expect(dead.every((d) => JSON.parse(d.payload).stream === 'denied')).toBe(true);
    expect(dead[0].reason).toMatch(/Not authorized \(reason code 0x87\) on denied\/sim/);
    // the first was refused by the broker, and each probe after a backoff (0.5-1 s, then 1-2 s, …); the rest without a send
    const tried = dead.filter((d) => !/not sent: the topic is probed again in \d+ s/.test(d.reason));
    expect(tried.length).toBeLessThan(dead.length / 3);
    // every record is accounted for: delivered, refused, or (the last few) still queued
    const seen = new Set([...subscriber.records.map((r) => r.seq), ...dead.map((d) => JSON.parse(d.payload).seq as number), ...queued]);
    expect(Array.from({ length: lastSeq }, (_, i) => i + 1).filter((seq) => !seen.has(seq))).toEqual([]);
    expect(queued.length).toBeLessThan(20);
    // mosquitto closes the connection after each refusal, which fails the sends in flight (4 at most): no more
    expect(forwarder.errors).toBeLessThanOrEqual(tried.length * 4);
  });
});

describe('a backlog that holds a refused topic (MQTT 5)', () => {
  it('delivers everything else: the refusal of a message pipelined with others is not lost to the broker closing the connection', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'reject-backlog-'));
    const file = join(dir, 'agent.yaml');
    writeFileSync(
      file,
      `agent: { id: gw, data_dir: ${dir}/data, log_level: warn }
devices: [{ id: sim, protocol: simulator, poll: 10ms, points: [{ name: p, signal: sine }] }]
streams:
  - { name: denied, from: { device: sim }, to: [broker] }
  - { name: allowed, from: { device: sim }, to: [broker] }
upstream:
  - { name: broker, type: mqtt, url: "${broker.url}", topic: "{stream}/{device}", protocol_version: 5 }
`,
    );
    // the backlog builds while the broker is down; then it goes out in pipelined sends
    await broker.stop();
    const agent = await startAgent(file, testLog);
    await until(() => agent.outbox.lastSeq >= 400, 20_000, '400 records queued');
    await broker.resume();
    const subscriber = await Subscriber.connect(broker.url, 'allowed/#');
    try {
      const forwarder = agent.forwarders[0];
      // before the fix, nothing after the first refused record ever left the outbox
      await until(() => subscriber.seqs.distinct.size >= 200 && forwarder.deadLettered >= 150, 30_000, 'the backlog: 200 allowed records delivered, 150 refused ones dead-lettered');
      // MQTT.js must not publish again on reconnect what the outbox sends again itself
      expect(subscriber.seqs.duplicates).toBe(0);
    } finally {
      await agent.stop();
      await subscriber.close();
    }
  });
});
