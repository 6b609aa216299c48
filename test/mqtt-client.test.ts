import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Backoff } from '../src/core/backoff.js';
import { closeMqtt, connectMqtt, keepaliveTimer } from '../src/mqtt/client.js';
import { AgentProcess } from './support/agent-process.js';
import { TEST_BUILD } from './support/build.js';
import { Mosquitto } from './support/mosquitto.js';
import { until } from './support/ports.js';
import { SilentServer } from './support/silent-server.js';

const cleanup: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

function captureLog(): { log: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: pino({ level: 'info' }, { write: (l: string) => void lines.push(l) }), lines };
}

describe('the shared MQTT client (src/mqtt/client.ts)', () => {
  it('waits longer after each failed attempt (capped exponential backoff), and logs the outage once', async () => {
    const server = await SilentServer.start({ closeAtOnce: true });
    cleanup.push(() => server.stop());
    const { log, lines } = captureLog();
    // the jitter drawn at its top, so the waits are the backoff's ceilings: 200, 400, 800, 1600, 1600 ms
    const client = connectMqtt({ who: 'test', log, url: `mqtt://127.0.0.1:${server.port}`, clientId: 'backoff-test', backoff: new Backoff(200, 1600, () => 1) });
    cleanup.push(() => closeMqtt(client));
    await until(() => server.connectedAt.length >= 6, 20_000, 'six connection attempts');
    const gaps = server.connectedAt.slice(1, 6).map((t, i) => t - server.connectedAt[i]);
    console.log(`gaps between connection attempts: ${gaps.join(', ')} ms`);
    // lower bounds only (a slow machine lengthens them); a fixed reconnectPeriod gives equal gaps
    [200, 400, 800, 1600, 1600].forEach((wait, i) => expect(gaps[i], `gap ${i + 1}`).toBeGreaterThanOrEqual(wait - 20));
    expect(lines.filter((l) => /test: cannot reach|unreachable/.test(l)).length).toBe(1);
  });

  it('logs an attempt that gets no CONNACK when its timeout ends, and connects once the broker answers', async () => {
    const server = await SilentServer.start();
    cleanup.push(() => server.stop());
    const broker = await Mosquitto.start();
    cleanup.push(() => broker.stop('SIGKILL'));
    const { log, lines } = captureLog();
    const client = connectMqtt({ who: 'test', log, url: `mqtt://127.0.0.1:${server.port}`, clientId: 'connack-test', connectTimeout: 1000, backoff: new Backoff(100, 200) });
    cleanup.push(() => closeMqtt(client));
    await until(() => lines.some((l) => /test: cannot reach mqtt:\/\/127.0.0.1:\d+: no answer to CONNECT within 1 s/.test(l)), 10_000, 'the connack timeout logged');
    await until(() => server.connectedAt.length >= 3, 10_000, 'three attempts');
    expect(lines.filter((l) => /cannot reach/.test(l)).length).toBe(1);
    // the broker answers at last (same client, other server): the end of the outage is logged
    client.options.port = broker.port;
    await until(() => client.connected, 15_000, 'connected');
    await until(() => lines.some((l) => /test: connected to .* after \d+ attempts/.test(l)), 5000, 'the reconnect logged');
  });

  it('closes at once, leaving no connection nor timer behind, while the broker has not answered CONNECT', async () => {
    const server = await SilentServer.start();
    cleanup.push(() => server.stop());
    const { log, lines } = captureLog();
    const client = connectMqtt({ who: 'test', log, url: `mqtt://127.0.0.1:${server.port}`, clientId: 'close-test', connectTimeout: 1000 });
    await until(() => server.bytes > 0, 5000, 'the CONNECT at the server');
    await closeMqtt(client, 500);
    // before: a clean end half-closed the socket and MQTT.js's connack timer still ran, holding
    // the process until connectTimeout and logging a failure after the close
    await until(() => server.open === 0, 3000, 'the connection closed');
    await new Promise((r) => setTimeout(r, 1500));
    expect(lines.filter((l) => /cannot reach|unreachable/.test(l))).toEqual([]);
    expect(server.connectedAt.length).toBe(1);
  });
});

describe('the shared MQTT client on a plain mqtt:// URL (a TCP socket of its own, not MQTT.js connect())', () => {
  it('takes the user name and password written in the URL, percent-encoded, before the options', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mqtt-auth-'));
    execFileSync('mosquitto_passwd', ['-b', '-c', join(dir, 'passwd'), 'edge', 's3cret@:/']);
    chmodSync(join(dir, 'passwd'), 0o644);
    const broker = await Mosquitto.start({ dir, settings: ['allow_anonymous false', `password_file ${join(dir, 'passwd')}`] });
    cleanup.push(() => broker.stop('SIGKILL'));
    const { log, lines } = captureLog();
    const url = `mqtt://edge:${encodeURIComponent('s3cret@:/')}@127.0.0.1:${broker.port}`;
    const good = connectMqtt({ who: 'good', log, url, clientId: 'auth-good', username: 'other', password: 'wrong' });
    cleanup.push(() => closeMqtt(good));
    await until(() => good.connected, 10_000, 'connected with the credentials of the URL');
    const bad = connectMqtt({ who: 'bad', log, url: `mqtt://edge:wrong@127.0.0.1:${broker.port}`, clientId: 'auth-bad' });
    cleanup.push(() => closeMqtt(bad));
    await until(() => lines.some((l) => /bad: cannot reach .*Not authorized/i.test(l)), 10_000, 'the refusal logged');
    expect(bad.connected).toBe(false);
  });
});

