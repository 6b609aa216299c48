import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import mqtt from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startAgent as launchAgent } from '../src/start.js';
import { AgentProcess } from './support/agent-process.js';
import { testLog } from './support/log.js';
import { Mosquitto } from './support/mosquitto.js';
import { freePort, until } from './support/ports.js';

/*
 * No crash path from config or data: whatever a config file holds is a rejected config (exit 78
 * at start; the running config stays on a reload), and point names such as `constructor` or
 * `__proto__` are names like any other, all the way to the committed records.
 */

const ODD_NAMES = ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf'];

/** A config made with anchors: `devices` simulators sharing one points list and a template. */
function anchoredConfig(dir: string, devices: number, extraStream = ''): string {
  const more = Array.from({ length: devices - 1 }, (_, i) => `  - { id: sim${i + 1}, <<: *sim, points: *pts }`).join('\n');
  return `x-sim: &sim
  protocol: simulator
  poll: &poll 200ms
agent: { id: gw-crash, data_dir: ${dir}/data, log_level: info, http: "off" }
devices:
  - id: sim0
    <<: *sim
    points: &pts
      - { name: p, signal: sine, min: 0, max: 10, period: &period 10m }
      - { name: q, signal: sine, min: 0, max: 10, period: *period }
${more}
streams:
  - name: s
    from: { device: sim0 }
    to: [out]
${extraStream}
upstream:
  - { name: out, type: file, path: ${dir}/out.jsonl }
`;
}

/** Configs that must be refused, each a different kind of failure inside the loader. */
function badConfigs(dir: string): Record<string, string> {
  const laughs = ['a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]'];
  for (let i = 1; i < 10; i++) laughs.push(`${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(10).fill(`*${String.fromCharCode(96 + i)}`).join(', ')}]`);
  const good = anchoredConfig(dir, 3);
  return {
    'billion laughs': `x-laughs:\n${laughs.map((l) => `  ${l}`).join('\n')}\n${good}`,
    'a scalar merged as a map': good.replace('    <<: *sim\n', '    <<: *poll\n'),
    'an unknown alias': good.replace('points: *pts }', 'points: *nothing }'),
    'bad YAML': good.replace('devices:', 'devices: [oops'),
    'a 20,000-term expression': anchoredConfig(dir, 3, `  - name: huge\n    from: { device: sim0 }\n    steps: [ { filter: "${Array(20_000).fill('p').join(' + ')} > 0" } ]\n    to: [out]`),
    'a 100,000-deep expression': anchoredConfig(dir, 3, `  - name: deep\n    from: { device: sim0 }\n    steps: [ { filter: "${'('.repeat(100_000)}p${')'.repeat(100_000)} > 0" } ]\n    to: [out]`),
    // each of these made yaml use hundreds of MB of heap while parsing, and V8 abort the agent
    // under the launcher's 128 MB (the local API takes configs of up to 256 kB)
    'flow collections nested 200,000 deep': `${good}x-deep: ${'[a, '.repeat(200_000)}\n`,
    '300,000 closing brackets': `${good}x-closing: ${']'.repeat(300_000)}\n`,
    'a flood of YAML errors': `${good}${Array.from({ length: 100_000 }, (_, i) => `x${i}: "never closed`).join('\n')}\n`,
    'too large for the heap': `${good}x-big:\n${Array.from({ length: 120_000 }, (_, i) => `  - { name: p${i}, area: holding, address: ${i} }`).join('\n')}\n`,
  };
}

describe('a bad config at start', () => {
  it('exits 78 (EX_CONFIG, no restart by systemd) whatever its kind', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'crash-start-'));
    const cases: Record<string, string> = { 'a file that does not exist': join(dir, 'missing.yaml'), 'a directory': dir };
    for (const [name, text] of Object.entries(badConfigs(dir))) {
      const file = join(dir, `${name.replace(/\W+/g, '-')}.yaml`);
      writeFileSync(file, text);
      cases[name] = file;
    }
    const results: Record<string, number | null> = {};
    const { env, nodeArgs } = AgentProcess.launcherFlags();
    for (const [name, file] of Object.entries(cases)) {
      const agent = AgentProcess.start(file, env, nodeArgs);
      await agent.exit();
      results[name] = agent.exitCode;
      expect(agent.log.join('\n'), name).not.toMatch(/RangeError|ReferenceError|at .*\.js:\d+/);
    }
    expect(results).toEqual(Object.fromEntries(Object.keys(cases).map((name) => [name, 78])));
  }, 120_000);
});

