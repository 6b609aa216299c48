import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { connect } from 'node:net';
import { createRecordsBatch } from '@platformatic/kafka';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { Agent } from '../src/agent/agent.js';
import { startAgent as launchAgent } from '../src/start.js';
import { TS_NODE_ARGS } from './support/cli.js';
import { ErrorCode, KafkaTestBroker } from './support/kafka-broker.js';
import { kcatConsume, type ConsumedRecord } from './support/kcat.js';
import { testLog } from './support/log.js';
import { makePki } from './support/pki.js';
import { until } from './support/ports.js';

// With KAFKA_BROKERS (host:port,…) the delivery tests run against that cluster; the fault
// tests always use the test broker, which they stop and tell to fail.
const external = process.env.KAFKA_BROKERS;
const ROOT = resolve(import.meta.dirname, '..');

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

async function testBroker(options: ConstructorParameters<typeof KafkaTestBroker>[0] = {}): Promise<KafkaTestBroker> {
  const broker = await KafkaTestBroker.start(options);
  cleanup.push(() => broker.stop());
  return broker;
}

/** An agent with three simulated meters, each on its own stream(s), forwarding to Kafka. */
async function startAgent(upstream: string, streams = ['readings'], poll = '20ms', log = testLog): Promise<{ agent: Agent; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'kafka-'));
  const file = join(dir, 'agent.yaml');
  const devices = ['meter-1', 'meter-2', 'meter-3'];
  writeFileSync(
    file,
    `agent: { id: gw-1, data_dir: ${dir}/data, log_level: ${log === testLog ? 'error' : 'warn'}, http: off }
devices:
${devices.map((d) => `  - { id: ${d}, protocol: simulator, poll: ${poll}, points: [{ name: power_kw, signal: sine, min: 0, max: 10 }] }`).join('\n')}
streams:
${streams.flatMap((s) => devices.map((d) => `  - { name: ${s}-${d}, from: { device: ${d} }, to: [lake] }`)).join('\n')}
upstream:
  - { name: lake, type: kafka, ${upstream} }
`,
  );
  const agent = await launchAgent(file, log);
  cleanup.push(() => agent.stop());
  return { agent, dir };
}

async function drained(agent: Agent, atLeast: number): Promise<number> {
  await until(() => agent.outbox.lastSeq >= atLeast, 20_000, `${atLeast} records`);
  await agent.stopSources();
  const last = agent.outbox.lastSeq;
  await until(() => agent.outbox.depth('lake') === 0, 30_000, 'the outbox drained to Kafka');
  return last;
}

/** Sequence numbers 1..last each seen, and per key in order (a record sent again may repeat). */
function checkDelivery(records: ConsumedRecord[], last: number): { duplicates: number } {
  const seqs = records.map((r) => JSON.parse(r.payload!).seq as number);
  const missing = Array.from({ length: last }, (_, i) => i + 1).filter((seq) => !seqs.includes(seq));
  expect(missing).toEqual([]);
  const byKey = new Map<string, ConsumedRecord[]>();
  for (const r of records) byKey.set(r.key!, [...(byKey.get(r.key!) ?? []), r]);
  for (const [key, list] of byKey) {
    // one partition per key, and the first time each record appears is in seq order
    expect(new Set(list.map((r) => r.partition)).size, `partitions of ${key}`).toBe(1);
    const firsts: number[] = [];
    const seen = new Set<number>();
    for (const r of [...list].sort((a, b) => a.offset - b.offset)) {
      const seq = JSON.parse(r.payload!).seq as number;
      if (!seen.has(seq)) firsts.push(seq);
      seen.add(seq);
    }
    expect(firsts, `order of ${key}`).toEqual([...firsts].sort((a, b) => a - b));
  }
  return { duplicates: seqs.length - new Set(seqs).size };
}

// through the agent's connection: the database is locked to others while the agent runs
function deadLetters(agent: Agent): { reason: string; payload: string }[] {
  return agent.outbox.deadLetters();
}

