import pino from 'pino';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { DeviceConfig } from '../src/config/types.js';
import type { Connector } from '../src/connectors/connector.js';
import { createOpcuaDevice } from '../src/connectors/opcua/opcua.js';
import type { Reading } from '../src/core/reading.js';
import { AgentProcess } from './support/agent-process.js';
import { OpcuaTestServer } from './support/opcua-server.js';
import { freePort, until } from './support/ports.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let server: OpcuaTestServer;
beforeAll(async () => {
  server = await OpcuaTestServer.start();
}, 120_000);
afterAll(async () => {
  await server?.stop();
});

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function device(config: Partial<DeviceConfig> & { points: DeviceConfig['points'] }, options: { online?: boolean; dataDir?: string } = {}) {
  const readings: Reading[] = [];
  const events: Reading[] = [];
  const lines: string[] = [];
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'opcua-field-'));
  const connector: Connector = await createOpcuaDevice({ id: 'press-7', protocol: 'opcua', endpoint: server.endpoint, ...config }, { log, agentId: 'gw', dataDir, report: (e) => events.push(e) });
  cleanups.push(() => connector.stop());
  connector.start((r) => readings.push(r));
  if (options.online ?? true) await until(() => connector.online, 30_000, 'the OPC UA session');
  return { connector, readings, events, lines };
}

/**
 * A TCP server that forwards to `target` (or, without one, accepts and never answers), counting
 * connections; `silence()` makes it keep every connection open and drop all bytes from then on.
 */
async function tcpCounter(target?: number): Promise<{ port: number; accepted: number; silence(): void; stop(): Promise<void> }> {
  const sockets = new Set<Socket>();
  let silent = target === undefined;
  const counter = { port: await freePort(), accepted: 0, silence: () => void (silent = true), stop: async () => {} };
  const tcp: Server = createServer((client) => {
    counter.accepted++;
    sockets.add(client);
    client.on('error', () => undefined).on('close', () => sockets.delete(client));
    if (target === undefined) return; // the OPC UA Hello is never answered
    const upstream = connect(target, '127.0.0.1');
    sockets.add(upstream);
    upstream.on('error', () => client.destroy()).on('close', () => client.destroy());
    client.on('close', () => upstream.destroy());
    client.on('data', (data) => silent || upstream.write(data));
    upstream.on('data', (data) => silent || client.write(data));
  });
  await new Promise<void>((resolve) => tcp.listen(counter.port, '127.0.0.1', resolve));
  counter.stop = async () => {
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => tcp.close(resolve));
  };
  return counter;
}

const typed = (type: string) => ({ name: type.toLowerCase(), node: `ns=1;s=Types.${type}`, writable: true });

