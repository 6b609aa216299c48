import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentProcess } from './support/agent-process.js';
import { Mosquitto } from './support/mosquitto.js';
import { freePort, until } from './support/ports.js';

let broker: Mosquitto;
beforeAll(async () => {
  broker = await Mosquitto.start();
});
afterAll(async () => {
  await broker?.stop('SIGKILL');
});

describe('a burst through the agent as a process', () => {
  it('delivers every message of a burst on 1,000 topics (100 devices × 10 points, a stream per point) as one record each', async () => {
    const DEVICES = 100;
    const POINTS = 10;
    const ROUNDS = 20;
    const dir = mkdtempSync(join(tmpdir(), 'burst-'));
    const config = join(dir, 'agent.yaml');
    const points = Array.from({ length: POINTS }, (_, k) => `p${k}`);
    writeFileSync(
      config,
      `agent: { id: gw, data_dir: ${dir}/data, http: "127.0.0.1:${await freePort()}" }
devices:
  - id: "dev-{1}"
    protocol: mqtt
    broker: "${broker.url}"
    points: [${points.map((p) => `{ name: ${p}, topic: "burst/+/${p}", qos: 1 }`).join(', ')}]
streams:
${points.map((p) => `  - { name: ${p}, from: { device: "dev-{1}", points: [${p}] }, to: [out] }`).join('\n')}
upstream: [{ name: out, type: mqtt, url: "${broker.url}", topic: "out/{stream}/{device}", qos: 1 }]
`,
    );
    const received = new Map<string, number>();
    const subscriber = await mqtt.connectAsync(broker.url, { clientId: 'burst-counter' });
    subscriber.on('message', (topic, payload) => {
      const record = JSON.parse(payload.toString()) as { stream: string; device: string; values: Record<string, number> };
      expect(topic).toBe(`out/${record.stream}/${record.device}`);
      expect(Object.keys(record.values)).toEqual([record.stream]);
      const key = `${record.device}/${record.stream}/${record.values[record.stream]}`;
      received.set(key, (received.get(key) ?? 0) + 1);
    });
    await subscriber.subscribeAsync('out/#', { qos: 1 });
    const agent = AgentProcess.start(config);
    try {
      await agent.waitForLog(/agent gw running/, 20_000);
      await agent.waitForLog(/device dev-\{1\}: MQTT broker: connected/, 10_000);
      await new Promise((r) => setTimeout(r, 500)); // its subscriptions
      const publisher = await mqtt.connectAsync(broker.url, { clientId: 'burst-publisher' });
      const expected = new Set<string>();
      const sent: Promise<unknown>[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        for (let d = 0; d < DEVICES; d++) {
          for (const p of points) {
            const value = round * 1000 + d;
            expected.add(`dev-d${d}/${p}/${value}`);
            sent.push(publisher.publishAsync(`burst/d${d}/${p}`, String(value), { qos: 1 }));
          }
        }
      }
      await Promise.all(sent);
      await publisher.endAsync();
      await until(() => received.size === expected.size, 60_000, `all ${expected.size} records (${received.size} so far)`);
      expect([...expected].filter((key) => !received.has(key))).toEqual([]);
      expect(received.size).toBe(DEVICES * POINTS * ROUNDS);
      // at least once, and with nothing going wrong here, once
      expect([...received.values()].every((n) => n === 1)).toBe(true);
    } finally {
      agent.kill('SIGTERM');
      await agent.exit();
      await subscriber.endAsync();
    }
  });
});