describe('Kafka upstream: delivery, read back by kcat', () => {
  for (const compression of ['none', 'gzip', 'snappy', 'lz4', 'zstd']) {
    it(`delivers each record once, in order per key, with key, headers and the record JSON (compression ${compression})`, async () => {
      const broker = external ? undefined : await testBroker();
      const brokers = external ?? broker!.address;
      const topic = `edge-${compression}-${randomUUID().slice(0, 8)}`;
      const { agent } = await startAgent(`brokers: [${brokers}], topic: ${topic}, compression: ${compression}, batch: { max_records: 50, max_wait: 5ms }`);
      const last = await drained(agent, 300);
      const records = await kcatConsume(brokers, topic);

      expect(records.length).toBe(last);
      expect(checkDelivery(records, last).duplicates).toBe(0);
      for (const record of records) {
        const value = JSON.parse(record.payload!);
        expect(record.key).toBe(value.device);
        expect(record.headers).toEqual({ agent: 'gw-1', stream: value.stream, device: value.device });
        expect(Object.keys(value).sort()).toEqual(['agent', 'device', 'epoch', 'seq', 'stream', 'ts', 'values']);
        expect(value.agent).toBe('gw-1');
        expect(value.stream).toBe(`readings-${value.device}`);
        expect(typeof value.values.power_kw).toBe('number');
      }
      // the three keys spread over the partitions as the Java client would put them
      expect(new Set(records.map((r) => r.partition)).size).toBeGreaterThan(1);
      // the default client id names the agent and the upstream
      if (broker) expect([...broker.clientIds].filter((id) => id.startsWith('edge-agent'))).toEqual(['edge-agent-gw-1-lake']);
      if (broker && ['none', 'gzip', 'zstd'].includes(compression)) {
        // what the test broker decoded itself agrees with what kcat read
        const stored = broker.records(topic).map((r) => `${r.partition}/${r.offset}/${r.key}/${r.value}`);
        expect(stored.sort()).toEqual(records.map((r) => `${r.partition}/${r.offset}/${r.key}/${r.payload}`).sort());
      }
    });
  }

  it('a second send of the same batch is stored once (idempotent producer)', async () => {
    const broker = await testBroker();
    const topic = `edge-${randomUUID().slice(0, 8)}`;
    // the batch is stored but the answer says it may not be: the client sends it again with
    // the same sequence number, and the broker knows it already (without idempotence: tried,
    // 3 duplicates)
    broker.failNext('Produce', ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND, 1);
    const { agent } = await startAgent(`brokers: [${broker.address}], topic: ${topic}`);
    const last = await drained(agent, 100);
    const records = await kcatConsume(broker.address, topic);
    expect(checkDelivery(records, last).duplicates).toBe(0);
    expect(records.length).toBe(last);
  });
});

describe('the Kafka test broker', () => {
  /** A Produce v3 request for one batch to partition 0 of `topic`, sent raw; resolves with the partition's error code. */
  async function produceRaw(broker: KafkaTestBroker, topic: string, batch: Buffer): Promise<number> {
    const name = Buffer.from(topic);
    const body = Buffer.concat([
      Buffer.from([0, 0, 0, 3, 0, 0, 0, 7, 0, 4]), Buffer.from('test'), // Produce v3, correlation 7, client id
      Buffer.from([0xff, 0xff, 0, 1, 0, 0, 0x03, 0xe8, 0, 0, 0, 1]), // no transactional id, acks 1, timeout, 1 topic
      Buffer.from([0, name.length]), name, Buffer.from([0, 0, 0, 1, 0, 0, 0, 0]), // 1 partition: 0
      Buffer.alloc(4), batch,
    ]);
    body.writeInt32BE(batch.length, body.length - batch.length - 4);
    const size = Buffer.alloc(4);
    size.writeInt32BE(body.length);
    const socket = connect(broker.port, '127.0.0.1');
    socket.write(Buffer.concat([size, body]));
    const [answer] = (await once(socket, 'data')) as [Buffer];
    socket.destroy();
    // size, correlation id, 1 topic, its name, 1 partition, index, error code
    return answer.readInt16BE(4 + 4 + 4 + 2 + name.length + 4 + 4);
  }

  it('checks the CRC-32C of a record batch and refuses a corrupt one', async () => {
    const broker = await testBroker();
    const batch = createRecordsBatch([{ key: Buffer.from('meter-1'), value: Buffer.from('{"seq":1}'), topic: 't', partition: 0, timestamp: BigInt(Date.now()) }]).buffer;
    expect(await produceRaw(broker, 't', batch)).toBe(ErrorCode.NONE);
    const corrupt = Buffer.from(batch);
    corrupt[corrupt.length - 3] ^= 0x01; // a bit of the value
    expect(await produceRaw(broker, 't', corrupt)).toBe(ErrorCode.CORRUPT_MESSAGE);
    expect(broker.records('t').map((r) => r.value)).toEqual(['{"seq":1}']);
  });
});

