import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import Database from 'better-sqlite3';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentProcess } from './support/agent-process.js';
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

function writeConfig(dir: string, poll: string): string {
  const file = join(dir, 'agent.yaml');
  const devices = [1, 2, 3, 4]
    .map(
      (n) => `  - id: sim-${n}
    protocol: simulator
    poll: ${poll}
    points:
      - { name: energy_kwh, signal: counter, rate: 100 }
      - { name: power_kw, signal: random, min: 0, max: 50 }`,
    )
    .join('\n');
  const streams = [1, 2, 3, 4].map((n) => `  - { name: s${n}, from: { device: sim-${n} }, to: [broker] }`).join('\n');
  writeFileSync(
    file,
    `agent: { id: gw-kill, data_dir: ${dir}/data }
devices:
${devices}
streams:
${streams}
upstream:
  - { name: broker, type: mqtt, url: "${broker.url}", topic: "kill/{stream}", qos: 1, batch: 20 }
`,
  );
  return file;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('the agent as a service', () => {
  // 50 kills in the suite; FAULTS_LONG=1 runs 1,000.
  const kills = process.env.FAULTS_LONG ? 1000 : 50;

  it(`survives kill -9 under load, ${kills} times: every committed seq reaches the subscriber`, { timeout: kills * 5000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kill-'));
    const subscriber = await Subscriber.connect(broker.url, 'kill/#');
    const config = writeConfig(dir, '5ms'); // 4 devices: ~800 records/s
    for (let k = 0; k < kills; k++) {
      const agent = AgentProcess.start(config);
      await agent.waitForLog(/agent gw-kill running/);
      await sleep(100 + Math.random() * 600);
      agent.kill('SIGKILL');
      await agent.exit();
      expect(agent.signal).toBe('SIGKILL');
      const db = new Database(join(dir, 'data/edge-agent.db'));
      expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
      db.close();
    }
    const db = new Database(join(dir, 'data/edge-agent.db'));
    const committed = db.prepare("SELECT value FROM meta WHERE key = 'seq'").pluck().get() as number;
    db.close();
    expect(committed).toBeGreaterThan(kills * 50);

    // Drain with the devices quiet (a poll that does not come during the test).
    const drain = AgentProcess.start(writeConfig(dir, '1h'));
    await drain.waitForLog(/agent gw-kill running/);
    await until(() => subscriber.seqs.distinct.size >= committed, 30_000, `all ${committed} seqs at the subscriber`);
    const { distinct, duplicates } = subscriber.seqs;
    const missing = [];
    for (let seq = 1; seq <= committed; seq++) if (!distinct.has(seq)) missing.push(seq);
    expect(missing).toEqual([]);
    // what a kill can duplicate is what was sent and not yet deleted: the sends in flight
    // (4 for MQTT) of at most 1000 records each
    expect(duplicates).toBeLessThanOrEqual(kills * 4 * 1000);
    console.log(`kill -9 x${kills}: ${committed} records committed, 0 missing, ${duplicates} duplicates (${(duplicates / kills).toFixed(1)} per kill)`);
    drain.kill('SIGTERM');
    expect(await drain.exit()).toBeLessThan(5000);
    expect(drain.exitCode).toBe(0);
    await subscriber.close();
  });

  it('reloads on SIGHUP, keeps the running config when the new file is bad, and stops cleanly on SIGTERM', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'svc-'));
    const subscriber = await Subscriber.connect(broker.url, 'kill/#');
    const config = writeConfig(dir, '50ms');
    const agent = AgentProcess.start(config);
    await agent.waitForLog(/agent gw-kill running/);

    writeFileSync(config, readFileSync(config, 'utf8').replace('qos: 1', 'qos: 3'));
    agent.kill('SIGHUP');
    await agent.waitForLog(/rejected; the running config stays/);
    expect(agent.log.join('\n')).toContain('upstream[0].qos: must be one of: 0, 1 (got 3)');
    const count = subscriber.records.length;
    await until(() => subscriber.records.length > count + 10, 5000, 'records after the rejected reload');

    writeConfig(dir, '100ms');
    agent.kill('SIGHUP');
    // only the device whose poll changed restarts; its streams and the upstream keep running
    await agent.waitForLog(/config from .* applied \(restarted: devices [^;]*\)/);

    agent.kill('SIGTERM');
    const took = await agent.exit();
    expect(agent.exitCode).toBe(0);
    expect(took).toBeLessThan(5000);
    expect(agent.log.some((l) => /"msg":"stopped"/.test(l))).toBe(true);
    await subscriber.close();
  });

  it('exits with EX_CONFIG (78) and the error on a bad config at start', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'svc-'));
    const config = join(dir, 'agent.yaml');
    writeFileSync(config, 'agent: { id: gw }\ndevices: [{ id: x, protocol: simulator }]\n');
    const agent = AgentProcess.start(config);
    await agent.exit();
    expect(agent.exitCode).toBe(78);
    expect(agent.log.join('\n')).toContain(`${config}:2:11: devices[0]: missing required key \\"points\\"`);
  });
});

