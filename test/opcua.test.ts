import pino from 'pino';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { DeviceConfig } from '../src/config/types.js';
import type { Connector } from '../src/connectors/connector.js';
import { createOpcuaDevice } from '../src/connectors/opcua/opcua.js';
import type { Reading } from '../src/core/reading.js';
import { OpcuaTestServer } from './support/opcua-server.js';
import { makePki } from './support/pki.js';
import { until } from './support/ports.js';

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

async function device(config: Partial<DeviceConfig> & { points: DeviceConfig['points'] }, expectOnline = true) {
  const readings: Reading[] = [];
  const events: Reading[] = [];
  const lines: string[] = [];
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
  const dataDir = mkdtempSync(join(tmpdir(), 'opcua-client-'));
  const connector: Connector = await createOpcuaDevice({ id: 'press-7', protocol: 'opcua', endpoint: server.endpoint, ...config }, { log, agentId: 'gw', dataDir, report: (e) => events.push(e) });
  cleanups.push(() => connector.stop());
  connector.start((r) => readings.push(r));
  if (expectOnline) await until(() => connector.online, 30_000, 'the OPC UA session');
  return { connector, readings, events, lines };
}

describe('OPC UA', () => {
  it('delivers monitored values with the source timestamp, and reads polled points', async () => {
    const before = Date.now();
    const { readings } = await device({
      poll: 200,
      points: [
        { name: 'rpm', node: 'ns=1;s=Motor.RPM', sampling: 100 },
        { name: 'setpoint', node: 'ns=1;s=Motor.Setpoint' },
      ],
    });
    await until(() => readings.some((r) => r.values.rpm === 100), 10_000, 'the first rpm');
    server.setRpm(123.5);
    await until(() => readings.some((r) => r.values.rpm === 123.5), 10_000, 'the changed rpm');
    await until(() => readings.some((r) => 'setpoint' in r.values), 10_000, 'a polled read');
    const rpm = readings.find((r) => r.values.rpm === 123.5)!;
    expect(rpm.ts).toBeGreaterThanOrEqual(before);
    expect(rpm.quality).toBeUndefined();
  }, 60_000);

  it('maps Bad status codes to bad quality with no value, and Uncertain ones to estimated', async () => {
    const { readings } = await device({ poll: 200, points: [{ name: 'broken', node: 'ns=1;s=Motor.Broken' }, { name: 'guess', node: 'ns=1;s=Motor.Guess' }] });
    await until(() => readings.length > 0, 10_000, 'a reading');
    expect(readings[0]).toMatchObject({ values: { broken: null, guess: 9.5 }, quality: { broken: 'bad', guess: 'estimated' } });
  }, 60_000);

  it('writes with the node data type and reports a refused write', async () => {
    const { connector } = await device({
      points: [
        { name: 'setpoint', node: 'ns=1;s=Motor.Setpoint', writable: true },
        { name: 'count', node: 'ns=1;s=Motor.Count', writable: true },
        { name: 'rpm', node: 'ns=1;s=Motor.RPM', writable: true },
      ],
    });
    await connector.write('setpoint', 42.5);
    await connector.write('count', 7);
    expect([server.setpoint, server.count]).toEqual([42.5, 7]);
    await expect(connector.write('rpm', 1)).rejects.toThrow(/device press-7, point rpm: node ns=1;s=Motor.RPM: Bad(NotWritable|UserAccessDenied)/);
  }, 60_000);

  it('logs in with a user name and password', async () => {
    const { readings } = await device({ user: 'operator', password: 's3cret', points: [{ name: 'rpm', node: 'ns=1;s=Motor.RPM', sampling: 100 }] });
    await until(() => readings.length > 0, 10_000, 'a reading');
  }, 60_000);

  it('logs in with a user certificate', async () => {
    const pki = makePki(mkdtempSync(join(tmpdir(), 'opcua-user-')));
    const { readings } = await device({ certificate: pki.clientCert, private_key: pki.clientKey, points: [{ name: 'rpm', node: 'ns=1;s=Motor.RPM', sampling: 100 }] });
    await until(() => readings.length > 0, 10_000, 'a reading');
  }, 60_000);

  it('talks SignAndEncrypt with its own certificate, trusting the server on first use', async () => {
    const { readings, connector } = await device({
      security: { mode: 'SignAndEncrypt', policy: 'Basic256Sha256' },
      trust_on_first_use: true,
      points: [{ name: 'rpm', node: 'ns=1;s=Motor.RPM', sampling: 100 }],
    });
    await until(() => readings.length > 0, 10_000, 'a reading over an encrypted channel');
    expect(connector.online).toBe(true);
  }, 60_000);

  it('trusts the server certificates of trust_dir', async () => {
    const { readings } = await device({ security: { mode: 'Sign', policy: 'Basic256Sha256' }, trust_dir: server.certificateFolder, points: [{ name: 'rpm', node: 'ns=1;s=Motor.RPM', sampling: 100 }] });
    await until(() => readings.length > 0, 10_000, 'a reading over a signed channel');
  }, 60_000);

  it('refuses a server certificate it does not trust, with Sign', async () => {
    const { lines, connector } = await device({ security: { mode: 'Sign', policy: 'Basic256Sha256' }, points: [{ name: 'rpm', node: 'ns=1;s=Motor.RPM', sampling: 100 }] }, false);
    await until(() => lines.some((l) => /BadCertificateUntrusted/.test(l)), 30_000, 'the refusal');
    expect(connector.online).toBe(false);
  }, 60_000);

  it('on first use trusts the server certificate it sees, and refuses a changed one', async () => {
    const own = await OpcuaTestServer.start();
    cleanups.push(() => own.stop());
    const readings: Reading[] = [];
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
    const dataDir = mkdtempSync(join(tmpdir(), 'opcua-tofu-'));
    const config = { id: 'tofu', protocol: 'opcua' as const, endpoint: own.endpoint, security: { mode: 'Sign' as const }, trust_on_first_use: true, points: [{ name: 'rpm', node: 'ns=1;s=Motor.RPM', sampling: 100 }] };
    const first = await createOpcuaDevice(config, { log, agentId: 'gw', dataDir });
    first.start((r) => readings.push(r));
    await until(() => first.online, 30_000, 'the first connection');
    await first.stop();
    await own.stop();
    own.renewCertificate();
    await own.resume();
    // a restart of the agent: the certificate trusted on first use is kept in data_dir
    const again = await createOpcuaDevice(config, { log, agentId: 'gw', dataDir });
    cleanups.push(() => again.stop());
    again.start(() => {});
    await until(() => lines.filter((l) => /BadCertificateUntrusted/.test(l)).length > 0, 30_000, 'the changed certificate refused');
    expect(again.online).toBe(false);
  }, 120_000);

  it('comes back by itself when the server restarts in the middle of a subscription', async () => {
    const { readings, events, connector } = await device({ points: [{ name: 'rpm', node: 'ns=1;s=Motor.RPM', sampling: 100 }] });
    server.setRpm(200);
    await until(() => readings.some((r) => r.values.rpm === 200), 10_000, 'rpm 200');
    await server.stop();
    await until(() => !connector.online, 20_000, 'the device offline');
    await server.resume();
    await until(() => connector.online, 60_000, 'the device online again');
    server.setRpm(321);
    await until(() => readings.some((r) => r.values.rpm === 321), 30_000, 'values after the restart');
    await new Promise((r) => setTimeout(r, 500));
    // one monitored item after the restart, not one more per reconnection
    expect(readings.filter((r) => r.values.rpm === 321)).toHaveLength(1);
    expect(events.map((e) => e.event!.code)).toEqual(['DEVICE_OFFLINE', 'DEVICE_ONLINE']);
  }, 120_000);
});
