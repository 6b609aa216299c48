import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import mqtt from 'mqtt';
import pino from 'pino';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent as launchAgent } from '../src/start.js';
import { ConfigError } from '../src/core/config-error.js';
import { RolledBack } from '../src/manage/managed-agent.js';
import { Mosquitto } from './support/mosquitto.js';
import { freePort, until } from './support/ports.js';

/*
 * Random configs (streams of random steps over random expressions, point names and templates,
 * sometimes written with anchors and aliases) applied to a running in-process agent, and random
 * payloads published to its MQTT device through a real Mosquitto. What must hold: every config
 * is applied or rejected (ConfigError, RolledBack), nothing throws anywhere else, and every
 * record the agent accepted is committed to the outbox.
 */

const ODD_NAMES = ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf'];
const NAMES = [...ODD_NAMES, 'a', 'b', 'temp', 'j_constructor', 'j_proto', 'j_a'];
const RUNS = Number(process.env.EDGE_FUZZ_RUNS ?? 150);

const name = fc.constantFrom(...NAMES, 'unknown', 'other.a', 'fuzz.temp');

const expression: fc.Arbitrary<string> = fc.letrec<{ expr: string; leaf: string; binary: string; unary: string; call: string; group: string }>((tie) => ({
  expr: fc.oneof({ depthSize: 'small' }, tie('leaf'), tie('binary'), tie('unary'), tie('call'), tie('group')),
  leaf: fc.oneof(
    name,
    fc.double().map(String),
    fc.integer().map(String),
    fc.constantFrom('1e308', '0', '0.0', '"on"', "'x'", 'true', 'false', 'ts', 'device', '1e400', '`a`', '`constructor`'),
  ),
  binary: fc
    .tuple(tie('expr'), fc.constantFrom('+', '-', '*', '/', '%', '<', '>', '<=', '>=', '==', '!=', 'and', 'or', '&&', '||'), tie('expr'))
    .map(([a, op, b]) => `${a} ${op} ${b}`),
  unary: fc.tuple(fc.constantFrom('-', 'not ', '!'), tie('expr')).map(([op, e]) => op + e),
  call: fc.tuple(fc.constantFrom('abs', 'min', 'max', 'round', 'nosuch'), fc.array(tie('expr'), { maxLength: 3 })).map(([f, args]) => `${f}(${args.join(', ')})`),
  group: tie('expr').map((e) => `(${e})`),
})).expr;

const anyExpression = fc.oneof(
  { weight: 8, arbitrary: expression },
  fc.string({ maxLength: 30 }),
  fc.constantFrom(
    Array(1001).fill('a').join('+'),
    Array(1000).fill('a').join('-'),
    '('.repeat(65) + 'a' + ')'.repeat(65),
    '-'.repeat(64) + 'a',
    'not '.repeat(200) + 'a',
  ),
);

const step = fc.oneof(
  fc.tuple(name, fc.oneof(fc.constant(0), fc.double({ min: 0, max: 10, noNaN: true }), fc.constant('5%'))).map(([point, deadband]) => ({ change: { point, deadband } })),
  anyExpression.map((e) => ({ filter: e })),
  fc
    .tuple(fc.array(fc.constantFrom(...NAMES, 'nothing'), { maxLength: 5 }), fc.dictionary(fc.constantFrom(...NAMES), anyExpression, { maxKeys: 3 }), fc.string({ maxLength: 12 }))
    .map(([names, fields, text]) => ({ event: { code: 'FUZZ', description: text + names.map((n) => `{${n}}`).join(' '), fields } })),
  fc.tuple(anyExpression, anyExpression).map(([emit, release]) => ({ hysteresis: { emit, release, on_release: true } })),
  fc
    .dictionary(fc.constantFrom(...NAMES), fc.subarray(['avg', 'min', 'max', 'sum', 'count', 'first', 'last', 'delta', 'integral'], { minLength: 1 }), { minKeys: 1, maxKeys: 3 })
    .map((functions) => ({ window: { size: '1s', functions } })),
  fc.tuple(name, fc.constantFrom('none', 'previous', 'linear')).map(([point, fill]) => ({ threshold: { point, min: -100, max: 100, fill } })),
  fc.array(name, { minLength: 1, maxLength: 2 }).map((key) => ({ sampler: { interval: '200ms', key } })),
);

const plain = fc.oneof(
  fc.double().map(String),
  fc.integer().map(String),
  fc.constantFrom('1e400', '-1e400', 'NaN', 'true', 'on', 'off', '', ' ', 'null', '{"a":1}', '[1]', '0x10'),
  fc.string({ maxLength: 20 }),
);
const jsonPayload = fc.oneof(
  fc.dictionary(fc.constantFrom(...ODD_NAMES, 'a', 'proto'), fc.oneof(fc.double(), fc.string({ maxLength: 8 }), fc.boolean(), fc.constant(null), fc.constant({})), { maxKeys: 4 }).map((o) => JSON.stringify(o)),
  fc.json(),
  fc.string({ maxLength: 20 }),
);
const message = fc.oneof(
  fc.tuple(fc.constantFrom(...NAMES.filter((n) => !n.startsWith('j_'))), plain).map(([point, payload]) => ({ topic: `fuzz/${point}`, payload })),
  jsonPayload.map((payload) => ({ topic: 'fuzz/json', payload })),
);