describe('the agent with an MQTT broker that accepts TCP and never answers CONNACK', () => {
  it('logs the unanswered connection of the upstream and of the MQTT source within the timeout, and exits within 5 s of SIGTERM', async () => {
    const server = await SilentServer.start();
    cleanup.push(() => server.stop());
    const dir = mkdtempSync(join(tmpdir(), 'mqtt-stop-'));
    const config = join(dir, 'agent.yaml');
    writeFileSync(
      config,
      `agent: { id: gw-1, data_dir: ${dir}/data, log_level: info, http: off }
devices:
  - { id: sim, protocol: simulator, poll: 50ms, points: [{ name: p, signal: sine }] }
  - { id: sensors, protocol: mqtt, broker: "mqtt://127.0.0.1:${server.port}", points: [{ name: t, topic: sensors/t }] }
streams:
  - { name: readings, from: { device: sim }, to: [cloud] }
upstream:
  - { name: cloud, type: mqtt, url: "mqtt://127.0.0.1:${server.port}", topic: "edge/{stream}" }
`,
    );
    const agent = AgentProcess.start(config);
    cleanup.push(() => agent.kill('SIGKILL'));
    await agent.waitForLog(/agent gw-1 running/);
    // both clients' CONNECTs are at the server, which never answers them (the timeout is 10 s)
    await until(() => server.connectedAt.length >= 2 && server.bytes > 0, 10_000, 'two connections at the server');
    await agent.waitForLog(/upstream cloud: cannot reach mqtt:\/\/127.0.0.1:\d+: no answer to CONNECT within 10 s/, 20_000);
    await agent.waitForLog(/device sensors: MQTT broker: cannot reach mqtt:\/\/127.0.0.1:\d+: no answer to CONNECT within 10 s/, 20_000);
    // a new attempt is under way, unanswered too
    await until(() => server.connectedAt.length >= 3, 30_000, 'a new attempt');
    agent.kill('SIGTERM');
    const took = await agent.exit();
    console.log(`SIGTERM with a silent MQTT broker: exited after ${took} ms (code ${agent.exitCode})`);
    expect(agent.exitCode).toBe(0);
    expect(took).toBeLessThan(5000);
    expect(agent.log.some((l) => /"msg":"stopped"/.test(l))).toBe(true);
  });
});

describe('the shared MQTT client\'s keepalive timer (keepaliveTimer)', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('ticks `ms` after the last start, then every `ms`; a restart moves the next tick; a clear stops it', () => {
    vi.useFakeTimers();
    const timer = keepaliveTimer(() => Date.now());
    const ticks: number[] = [];
    const start = Date.now();
    const tick = () => void ticks.push(Date.now() - start);
    let id = timer.set(tick, 1000);
    vi.advanceTimersByTime(2500);
    expect(ticks).toEqual([1000, 2000]);
    // what MQTT.js does at each acknowledgement: clear, then start again
    timer.clear(id);
    id = timer.set(tick, 1000);
    vi.advanceTimersByTime(400);
    timer.clear(id);
    id = timer.set(tick, 1000);
    vi.advanceTimersByTime(2000);
    expect(ticks).toEqual([1000, 2000, 3900, 4900]);
    // a shorter interval after a clear (a new connection's keepalive) is not held up by the old timer
    timer.clear(id);
    id = timer.set(tick, 100);
    vi.advanceTimersByTime(250);
    expect(ticks).toEqual([1000, 2000, 3900, 4900, 5000, 5100]);
    // a stale id does not clear the running interval
    timer.clear(id - 1);
    vi.advanceTimersByTime(100);
    expect(ticks.length).toBe(7);
    timer.clear(id);
    vi.advanceTimersByTime(5000);
    expect(ticks.length).toBe(7);
  });
});

describe('mqtt-packet loaded by the shared MQTT client (src/mqtt/quiet-packets.ts)', () => {
  /** In a node of its own on the build: lines mqtt-packet logs through `debug` while it writes and reads a PUBLISH. */
  function packetDebugLines(env: NodeJS.ProcessEnv): { lines: number; roundTrip: string; debugIntact: boolean } {
    const out = execFileSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `
        import { createRequire } from 'node:module';
        await import(${JSON.stringify(resolve(TEST_BUILD, 'mqtt/client.js'))});
        const fromMqtt = createRequire(createRequire(import.meta.url).resolve('mqtt'));
        const packet = fromMqtt('mqtt-packet');
        const createDebug = createRequire(fromMqtt.resolve('mqtt-packet'))('debug');
        let lines = 0;
        createDebug.log = () => void lines++;
        // enabled now, after the load: mqtt-packet's loggers were made no-ops unless DEBUG named them then
        createDebug.enable('mqtt-packet:*');
        const parser = packet.parser();
        let roundTrip = '';
        parser.on('packet', (p) => (roundTrip = p.topic + ' ' + p.payload));
        parser.parse(packet.generate({ cmd: 'publish', topic: 'a/b', payload: Buffer.from('12.5'), qos: 1, messageId: 7, retain: false, dup: false }));
        console.log(JSON.stringify({ lines, roundTrip, debugIntact: typeof createDebug.enable === 'function' && createDebug('x').namespace === 'x' }));
        `,
      ],
      { cwd: TEST_BUILD, encoding: 'utf8', env },
    );
    return JSON.parse(out.trim());
  }

  it('writes and reads packets without calling debug, unless DEBUG names mqtt-packet at start', () => {
    const quiet = packetDebugLines({ ...process.env, DEBUG: '' });
    expect(quiet).toEqual({ lines: 0, roundTrip: 'a/b 12.5', debugIntact: true });
    const asked = packetDebugLines({ ...process.env, DEBUG: 'mqtt-packet:*' });
    expect(asked.roundTrip).toBe('a/b 12.5');
    expect(asked.lines).toBeGreaterThan(5);
  });
});