describe('OPC UA writes', () => {
  it('refuses a value the node type cannot hold exactly, naming device, point, node and type, and writes nothing', async () => {
    const { connector } = await device({ points: ['Int16', 'UInt16', 'Byte', 'Int64', 'Float', 'Double', 'String', 'Boolean'].map(typed) });
    const refusals: [string, number | string | boolean, RegExp][] = [
      ['int16', 1.7, /device press-7, point int16: node ns=1;s=Types.Int16 is Int16: 1.7 is not an integer; not written/],
      ['int16', 40000, /is Int16: 40000 is out of range -32768..32767/],
      ['int16', '12', /is Int16: "12" is not a number/],
      ['uint16', -1, /is UInt16: -1 is out of range 0..65535/],
      ['byte', 256, /is Byte: 256 is out of range 0..255/],
      ['int64', 2 ** 53, /is Int64: 9007199254740992 is out of range/],
      ['float', 1e39, /is Float: 1e\+39 is out of the Float range/],
      ['double', 'abc', /point double: node ns=1;s=Types.Double is Double: "abc" is not a number/],
      ['string', 42, /point string: node ns=1;s=Types.String is String: 42 is not a string/],
      ['boolean', 2, /is Boolean: 2 is not true, false, 0 or 1/],
    ];
    for (const [point, value, message] of refusals) await expect(connector.write(point, value), `${point} ← ${value}`).rejects.toThrow(message);
    expect(Object.fromEntries(server.typed)).toMatchObject({ 'Types.Int16': 0, 'Types.UInt16': 0, 'Types.Double': 0, 'Types.String': '' });
  }, 60_000);

  it('resolves with the value as sent and the value read back', async () => {
    const { connector } = await device({ points: ['Int16', 'Int64', 'Double', 'String', 'Boolean'].map(typed) });
    expect(await connector.write('int16', -1234)).toEqual({ written: -1234, readBack: -1234 });
    expect(await connector.write('int64', -5)).toEqual({ written: -5, readBack: -5 });
    expect(await connector.write('double', 2.5)).toEqual({ written: 2.5, readBack: 2.5 });
    expect(await connector.write('string', 'abc')).toEqual({ written: 'abc', readBack: 'abc' });
    expect(await connector.write('boolean', 1)).toEqual({ written: true, readBack: true });
    expect(server.typed.get('Types.Int16')).toBe(-1234);
    expect(server.typed.get('Types.Boolean')).toBe(true);
  }, 60_000);

  it('reports a server refusal with the status code name and description', async () => {
    const { connector } = await device({ points: [{ name: 'rpm', node: 'ns=1;s=Motor.RPM', writable: true }, { name: 'ghost', node: 'ns=1;s=No.Such', writable: true }] });
    await expect(connector.write('rpm', 1)).rejects.toThrow(/point rpm: node ns=1;s=Motor.RPM: Bad(NotWritable|UserAccessDenied) \(0x[0-9a-f]{8}: \S.+\)/);
    await expect(connector.write('ghost', 1)).rejects.toThrow(/point ghost: node ns=1;s=No.Such: cannot read its data type: BadNodeIdUnknown \(0x[0-9a-f]{8}: \S.+\)/);
  }, 60_000);
});

describe('OPC UA subscriptions', () => {
  it('monitors a node again after it was deleted and added back, marking it stale once meanwhile', async () => {
    server.setLevel(1);
    const { readings, lines, connector } = await device({ stale_after: 1000, points: [{ name: 'level', node: 'ns=1;s=Tank.Level', sampling: 100 }] });
    await until(() => readings.some((r) => r.values.level === 1), 10_000, 'the first level');
    server.deleteLevel();
    await until(() => readings.some((r) => r.quality?.level === 'stale'), 20_000, 'the point marked stale');
    await sleep(4000); // several failed re-creations and stale checks
    server.level = 7;
    server.addLevel();
    const readded = Date.now();
    await until(() => readings.some((r) => r.values.level === 7), 30_000, 'the level after the node came back');
    console.info(`values again ${Date.now() - readded} ms after the node came back`);
    expect(connector.online).toBe(true);
    expect(readings.filter((r) => r.quality?.level === 'stale')).toHaveLength(1);
    expect(lines.filter((l) => /monitoring ns=1;s=Tank.Level \(point level\) failed/.test(l))).toHaveLength(1);
    expect(lines.filter((l) => /point level .* marked stale/.test(l))).toHaveLength(1);
    expect(lines.some((l) => /point level updates again/.test(l))).toBe(true);
  }, 90_000);

  it('does not call an unchanging value, an unchanging Bad status, or a change within the deadband stale', async () => {
    const { readings, lines } = await device({
      points: [
        { name: 'setpoint', node: 'ns=1;s=Types.Double', sampling: 100, stale_after: 500 },
        // a failed sensor that stays failed is not a dead item either
        { name: 'broken', node: 'ns=1;s=Motor.Broken', sampling: 100, stale_after: 500 },
        // changes within the deadband are not notified, and not a sign of a dead item
        { name: 'banded', node: 'ns=1;s=Types.Int32', sampling: 100, stale_after: 500, deadband: { type: 'absolute', value: 5 } },
      ],
    });
    server.typed.set('Types.Int32', 0);
    await until(() => readings.some((r) => 'setpoint' in r.values) && readings.some((r) => r.quality?.broken === 'bad') && readings.some((r) => r.values.banded === 0), 10_000, 'the first values');
    server.typed.set('Types.Int32', 3);
    await sleep(4000);
    expect(readings.filter((r) => 'banded' in r.values).map((r) => r.values.banded)).toEqual([0]);
    expect(readings.filter((r) => Object.values(r.quality ?? {}).includes('stale'))).toEqual([]);
    expect(lines.filter((l) => /stale/.test(l))).toEqual([]);
  }, 60_000);
});

