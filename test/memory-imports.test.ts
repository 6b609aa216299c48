import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TEST_BUILD } from './support/build.js';

/**
 * What the agent loads costs resident memory for as long as it runs (scripts/bench/memory): these
 * guard the cuts that are easy to undo by an import. Each runs in a node of its own, on the build.
 */
function inFreshNode(code: string): string {
  return execFileSync(process.execPath, ['--input-type=module', '-e', code], { cwd: TEST_BUILD, encoding: 'utf8' }).trim();
}
const built = (file: string) => JSON.stringify(resolve(TEST_BUILD, file));

describe('memory: what the agent does not load', () => {
  it('the management API does not load undici, http2 or web streams (an ES module import of node:http would)', () => {
    const loaded = inFreshNode(`
      const { startHttp } = await import(${built('manage/http.js')});
      const log = { info() {}, warn() {}, error() {} };
      const agent = { streamStatus: () => [] };
      const http = await startHttp(agent, '127.0.0.1:0', undefined, log);
      await http.close();
      console.log(process.moduleLoadList.filter((m) => /undici|http2|webstreams/.test(m)).join(','));
    `);
    expect(loaded).toBe('');
  });

  it('cron-parser is loaded by the first cron, not by the timer module', () => {
    const out = inFreshNode(`
      import { createRequire } from 'node:module';
      const { TimerSchedule } = await import(${built('connectors/timer/timer.js')});
      const cronLoaded = () => Object.keys(createRequire(import.meta.url).cache).some((f) => f.includes('/cron-parser/'));
      const before = cronLoaded();
      new TimerSchedule({ every: 60000 }).next(0);
      const afterEvery = cronLoaded();
      const next = new TimerSchedule({ cron: '*/15 * * * *' }).next(Date.UTC(2026, 0, 1, 10, 7));
      console.log(JSON.stringify({ before, afterEvery, afterCron: cronLoaded(), next: new Date(next).toISOString() }));
    `);
    expect(JSON.parse(out)).toEqual({ before: false, afterEvery: false, afterCron: true, next: '2026-01-01T10:15:00.000Z' });
  });

  it('MQTT clients write numbers without mqtt-packet\'s cache of 65,536 Buffers', () => {
    const out = inFreshNode(`
      import { createRequire } from 'node:module';
      const { connectMqtt } = await import(${built('mqtt/client.js')});
      const log = { info() {}, warn() {}, error() {}, debug() {} };
      const client = connectMqtt({ who: 'test', log, url: 'mqtt://127.0.0.1:1', clientId: 'c' });
      client.end(true);
      const packet = createRequire(createRequire(import.meta.url).resolve('mqtt'))('mqtt-packet');
      console.log(JSON.stringify({ cacheNumbers: packet.writeToStream.cacheNumbers }));
    `);
    expect(JSON.parse(out)).toEqual({ cacheNumbers: false });
  });

  it('an mqtt:// client loads neither the WebSocket, SOCKS nor TLS transport; an mqtts:// one loads TLS', () => {
    const out = inFreshNode(`
      import { createRequire } from 'node:module';
      const { connectMqtt } = await import(${built('mqtt/client.js')});
      const log = { info() {}, warn() {}, error() {}, debug() {} };
      const loaded = () => ['ws', 'socks', 'tls'].filter((t) => Object.keys(createRequire(import.meta.url).cache).some((f) => f.endsWith('/mqtt/build/lib/connect/' + t + '.js')));
      connectMqtt({ who: 'test', log, url: 'mqtt://127.0.0.1:1', clientId: 'c' }).end(true);
      const plain = loaded();
      connectMqtt({ who: 'test', log, url: 'mqtts://127.0.0.1:1', clientId: 'c' }).end(true);
      console.log(JSON.stringify({ plain, secure: loaded().includes('tls') }));
    `);
    expect(JSON.parse(out)).toEqual({ plain: [], secure: true });
  });
});