describe('Kafka upstream: faults (test broker)', () => {
  it('keeps every record while the broker is down and delivers them, in order per key, once it is back', async () => {
    const broker = await testBroker();
    const topic = `edge-${randomUUID().slice(0, 8)}`;
    const { agent } = await startAgent(`brokers: [${broker.address}], topic: ${topic}, compression: zstd`);
    await until(() => broker.count(topic) >= 50, 10_000, 'first records');
    await broker.stop();
    const stoppedAt = agent.outbox.lastSeq;
    await until(() => agent.outbox.lastSeq >= stoppedAt + 300, 20_000, 'records while the broker is down');
    expect(agent.outbox.depth('lake')).toBeGreaterThan(200);
    await broker.listen();
    const last = await drained(agent, stoppedAt + 300);
    const records = await kcatConsume(broker.address, topic);
    const { duplicates } = checkDelivery(records, last);
    console.log(`broker outage: ${last} records, ${records.length} delivered, ${duplicates} duplicates, ${agent.forwarders[0].errors} failed sends`);
    expect(duplicates).toBeLessThanOrEqual(50);
  });

  it('sends again what a retriable error refused, until the broker takes it', async () => {
    const broker = await testBroker();
    const topic = `edge-${randomUUID().slice(0, 8)}`;
    const { agent, dir } = await startAgent(`brokers: [${broker.address}], topic: ${topic}`);
    await until(() => broker.count(topic) >= 20, 10_000, 'first records');
    // more failures than the client retries on its own: the forwarder backs off and retries
    broker.failNext('Produce', ErrorCode.NOT_LEADER_OR_FOLLOWER, 12);
    const before = agent.forwarders[0].errors;
    await until(() => agent.forwarders[0].errors > before, 10_000, 'a failed send');
    const last = await drained(agent, agent.outbox.lastSeq + 50);
    const records = await kcatConsume(broker.address, topic);
    checkDelivery(records, last);
    expect(deadLetters(agent)).toEqual([]);
  });

  it('dead-letters the records of a topic it may not write, and the queue behind them keeps flowing', async () => {
    const broker = await testBroker({ deniedTopics: ['denied-meter-2'] });
    const { agent, dir } = await startAgent(`brokers: [${broker.address}], topic: "{stream}"`, ['allowed', 'denied'], '50ms');
    const last = await drained(agent, 200);
    const dead = deadLetters(agent);
    const delivered = ['allowed-meter-1', 'allowed-meter-2', 'allowed-meter-3', 'denied-meter-1', 'denied-meter-3'].flatMap((t) => broker.records(t));
    // every record is delivered or dead-lettered, and only those of the denied topic are dead
    expect(dead.length + delivered.length).toBe(last);
    expect(dead.length).toBeGreaterThan(10);
    expect(dead.every((d) => JSON.parse(d.payload).stream === 'denied-meter-2')).toBe(true);
    expect(dead[0].reason).toMatch(/TOPIC_AUTHORIZATION_FAILED on denied-meter-2\/\d/);
    expect(agent.forwarders[0].deadLettered).toBe(dead.length);
    // `sent` counts what the broker acknowledged, not the dead letters
    expect(agent.forwarders[0].sent).toBe(delivered.length);
    // refused at the first send and at each probe; the records in between are dead-lettered without a send
    expect(broker.records('denied-meter-2')).toEqual([]);
    const tried = dead.filter((d) => !/not sent: the topic is probed again in \d+ s/.test(d.reason));
    expect(tried.length).toBeLessThan(dead.length / 2);
  });

  it('dead-letters the records of a topic that does not exist when the broker does not create topics', async () => {
    const broker = await testBroker({ autoCreate: false });
    for (const device of ['meter-1', 'meter-2', 'meter-3']) broker.createTopic(`present-${device}`);
    const { agent, dir } = await startAgent(`brokers: [${broker.address}], topic: "{stream}"`, ['present', 'missing'], '50ms');
    const last = await drained(agent, 200);
    const dead = deadLetters(agent);
    const delivered = ['meter-1', 'meter-2', 'meter-3'].flatMap((d) => broker.records(`present-${d}`));
    expect(dead.length + delivered.length).toBe(last);
    expect(dead.every((d) => JSON.parse(d.payload).stream.startsWith('missing-'))).toBe(true);
    expect(dead.some((d) => /UNKNOWN_TOPIC_OR_PARTITION/.test(d.reason))).toBe(true);
    expect(delivered.length).toBeGreaterThan(50);
  });

  it('notices a deleted topic recreated by an admin within its probe backoff, and counts only acknowledged records as sent', async () => {
    const broker = await testBroker({ autoCreate: false });
    const topic = `edge-${randomUUID().slice(0, 8)}`;
    broker.createTopic(topic);
    const { agent, dir } = await startAgent(`brokers: [${broker.address}], topic: ${topic}, batch: { max_records: 50, max_wait: 5ms }`);
    const forwarder = agent.forwarders[0];
    await until(() => broker.count(topic) >= 50, 10_000, 'first records');
    broker.deleteTopic(topic);
    await until(() => forwarder.deadLettered >= 100, 20_000, 'records dead-lettered while the topic is gone');
    broker.createTopic(topic);
    const recreatedAt = Date.now();
    // the old code dead-lettered every record for 5 minutes after a refusal
    await until(() => broker.count(topic) > 0, 40_000, 'records in the recreated topic');
    console.log(`deleted topic recreated: noticed after ${Date.now() - recreatedAt} ms, ${forwarder.deadLettered} records dead-lettered in all`);
    const last = await drained(agent, agent.outbox.lastSeq + 50);
    const dead = deadLetters(agent);
    expect(dead.length).toBe(forwarder.deadLettered);
    expect(dead.some((d) => /UNKNOWN_TOPIC_OR_PARTITION/.test(d.reason))).toBe(true);
    // every record left the outbox once: acknowledged (sent) or dead-lettered, never both
    expect(forwarder.sent + forwarder.deadLettered).toBe(last);
    const seqs = broker.records(topic).map((r) => JSON.parse(r.value!).seq as number);
    expect(seqs.length).toBeGreaterThan(0);
    expect(Math.max(...seqs)).toBe(last);
  });

  it('a broker that answers later than the client timeout is an error: the upstream is retrying, the records are kept', async () => {
    const broker = await testBroker();
    const topic = `edge-${randomUUID().slice(0, 8)}`;
    const lines: string[] = [];
    const log = pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) });
    const { agent } = await startAgent(`brokers: [${broker.address}], topic: ${topic}, timeout: 1s`, ['readings'], '20ms', log);
    const forwarder = agent.forwarders[0];
    await until(() => broker.count(topic) >= 50, 10_000, 'first records');
    expect(forwarder.retrying).toBe(false);
    // every produce answered after 1.5 s: the old client waited 30 s for an answer, so slow answers looked healthy
    broker.delayAnswers(1500, 'Produce');
    // logged at the first timeout; the send fails after the client's own retries
    await until(() => lines.some((l) => /produce to Kafka .* failed \(no answer within 1000 ms/.test(l)), 10_000, 'the first timeout logged');
    await until(() => forwarder.retrying, 30_000, 'the upstream retrying');
    expect(lines.some((l) => /no answer within 1000 ms \(the request timed out\)/.test(l))).toBe(true);
    broker.delayAnswers(0);
    const last = await drained(agent, agent.outbox.lastSeq + 20);
    expect(forwarder.retrying).toBe(false);
    checkDelivery(await kcatConsume(broker.address, topic), last);
  });

  it('honours the broker throttle: waits throttle_time_ms before the next produce', async () => {
    const broker = await testBroker();
    const topic = `edge-${randomUUID().slice(0, 8)}`;
    broker.throttleMs = 400;
    const { agent } = await startAgent(`brokers: [${broker.address}], topic: ${topic}, batch: { max_records: 20, max_wait: 1ms }`);
    await until(() => broker.produceTimes.length >= 6, 20_000, 'six produce requests');
    const gaps = broker.produceTimes.slice(1, 6).map((t, i) => t - broker.produceTimes[i]);
    console.log(`gaps between produce requests with throttle_time_ms 400: ${gaps.join(', ')} ms`);
    // a lower bound only: a slow machine makes the gaps longer, never shorter
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(380);
    broker.throttleMs = 0;
    const last = await drained(agent, agent.outbox.lastSeq + 20);
    checkDelivery(await kcatConsume(broker.address, topic), last);
  });

  it('splits a batch the broker finds too large, and dead-letters only the record too large on its own', async () => {
    // 700 bytes a batch: two or three small records fit, a record with a long event text does not
    const broker = await testBroker({ maxMessageBytes: 700 });
    const dir = mkdtempSync(join(tmpdir(), 'kafka-large-'));
    const file = join(dir, 'agent.yaml');
    const topic = `edge-${randomUUID().slice(0, 8)}`;
    writeFileSync(
      file,
      `agent: { id: gw-1, data_dir: ${dir}/data, log_level: error, http: off }
devices: [{ id: meter-1, protocol: simulator, poll: 20ms, points: [{ name: n, signal: counter }] }]
streams:
  - { name: small, from: { device: meter-1 }, to: [lake] }
  - name: large
    from: { device: meter-1 }
    steps:
      - sampler: { interval: 200ms }
      - event: { code: BIG, severity: info, description: "${'x'.repeat(800)} {n}" }
    to: [lake]
upstream:
  - { name: lake, type: kafka, brokers: [${broker.address}], topic: ${topic}, batch: { max_records: 100, max_wait: 50ms } }
`,
    );
    const agent = await launchAgent(file, testLog);
    cleanup.push(() => agent.stop());
    const last = await drained(agent, 300);
    const dead = deadLetters(agent);
    const records = await kcatConsume(broker.address, topic);
    expect(records.length + dead.length).toBe(last);
    expect(dead.length).toBeGreaterThan(5);
    expect(dead.every((d) => JSON.parse(d.payload).stream === 'large' && /MESSAGE_TOO_LARGE/.test(d.reason))).toBe(true);
    expect(records.every((r) => JSON.parse(r.payload!).stream === 'small')).toBe(true);
    checkDelivery(records, 0);
  });

  it('sends again only what was not acknowledged when one partition of a send fails', async () => {
    const broker = await testBroker();
    const topic = `edge-${randomUUID().slice(0, 8)}`;
    const { agent } = await startAgent(`brokers: [${broker.address}], topic: ${topic}, batch: { max_records: 300, max_wait: 200ms }`);
    await until(() => broker.count(topic) >= 30, 10_000, 'first records');
    const partition = broker.records(topic)[0].partition;
    const errorsBefore = agent.forwarders[0].errors;
    // one partition refuses more often than the client retries on its own; the others take the
    // records at once (and the client's retries of them are deduplicated by sequence number)
    broker.failNext('Produce', ErrorCode.NOT_ENOUGH_REPLICAS, 6, topic, partition);
    await until(() => agent.forwarders[0].errors > errorsBefore, 10_000, 'a partly failed send');
    const last = await drained(agent, agent.outbox.lastSeq + 100);
    const records = await kcatConsume(broker.address, topic);
    // sending the acknowledged partitions again would store them twice (a new producer id)
    expect(checkDelivery(records, last).duplicates).toBe(0);
    expect(records.length).toBe(last);
  });
});

