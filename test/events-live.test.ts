import mqtt from 'mqtt';
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
  broker = await Mosquitto.start();
});
afterAll(async () => {
  await broker?.stop('SIGKILL');
});

/**
 * The steps that judge time, live: a glob stream over a template MQTT device (one device per
 * plug), an absence per plug on the agent's clock, a debounce that raises with no new reading.
 */
describe('events across time, live', () => {
  it('raises SILENT for the plug that stopped reporting, on the clock, with last_seen; clears it when the plug is back', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'events-live-'));
    const file = join(dir, 'agent.yaml');
    writeFileSync(
      file,
      `agent: { id: gw, data_dir: ${dir}/data, log_level: warn }
devices:
  - { id: "plug-{1}", protocol: mqtt, broker: "${broker.url}", points: [{ name: power_w, topic: "shellies/+/power" }] }
streams:
  - { name: silent, from: { device: "plug-*" }, steps: [{ absence: { for: 1500ms, point: power_w } }, { event: { code: SILENT } }], to: [up] }
  - { name: hot, from: { device: "plug-*" }, steps: [{ debounce: { when: "power_w > 100", for: 1s } }, { event: { code: HIGH } }], to: [up] }
upstream:
  - { name: up, type: mqtt, url: "${broker.url}", topic: "up/{stream}/{device}" }
`,
    );
    const subscriber = await Subscriber.connect(broker.url, 'up/#');
    const agent = await startAgent(file, testLog);
    const plugs = await mqtt.connectAsync(broker.url, { clientId: 'plugs' });
    const events = () => subscriber.records.filter((r) => r.event).map((r) => [r.event!.code, r.event!.state, r.device]);
    try {
      await new Promise((r) => setTimeout(r, 300)); // subscriptions
      // plug a reports every 200 ms throughout; plug b three times, then stops; one reading of 150 W from a
      let sending = true;
      const feed = (async () => {
        for (let i = 0; sending; i++) {
          await plugs.publishAsync('shellies/a/power', i === 0 ? '150' : '20', { qos: 1 });
          if (i < 3) await plugs.publishAsync('shellies/b/power', '10', { qos: 1 });
          await new Promise((r) => setTimeout(r, 200));
        }
      })();
      await until(() => events().some(([code]) => code === 'SILENT'), 10_000, 'SILENT raised');
      const lastB = Date.now();
      expect(events()).toContainEqual(['SILENT', 'raised', 'plug-b']);
      expect(events().filter(([code, , device]) => code === 'SILENT' && device === 'plug-a')).toEqual([]);
      const silent = subscriber.records.find((r) => r.event?.code === 'SILENT')!;
      expect(typeof silent.values?.last_seen).toBe('number');
      expect(lastB - (silent.values!.last_seen as number)).toBeGreaterThan(1000);
      // a 150 W reading once, then 20 W: not high for 1 s, so no HIGH
      expect(events().filter(([code]) => code === 'HIGH')).toEqual([]);

      await plugs.publishAsync('shellies/b/power', '12', { qos: 1 });
      await until(() => events().some(([code, state]) => code === 'SILENT' && state === 'cleared'), 10_000, 'SILENT cleared');
      expect(events().filter(([code]) => code === 'SILENT')).toEqual([
        ['SILENT', 'raised', 'plug-b'],
        ['SILENT', 'cleared', 'plug-b'],
      ]);

      // plug c: 500 W once, then silent: the debounce raises on the clock 1 s later with no new reading
      await plugs.publishAsync('shellies/c/power', '500', { qos: 1 });
      await until(() => events().some(([code]) => code === 'HIGH'), 10_000, 'HIGH raised on the clock');
      expect(events().filter(([code]) => code === 'HIGH')).toEqual([['HIGH', 'raised', 'plug-c']]);
      sending = false;
      await feed;
    } finally {
      await plugs.endAsync();
      await agent.stop();
      await subscriber.close();
    }
  });
});
