import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../src/core/config-error.js';
import { parseConfig } from '../src/config/load.js';
import { validateConfig } from '../src/streams/build.js';
import { AgentProcess } from './support/agent-process.js';
import { Mosquitto } from './support/mosquitto.js';
import { until } from './support/ports.js';

let broker: Mosquitto;
let deviceBroker: Mosquitto;
beforeAll(async () => {
  [broker, deviceBroker] = await Promise.all([Mosquitto.start(), Mosquitto.start()]);
});
afterAll(async () => {
  await Promise.all([broker?.stop('SIGKILL'), deviceBroker?.stop('SIGKILL')]);
});

/** What a subscriber that connects now gets: the retained message of each topic under `filter`. */
async function retained(filter: string): Promise<Map<string, string>> {
  const client = await mqtt.connectAsync(broker.url, { clientId: `retained-${Math.random().toString(16).slice(2)}` });
  const got = new Map<string, string>();
  client.on('message', (topic, payload, packet) => {
    if (packet.retain) got.set(topic, payload.toString());
  });
  await client.subscribeAsync(filter, { qos: 1 });
  await new Promise((r) => setTimeout(r, 300));
  await client.endAsync(true);
  return got;
}

function config(dir: string, upstream: string): string {
  const file = join(dir, 'agent.yaml');
  writeFileSync(
    file,
    `agent: { id: gw-9, data_dir: ${dir}/data }
devices: [{ id: sim, protocol: simulator, poll: 100ms, points: [{ name: p, signal: counter, rate: 3600 }] }]
streams: [{ name: s, from: { device: sim }, to: [out] }]
upstream:
  - { name: out, type: mqtt, url: "${broker.url}", ${upstream} }
`,
  );
  return file;
}