describe('a bad config written while the agent runs', () => {
  it('is rejected and logged, the running config goes on; a good anchored config of 150 devices is applied', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'crash-reload-'));
    const file = join(dir, 'agent.yaml');
    writeFileSync(file, anchoredConfig(dir, 3));
    const { env, nodeArgs } = AgentProcess.launcherFlags();
    const agent = AgentProcess.start(file, env, nodeArgs);
    await agent.waitForLog(/agent gw-crash running/, 30_000);
    const rejections = () => agent.log.filter((l) => /the running config stays/.test(l)).length;
    for (const [name, text] of Object.entries(badConfigs(dir))) {
      const before = rejections();
      writeFileSync(file, text);
      await until(() => rejections() > before || agent.exitCode !== null, 30_000, `the rejection of ${name}`);
      expect(agent.exitCode, name).toBeNull();
    }
    writeFileSync(file, anchoredConfig(dir, 150));
    await agent.waitForLog(/config from file .* applied/, 30_000);
    // still reading and delivering
    const lines = () => readFileSync(join(dir, 'out.jsonl'), 'utf8').split('\n').length;
    const delivered = lines();
    await until(() => lines() > delivered + 2, 30_000, 'records after the reloads');
    agent.kill('SIGTERM');
    await agent.exit();
    expect(agent.exitCode).toBe(0);
    expect(agent.log.join('\n')).not.toMatch(/RangeError|ReferenceError|Unhandled|uncaught/i);
  }, 180_000);
});