describe('OPC UA connections', () => {
  it('a server that accepts TCP and never answers: logged within connect_timeout, offline event, few attempts', async () => {
    const silent = await tcpCounter();
    cleanups.push(() => silent.stop());
    const { lines, events, connector } = await device({ endpoint: `opc.tcp://127.0.0.1:${silent.port}/UA/Test`, connect_timeout: 2000, points: [{ name: 'rpm', node: 'ns=1;s=Motor.RPM', sampling: 100 }] }, { online: false });
    await until(() => lines.some((l) => /cannot open .*: no answer within 2000 ms; trying again with backoff/.test(l)), 10_000, 'the log line');
    expect(events.map((e) => e.event?.code)).toEqual(['DEVICE_OFFLINE']);
    expect(connector.online).toBe(false);
    await sleep(15_000);
    // one log line for the whole episode; attempts spaced by the timeout and the backoff
    expect(lines.filter((l) => /no answer within/.test(l) && /cannot open/.test(l))).toHaveLength(1);
    console.info(`connections to a silent server in 17 s: ${silent.accepted}`);
    expect(silent.accepted).toBeLessThanOrEqual(10);
  }, 60_000);

  it('a changed server certificate is refused and retried with backoff, quietly', async () => {
    const own = await OpcuaTestServer.start();
    cleanups.push(() => own.stop());
    const link = await tcpCounter(own.port);
    cleanups.push(() => link.stop());
    const consoleLines = vi.spyOn(console, 'log');
    cleanups.push(async () => consoleLines.mockRestore());
    const { lines, connector } = await device({
      endpoint: `opc.tcp://127.0.0.1:${link.port}/UA/Test`,
      security: { mode: 'Sign' },
      trust_on_first_use: true,
      points: [{ name: 'rpm', node: 'ns=1;s=Motor.RPM', sampling: 100 }],
    });
    await own.stop();
    own.renewCertificate();
    await own.resume();
    await until(() => lines.some((l) => /BadCertificateUntrusted/.test(l)), 30_000, 'the changed certificate refused');
    const before = link.accepted;
    consoleLines.mockClear();
    await sleep(20_000);
    const attempts = link.accepted - before;
    console.info(`connections to a refused server in 20 s: ${attempts}; node-opcua console lines: ${consoleLines.mock.calls.length}`);
    expect(connector.online).toBe(false);
    expect(attempts).toBeLessThanOrEqual(30);
    expect(consoleLines.mock.calls).toEqual([]);
    expect(lines.filter((l) => /cannot open .*BadCertificateUntrusted/.test(l))).toHaveLength(1);
  }, 90_000);
});

describe('OPC UA trust', () => {
  it('gives each device its own trust on first use', async () => {
    const second = await OpcuaTestServer.start(); // another certificate
    cleanups.push(() => second.stop());
    const dataDir = mkdtempSync(join(tmpdir(), 'opcua-two-'));
    const points = [{ name: 'rpm', node: 'ns=1;s=Motor.RPM', sampling: 100 }];
    const a = await device({ id: 'a', security: { mode: 'Sign' }, trust_on_first_use: true, points }, { dataDir });
    const b = await device({ id: 'b', endpoint: second.endpoint, security: { mode: 'Sign' }, trust_on_first_use: true, points }, { dataDir });
    expect([a.connector.online, b.connector.online]).toEqual([true, true]);
    expect(readdirSync(join(dataDir, 'opcua', 'devices', 'a', 'trusted'))).toHaveLength(1);
    expect(readdirSync(join(dataDir, 'opcua', 'devices', 'b', 'trusted'))).toHaveLength(1);
    // device a keeps trusting only its own server: the second server's certificate is refused for it
    await a.connector.stop();
    const impostor = await device({ id: 'a', endpoint: second.endpoint, security: { mode: 'Sign' }, trust_on_first_use: true, points }, { dataDir, online: false });
    await until(() => impostor.lines.some((l) => /BadCertificateUntrusted/.test(l)), 30_000, 'the refusal');
    expect(impostor.connector.online).toBe(false);
    expect(readdirSync(join(dataDir, 'opcua', 'devices', 'a', 'rejected'))).toHaveLength(1);
    await until(() => impostor.lines.filter((l) => /cannot open/.test(l)).length > 0, 30_000, 'the attempt logged');
    expect(impostor.lines.filter((l) => /device a: server certificate \w+ is not trusted for this device; it is in \S+devices\/a\/rejected: move it to/.test(l))).toHaveLength(1);
  }, 120_000);
});