/** The receiving end of NOTIFY_SOCKET, as systemd holds it: every datagram with its arrival time. */
async function notifyListener(socket: string) {
  const listener = spawn('/usr/bin/python3', [
    '-u',
    '-c',
    `import socket\ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\ns.bind(${JSON.stringify(socket)})\nprint('bound')\nwhile True:\n    print(s.recv(4096).decode().replace(chr(10), ' '))`,
  ]);
  const messages: { at: number; text: string }[] = [];
  listener.stdout.on('data', (chunk: Buffer) => messages.push(...chunk.toString().trim().split('\n').map((text) => ({ at: Date.now(), text }))));
  await until(() => messages.some((m) => m.text === 'bound'), 5000, 'the notify socket');
  return { messages, stop: () => listener.kill() };
}

describe('systemd notification', () => {
  it('reports READY, pings the watchdog at half its interval, and reports STOPPING', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'notify-'));
    const socket = join(dir, 'notify.sock');
    const listener = await notifyListener(socket);
    const texts = () => listener.messages.map((m) => m.text);
    const agent = AgentProcess.start(writeConfig(dir, '1s'), { NOTIFY_SOCKET: socket, WATCHDOG_USEC: '400000' });
    await until(() => texts().some((m) => m.includes('READY=1')), 10_000, 'READY=1');
    await until(() => texts().filter((m) => m.includes('WATCHDOG=1')).length >= 3, 5000, 'three watchdog pings');
    expect(texts().find((m) => m.includes('READY=1'))).toContain(`MAINPID=${agent.child.pid}`);
    agent.kill('SIGTERM');
    await agent.exit();
    await until(() => texts().some((m) => m.includes('STOPPING=1')), 5000, 'STOPPING=1');
    listener.stop();
  });

  it('stops the watchdog pings when a forwarding loop stalls', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'stall-'));
    const socket = join(dir, 'notify.sock');
    const { messages, stop: stopListener } = await notifyListener(socket);

    // A broker that takes the connection and the messages but never acknowledges one.
    const silent = createServer((conn) =>
      conn.on('data', (data) => {
        if (data[0] >> 4 === 1) conn.write(Buffer.from([0x20, 0x02, 0x00, 0x00])); // CONNACK
        if (data[0] >> 4 === 12) conn.write(Buffer.from([0xd0, 0x00])); // PINGRESP
      }),
    );
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as { port: number }).port;
    const config = join(dir, 'agent.yaml');
    writeFileSync(
      config,
      `agent: { id: gw-stall, data_dir: ${dir}/data }
devices: [{ id: sim, protocol: simulator, poll: 50ms, points: [{ name: p, signal: sine }] }]
streams: [{ name: s, from: { device: sim }, to: [broker] }]
upstream: [{ name: broker, type: mqtt, url: "mqtt://127.0.0.1:${port}", topic: t }]
`,
    );
    const agent = AgentProcess.start(config, { NOTIFY_SOCKET: socket, WATCHDOG_USEC: '1000000' });
    await agent.waitForLog(/watchdog pings stop/, 10_000);
    const stoppedAt = Date.now();
    await sleep(2500);
    const pings = (from: number) => messages.filter((m) => m.text.includes('WATCHDOG=1') && m.at > from).length;
    expect(pings(stoppedAt + 200)).toBe(0);
    agent.kill('SIGKILL');
    await agent.exit();
    stopListener();
    silent.close();
  });
});