describe('MQTT upstream conventions', () => {
  it('publishes retained records with retain: true, and says online / offline on its availability topic (a stop and a kill)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mqtt-conventions-'));
    const file = config(dir, 'topic: "conv/{agent}/{device}", retain: true, availability: true');
    const agent = AgentProcess.start(file);
    await until(async () => (await retained('gw-9/status')).get('gw-9/status') === 'online', 10_000, 'online');
    const record = (await retained('conv/#')).get('conv/gw-9/sim');
    expect(JSON.parse(record!)).toMatchObject({ agent: 'gw-9', device: 'sim' });
    agent.kill('SIGTERM');
    await agent.exit();
    expect((await retained('gw-9/status')).get('gw-9/status'), 'a stop says offline').toBe('offline');

    const again = AgentProcess.start(file);
    await until(async () => (await retained('gw-9/status')).get('gw-9/status') === 'online', 10_000, 'online again');
    again.kill('SIGKILL');
    await again.exit();
    await until(async () => (await retained('gw-9/status')).get('gw-9/status') === 'offline', 10_000, 'offline by the will');
  });

  it('publishes one message per value, the value alone, with {point} in the topic', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mqtt-conventions-'));
    const client = await mqtt.connectAsync(broker.url);
    const got: [string, string][] = [];
    client.on('message', (topic, payload) => got.push([topic, payload.toString()]));
    await client.subscribeAsync('ha/#', { qos: 1 });
    const agent = AgentProcess.start(config(dir, 'topic: "ha/{agent}/{device}/{point}", client_id: ha'));
    await until(() => got.length >= 5, 10_000, 'five values');
    agent.kill('SIGTERM');
    await agent.exit();
    await client.endAsync(true);
    expect(new Set(got.map(([topic]) => topic))).toEqual(new Set(['ha/gw-9/sim/p']));
    const values = got.map(([, payload]) => JSON.parse(payload) as number);
    for (const value of values) expect(value).toBeTypeOf('number');
    expect(values.every((v, i) => i === 0 || v >= values[i - 1]), 'the counter, in order').toBe(true);
  });

  it('publishes each device\'s state retained: online/offline at once, with the last good values; new values at most once per interval', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mqtt-conventions-'));
    const file = join(dir, 'agent.yaml');
    writeFileSync(
      file,
      `agent: { id: gw-9, data_dir: ${dir}/data }
devices:
  - id: plug
    protocol: mqtt
    broker: ${deviceBroker.url}
    points: [{ name: watts, topic: plug/watts }]
streams: [{ name: s, from: { device: plug }, to: [out] }]
upstream:
  - { name: out, type: mqtt, url: "${broker.url}", topic: "st/{device}", client_id: st, device_state: true, device_state_interval: 2s }
`,
    );
    const client = await mqtt.connectAsync(broker.url);
    const states: { online: boolean; at: number; points: Record<string, { value: unknown; quality: string; last_good: { value: unknown } | null }> }[] = [];
    client.on('message', (_topic, payload) => states.push(JSON.parse(payload.toString())));
    await client.subscribeAsync('gw-9/plug/state', { qos: 1 });
    const agent = AgentProcess.start(file);
    const plug = await mqtt.connectAsync(deviceBroker.url);
    await plug.publishAsync('plug/watts', '12.5', { retain: true }); // retained: the agent may subscribe after
    await until(() => states.some((s) => s.online && s.points.watts?.value === 12.5), 10_000, 'the state with 12.5 W');
    // ten new values in a second: at most one more state within the interval
    const before = states.length;
    for (let i = 0; i < 10; i++) await plug.publishAsync('plug/watts', String(13 + i));
    await new Promise((r) => setTimeout(r, 1000));
    expect(states.length - before).toBeLessThanOrEqual(1);
    await until(() => states.at(-1)!.points.watts.value === 22, 10_000, 'the latest value after the interval');
    await plug.endAsync(true);
    // the device's broker goes away: offline at once, the last good value kept
    const stoppedAt = Date.now();
    await deviceBroker.stop();
    await until(() => states.at(-1)!.online === false, 10_000, 'the offline state');
    expect(Date.now() - stoppedAt).toBeLessThan(5000);
    expect(states.at(-1)!.points.watts.last_good?.value).toBe(22);
    agent.kill('SIGTERM');
    await agent.exit();
    await client.endAsync(true);
    await deviceBroker.resume();
    expect((await retained('gw-9/plug/state')).has('gw-9/plug/state')).toBe(true);
  });

  it('does not retain by default, and has no availability topic unless asked', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mqtt-conventions-'));
    const agent = AgentProcess.start(config(dir, 'topic: "plain/{agent}/{device}", client_id: plain'));
    const client = await mqtt.connectAsync(broker.url);
    let live = 0;
    client.on('message', () => live++);
    await client.subscribeAsync('plain/#', { qos: 1 });
    await until(() => live > 0, 10_000, 'a record');
    await client.endAsync(true);
    // while it runs, the status the first test left is untouched (no `online`)
    expect((await retained('gw-9/status')).get('gw-9/status')).toBe('offline');
    agent.kill('SIGTERM');
    await agent.exit();
    expect([...(await retained('plain/#')).keys()]).toEqual([]);
  });

  it('refuses an unknown placeholder in any topic or key template', () => {
    const issues = (upstream: string): string[] => {
      const text = `agent: { id: gw }
devices: [{ id: sim, protocol: simulator, points: [{ name: p }] }]
streams: [{ name: s, from: { device: sim }, to: [out] }]
upstream:
  - ${upstream}
`;
      try {
        validateConfig(parseConfig(text, 'test.yaml', {}));
      } catch (err) {
        if (err instanceof ConfigError) return err.issues.map((i) => `${i.path}: ${i.message}`);
        throw err;
      }
      return [];
    };
    expect(issues('{ name: out, type: mqtt, url: "mqtt://b", topic: "plant/{agent}/{device}/{value}" }')).toEqual([
      'upstream[0].topic: unknown placeholder {value} in "plant/{agent}/{device}/{value}" (known: {agent} {stream} {device} {point})',
    ]);
    expect(issues('{ name: out, type: mqtt, url: "mqtt://b", topic: "plant/{agent}/{device}/{point}" }')).toEqual([]);
    // {point} is the MQTT upstream's alone
    expect(issues('{ name: out, type: kafka, brokers: ["k:9092"], topic: "t-{point}" }')).toEqual([
      'upstream[0].topic: unknown placeholder {point} in "t-{point}" (known: {agent} {stream} {device})',
    ]);
    expect(issues('{ name: out, type: mqtt, url: "mqtt://b", topic: "{agent}/x", availability: "{stream}/status" }')).toEqual([
      'upstream[0].availability: unknown placeholder {stream} in "{stream}/status" (known: {agent})',
    ]);
    expect(issues('{ name: out, type: kafka, brokers: ["k:9092"], topic: "t-{devcie}", key: "{Device}" }')).toEqual([
      'upstream[0].topic: unknown placeholder {devcie} in "t-{devcie}" (known: {agent} {stream} {device})',
      'upstream[0].key: unknown placeholder {Device} in "{Device}" (known: {agent} {stream} {device})',
    ]);
    expect(issues('{ name: out, type: mqtt, url: "mqtt://b", topic: "plant/{agent}/{stream}/{device}" }')).toEqual([]);
  });
});