const scenario = fc.record({
  streams: fc.array(fc.array(step, { maxLength: 4 }), { minLength: 1, maxLength: 4 }),
  /** The first stream's steps again, as a YAML alias of the first. */
  alias: fc.boolean(),
  messages: fc.array(message, { maxLength: 25 }),
});

let broker: Mosquitto;
let publisher: mqtt.MqttClient;
beforeAll(async () => {
  broker = await Mosquitto.start();
  publisher = await mqtt.connectAsync(broker.url, { clientId: 'fuzz-publisher' });
});
afterAll(async () => {
  await publisher?.endAsync();
  await broker?.stop('SIGKILL');
});

describe('fuzz: random configs, point names, expressions and payloads through the running agent', () => {
  it('never crashes, and every record accepted is committed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fuzz-'));
    const deadPort = await freePort();
    const device = {
      id: 'fuzz',
      protocol: 'mqtt',
      broker: broker.url,
      points: [
        ...NAMES.filter((n) => !n.startsWith('j_')).map((n) => ({ name: n, topic: `fuzz/${n}` })),
        { name: 'j_constructor', topic: 'fuzz/json', json: 'constructor' },
        { name: 'j_proto', topic: 'fuzz/json', json: '__proto__' },
        { name: 'j_a', topic: 'fuzz/json', json: 'a' },
        { name: 'seq', topic: 'fuzz/seq' },
      ],
    };
    const base = {
      agent: { id: 'gw-fuzz', data_dir: join(dir, 'data'), log_level: 'warn', http: 'off' },
      devices: [device],
      // nothing listens there: every record stays in the outbox, to be counted
      upstream: [{ name: 'up', type: 'mqtt', url: `mqtt://127.0.0.1:${deadPort}`, topic: 'f/{stream}' }],
    };
    const file = join(dir, 'agent.yaml');
    const logLines: string[] = [];
    const log = pino({ level: 'warn' }, { write: (line: string) => void logLines.push(line) });
    const { writeFileSync } = await import('node:fs');
    writeFileSync(file, stringify({ ...base, streams: [{ name: 'seq', from: { device: 'fuzz', points: ['seq'] }, to: ['up'] }] }));
    const agent = await launchAgent(file, log);
    const outcomes = { applied: 0, rejected: 0, rolledBack: 0 };
    let run = 0;
    try {
      await until(() => agent.devices.get('fuzz')?.connector.online === true, 10_000, 'the MQTT device');
      await new Promise((r) => setTimeout(r, 200)); // subscriptions

      await fc.assert(
        fc.asyncProperty(scenario, async ({ streams, alias, messages }) => {
          run++;
          const definitions = streams.map((steps, i) => ({ name: `s${i}`, from: { device: 'fuzz' }, steps, to: ['up'] }));
          // the same steps object twice: yaml writes it as an anchor and an alias
          if (alias) definitions.push({ name: 'again', from: { device: 'fuzz' }, steps: definitions[0].steps, to: ['up'] });
          const text = stringify({ ...base, streams: definitions });
          try {
            await agent.apply(agent.parse(text), 'fuzz');
            outcomes.applied++;
          } catch (err) {
            if (err instanceof ConfigError) outcomes.rejected++;
            else if (err instanceof RolledBack) outcomes.rolledBack++;
            else throw err;
          }
          for (const { topic, payload } of messages) await publisher.publishAsync(topic, payload, { qos: 1 });
          // in order on one connection: when seq arrives, the messages before it were handled
          await publisher.publishAsync('fuzz/seq', String(run), { qos: 1 });
          await until(() => agent.latest.get('fuzz', 'seq') === run, 10_000, `message ${run}`);
        }),
        { numRuns: RUNS, endOnFailure: true },
      );
    } finally {
      await agent.stop();
    }
    const db = new Database(join(dir, 'data', 'edge-agent.db'), { readonly: true });
    const committed = db.prepare("SELECT count(*) FROM outbox WHERE upstream = 'up'").pluck().get() as number;
    db.close();
    expect(committed).toBe(agent.outbox.lastSeq);
    expect(committed).toBeGreaterThan(RUNS / 2);
    expect(outcomes.applied).toBeGreaterThan(0);
    expect(outcomes.rejected).toBeGreaterThan(0);
    expect(logLines.filter((l) => /outbox: cannot write|uncaught|unhandled/i.test(l))).toEqual([]);
  }, 120_000);
});