describe('Kafka upstream: TLS and SASL', () => {
  for (const mechanism of ['plain', 'scram-sha-256', 'scram-sha-512'] as const) {
    it(`authenticates with SASL ${mechanism} over TLS`, async () => {
      const pki = makePki(mkdtempSync(join(tmpdir(), 'kafka-pki-')));
      const broker = await testBroker({
        tls: { key: readFileSync(pki.serverKey), cert: readFileSync(pki.serverCert) },
        sasl: { mechanism: mechanism.toUpperCase() as 'PLAIN', users: { edge: 's3cret' } },
      });
      const topic = `edge-${randomUUID().slice(0, 8)}`;
      const { agent } = await startAgent(
        `brokers: [${broker.address}], topic: ${topic}, tls: { ca: ${pki.ca} }, sasl: { mechanism: ${mechanism}, username: edge, password: s3cret }`,
      );
      const last = await drained(agent, 60);
      // the agent's client follows RFC 5802 to the letter (Kafka 4 refuses anything else)
      if (mechanism !== 'plain') expect(broker.scramLogins).toEqual({ rfc: 1, legacyNonce: 0 });
      const records = await kcatConsume(broker.address, topic, [
        '-X', 'security.protocol=SASL_SSL', '-X', `ssl.ca.location=${pki.ca}`,
        '-X', `sasl.mechanisms=${mechanism.toUpperCase()}`, '-X', 'sasl.username=edge', '-X', 'sasl.password=s3cret',
      ]);
      expect(records.length).toBe(last);
    });
  }

  it('presents a client certificate to a broker that requires one (mutual TLS)', async () => {
    const pki = makePki(mkdtempSync(join(tmpdir(), 'kafka-pki-')));
    const broker = await testBroker({
      tls: { key: readFileSync(pki.serverKey), cert: readFileSync(pki.serverCert), ca: readFileSync(pki.ca), requestCert: true, rejectUnauthorized: true },
    });
    const topic = `edge-${randomUUID().slice(0, 8)}`;
    const { agent } = await startAgent(`brokers: [${broker.address}], topic: ${topic}, tls: { ca: ${pki.ca}, cert: ${pki.clientCert}, key: ${pki.clientKey} }`);
    const last = await drained(agent, 60);
    const records = await kcatConsume(broker.address, topic, [
      '-X', 'security.protocol=SSL', '-X', `ssl.ca.location=${pki.ca}`, '-X', `ssl.certificate.location=${pki.clientCert}`, '-X', `ssl.key.location=${pki.clientKey}`,
    ]);
    expect(records.length).toBe(last);
  });

  it('keeps the records when the password is wrong', async () => {
    const pki = makePki(mkdtempSync(join(tmpdir(), 'kafka-pki-')));
    const broker = await testBroker({
      tls: { key: readFileSync(pki.serverKey), cert: readFileSync(pki.serverCert) },
      sasl: { mechanism: 'SCRAM-SHA-256', users: { edge: 's3cret' } },
    });
    const topic = `edge-${randomUUID().slice(0, 8)}`;
    const lines: string[] = [];
    const log = pino({ level: 'warn' }, { write: (line: string) => lines.push(line) });
    const { agent } = await startAgent(`brokers: [${broker.address}], topic: ${topic}, tls: { ca: ${pki.ca} }, sasl: { mechanism: scram-sha-256, username: edge, password: wrong }`, ['readings'], '20ms', log);
    await until(() => agent.forwarders[0].errors >= 1, 15_000, 'a refused send');
    await agent.stopSources();
    expect(broker.records(topic)).toEqual([]);
    expect(agent.outbox.depth('lake')).toBe(agent.outbox.lastSeq);
    // the log names the upstream, the broker and why
    expect(lines.join('\n')).toMatch(new RegExp(`upstream lake: send failed \\(Kafka ${broker.address}: .*authentication failed for edge`));
  });
});