describe('a stream sent to the API that would exhaust the heap while parsed', () => {
  it('is answered 400 with where it fails; the agent goes on and takes the next good one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'crash-api-'));
    const port = await freePort();
    const token = 'a-token-of-24-characters';
    const file = join(dir, 'agent.yaml');
    writeFileSync(file, anchoredConfig(dir, 1).replace('http: "off"', `http: "127.0.0.1:${port}", http_token: ${token}`));
    const { env, nodeArgs } = AgentProcess.launcherFlags();
    const agent = AgentProcess.start(file, env, nodeArgs);
    await agent.waitForLog(/agent gw-crash running/, 30_000);
    const post = async (body: string) => {
      const res = await fetch(`http://127.0.0.1:${port}/api/streams`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/yaml' }, body });
      return { status: res.status, error: ((await res.json()) as { error: string }).error };
    };
    // each under the API's 256 kB; each stopped the agent (V8 out of memory, SIGABRT)
    const bodies: Record<string, [string, RegExp]> = {
      'stray brackets': [']'.repeat(250_000), /^line 1, column 1: invalid JSON or YAML: this \] closes no \[ or \{/],
      'deep nesting': ['[a, '.repeat(60_000), /^line 1, column 257: invalid JSON or YAML: \[ and \{ nested more than 64 deep/],
      'errors on every line': [Array.from({ length: 12_000 }, (_, i) => `x${i}: "never closed`).join('\n'), /stopped after 100 errors/],
    };
    for (const [name, [body, error]] of Object.entries(bodies)) {
      expect(body.length, name).toBeLessThan(256 * 1024);
      const answer = await post(body);
      expect(answer.status, name).toBe(400);
      expect(answer.error, name).toMatch(error);
      expect(agent.exitCode, name).toBeNull();
    }
    expect((await post('{ name: next, from: { device: sim0 }, to: [out] }')).status).toBe(201);
    agent.kill('SIGTERM');
    await agent.exit();
    expect(agent.exitCode).toBe(0);
  }, 120_000);
});

describe('point names that are Object property names', () => {
  let broker: Mosquitto;
  let publisher: mqtt.MqttClient;
  beforeAll(async () => {
    broker = await Mosquitto.start();
    publisher = await mqtt.connectAsync(broker.url, { clientId: 'crash-publisher' });
  });
  afterAll(async () => {
    await publisher?.endAsync();
    await broker?.stop('SIGKILL');
  });
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!();
  });

  it('are read, changed, windowed, templated and committed like any other; stopping loses nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'crash-names-'));
    mkdirSync(join(dir, 'data'));
    const deadPort = await freePort();
    const file = namesConfig(dir, broker.url, deadPort);
    const agent = await launchAgent(file, testLog);
    let stopped = false;
    cleanups.push(async () => {
      if (!stopped) await agent.stop();
    });
    await until(() => agent.devices.get('plant')?.connector.online === true, 10_000, 'the MQTT device');
    await new Promise((r) => setTimeout(r, 200)); // subscriptions
    // a reading without the odd points first: `constructor` must not be found on Object
    await publishNames(publisher);
    await until(() => agent.latest.get('plant', 'other') === 2, 10_000, 'the last message');
    await new Promise((r) => setTimeout(r, 4000)); // the window closes (a second after its end, on a tick)
    const accepted = () => agent.outbox.lastSeq;
    await agent.stop();
    stopped = true;

    const rows = outboxRows(dir);
    // every seq handed out is in the outbox or was delivered to the marker file
    const seqs = new Set([...allOutboxSeqs(dir), ...readFileSync(join(dir, 'marker.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).seq as number)]);
    expect(seqs.size).toBe(accepted());
    expect(Math.max(...seqs)).toBe(accepted());
    const records = rows.map((r) => JSON.parse(r));
    for (const name of ODD_NAMES) {
      const changes = records.filter((r) => r.stream === `change-${name}`).map((r) => r.values[name]);
      expect(changes, name).toEqual([1, 2, 3].map((v) => v * 10 + ODD_NAMES.indexOf(name)));
    }
    const events = records.filter((r) => r.stream === 'events').map((r) => r.event);
    expect(events.map((e) => e.description)).toEqual([
      'constructor=? __proto__=? toString=? hasOwnProperty=? valueOf=?',
      'constructor=30 __proto__=31 toString=32 hasOwnProperty=33 valueOf=34',
    ]);
    expect(Object.hasOwn(events[1], '__proto__')).toBe(true);
    expect(events.map((e) => [e.constructor, e.__proto__])).toEqual([
      [null, null],
      [60, 32],
    ]);
    // the readings may fall into two windows
    const windows = records.filter((r) => r.stream === 'windowed').map((r) => r.values);
    expect(windows.length).toBeGreaterThan(0);
    expect(Math.max(...windows.map((w) => w.__proto___max ?? -1))).toBe(31);
    expect(Math.min(...windows.map((w) => w.constructor_min ?? 99))).toBe(10);
    expect(rows.join('\n')).not.toMatch(/function|native code/);
  }, 60_000);

  it('SIGTERM right after the last message commits every change record (the agent as a process)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'crash-sigterm-'));
    const file = namesConfig(dir, broker.url, await freePort());
    const agent = AgentProcess.start(file);
    await agent.waitForLog(/agent gw-names running/, 30_000);
    await new Promise((r) => setTimeout(r, 500)); // the device's subscriptions
    await publishNames(publisher);
    const marker = () => (existsSync(join(dir, 'marker.jsonl')) ? readFileSync(join(dir, 'marker.jsonl'), 'utf8') : '');
    await until(() => /"other":2/.test(marker()), 30_000, 'the last message through the agent');
    agent.kill('SIGTERM');
    await agent.exit();
    expect(agent.exitCode).toBe(0);
    const records = outboxRows(dir).map((r) => JSON.parse(r));
    for (const name of ODD_NAMES) {
      expect(records.filter((r) => r.stream === `change-${name}`).map((r) => r.values[name]), name).toEqual([1, 2, 3].map((v) => v * 10 + ODD_NAMES.indexOf(name)));
    }
    expect(records.filter((r) => r.stream === 'events')).toHaveLength(2);
    expect(agent.log.join('\n')).not.toMatch(/cannot write|NOT NULL/);
  }, 60_000);
});

/** MQTT points named like Object's properties, streams over them to an upstream that never answers (and a marker to a file). */
function namesConfig(dir: string, brokerUrl: string, deadPort: number): string {
  const file = join(dir, 'agent.yaml');
  const points = [...ODD_NAMES, 'other'].map((name) => `      - { name: ${name}, topic: "names/${name}" }`).join('\n');
  writeFileSync(
    file,
    `agent: { id: gw-names, data_dir: ${dir}/data, log_level: info, http: "off" }
devices:
  - id: plant
    protocol: mqtt
    broker: ${brokerUrl}
    points:
${points}
streams:
${ODD_NAMES.map((name) => `  - { name: change-${name}, from: { device: plant }, steps: [ { change: { point: ${name} } } ], to: [up] }`).join('\n')}
  - name: events
    from: { device: plant, points: [other] }
    steps:
      - filter: "other > 0"
      - event: { code: E, description: "${ODD_NAMES.map((n) => `${n}={${n}}`).join(' ')}", fields: { constructor: "constructor * 2", __proto__: "__proto__ + 1" } }
    to: [up]
  - name: windowed
    from: { device: plant, points: [__proto__, constructor, toString] }
    steps:
      - window: { size: 1s, functions: { __proto__: [max], constructor: [min] } }
    to: [up]
  - name: marker
    from: { device: plant, points: [other] }
    to: [marker]
upstream:
  # nothing listens there: every record stays in the outbox, to be counted
  - { name: up, type: mqtt, url: "mqtt://127.0.0.1:${deadPort}", topic: "x/{stream}" }
  - { name: marker, type: file, path: ${dir}/marker.jsonl }
`,
  );
  return file;
}

/** Publishes `other` = 1, three rounds of every odd name, then `other` = 2. */
async function publishNames(publisher: mqtt.MqttClient): Promise<void> {
  await publisher.publishAsync('names/other', '1', { qos: 1 });
  for (let v = 1; v <= 3; v++) {
    for (const name of ODD_NAMES) await publisher.publishAsync(`names/${name}`, String(v * 10 + ODD_NAMES.indexOf(name)), { qos: 1 });
  }
  await publisher.publishAsync('names/other', '2', { qos: 1 });
}

function allOutboxSeqs(dir: string): number[] {
  const db = new Database(join(dir, 'data', 'edge-agent.db'), { readonly: true });
  const rows = db.prepare('SELECT payload FROM outbox').pluck().all() as string[];
  db.close();
  return rows.map((r) => JSON.parse(r).seq as number);
}

function outboxRows(dir: string): string[] {
  const db = new Database(join(dir, 'data', 'edge-agent.db'), { readonly: true });
  const rows = db.prepare("SELECT payload FROM outbox WHERE upstream = 'up' ORDER BY id").pluck().all() as string[];
  db.close();
  return rows;
}