describe('OPC UA trust after an upgrade', () => {
  it('a TOFU device of an install from before per-device trust keeps refusing other certificates', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'opcua-upgrade-'));
    // what the previous version left: the certificate trusted on first use in the shared store
    const shared = join(dataDir, 'opcua', 'pki', 'trusted', 'certs');
    mkdirSync(shared, { recursive: true });
    for (const file of readdirSync(server.certificateFolder)) copyFileSync(join(server.certificateFolder, file), join(shared, file));
    const other = await OpcuaTestServer.start();
    cleanups.push(() => other.stop());
    const points = [{ name: 'rpm', node: 'ns=1;s=Motor.RPM', sampling: 100 }];
    const impostor = await device({ id: 'old', endpoint: other.endpoint, security: { mode: 'Sign' }, trust_on_first_use: true, points }, { dataDir, online: false });
    await until(() => impostor.lines.some((l) => /BadCertificateUntrusted/.test(l)), 30_000, 'the refusal');
    expect(impostor.connector.online).toBe(false);
    await impostor.connector.stop();
    await device({ id: 'old', security: { mode: 'Sign' }, trust_on_first_use: true, points }, { dataDir });
  }, 120_000);
});

describe('OPC UA stop', () => {
  const agentWith = (dir: string, endpoint: string) => {
    const config = join(dir, 'agent.yaml');
    writeFileSync(
      config,
      `agent: { id: gw, data_dir: ${dir}/data, http: off }
devices:
  - id: plc
    protocol: opcua
    endpoint: ${endpoint}
    connect_timeout: 30s
    points: [{ name: rpm, node: "ns=1;s=Motor.RPM", sampling: 100ms }, { name: setpoint, node: "ns=1;s=Motor.Setpoint" }]
streams:
  - { name: s, from: { device: plc }, steps: [], to: [file] }
upstream: [{ name: file, type: file, path: out.jsonl }]
`,
    );
    return AgentProcess.start(config);
  };

  it('the agent exits within 5 s of SIGTERM while its OPC UA server accepts TCP and never answers', async () => {
    const silent = await tcpCounter();
    cleanups.push(() => silent.stop());
    const agent = agentWith(mkdtempSync(join(tmpdir(), 'opcua-stop-')), `opc.tcp://127.0.0.1:${silent.port}/UA/Test`);
    await agent.waitForLog(/agent gw running/, 30_000);
    await until(() => silent.accepted > 0, 10_000, 'the connection attempt');
    agent.kill('SIGTERM');
    const took = await agent.exit();
    console.info(`exit after SIGTERM (server never answered) took ${took} ms`);
    expect(agent.exitCode).toBe(0);
    expect(took).toBeLessThan(5000);
  }, 60_000);

  it('the agent exits within 5 s of SIGTERM when its connected OPC UA server stops answering', async () => {
    const link = await tcpCounter(server.port);
    cleanups.push(() => link.stop());
    const dir = mkdtempSync(join(tmpdir(), 'opcua-stop-'));
    const agent = agentWith(dir, `opc.tcp://127.0.0.1:${link.port}/UA/Test`);
    await agent.waitForLog(/agent gw running/, 30_000);
    await until(() => existsSync(join(dir, 'out.jsonl')) && readFileSync(join(dir, 'out.jsonl'), 'utf8').includes('setpoint'), 30_000, 'values through the link');
    link.silence();
    await sleep(1000);
    agent.kill('SIGTERM');
    const took = await agent.exit();
    console.info(`exit after SIGTERM (server stopped answering) took ${took} ms`);
    expect(agent.exitCode).toBe(0);
    expect(took).toBeLessThan(5000);
  }, 60_000);
});