describe('Kafka upstream: memory', () => {
  /** Whether starting the agent on `upstream` loaded any module of the Kafka client. */
  function loadsKafkaClient(upstream: string): boolean {
    const dir = mkdtempSync(join(tmpdir(), 'kafka-lazy-'));
    writeFileSync(
      join(dir, 'agent.yaml'),
      `agent: { id: gw-1, data_dir: ${dir}/data, log_level: error, http: off }
devices: [{ id: sim, protocol: simulator, points: [{ name: p, signal: sine }] }]
streams: [{ name: s, from: { device: sim }, to: [out] }]
upstream: [{ name: out, ${upstream} }]
`,
    );
    const script = `
      import { registerHooks } from 'node:module';
      let loaded = false;
      registerHooks({ resolve(specifier, context, next) { const r = next(specifier, context); if (r.url.includes('@platformatic/kafka')) loaded = true; return r; } });
      const { startAgent } = await import(${JSON.stringify(join(ROOT, 'src/start.ts'))});
      const { default: pino } = await import('pino');
      const agent = await startAgent(${JSON.stringify(join(dir, 'agent.yaml'))}, pino({ level: 'silent' }));
      await agent.stop();
      console.log(JSON.stringify({ loaded }));`;
    const out = execFileSync(process.execPath, [...TS_NODE_ARGS, '--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8' });
    return JSON.parse(out.trim().split('\n').pop()!).loaded;
  }

  it('loads the Kafka client only when a config has a Kafka upstream', () => {
    expect(loadsKafkaClient(`type: file, path: ${tmpdir()}/lazy.jsonl`)).toBe(false);
    expect(loadsKafkaClient('type: kafka, brokers: ["127.0.0.1:1"], topic: t')).toBe(true);
  });
});
