import { spawn } from 'node:child_process';
import { connect as tcpConnect, type Socket } from 'node:net';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { DeviceConfig } from '../src/config/types.js';
import type { Connector } from '../src/connectors/connector.js';
import { createModbus } from '../src/connectors/modbus/modbus.js';
import type { Reading } from '../src/core/reading.js';
import { ModbusServer } from './support/modbus-server.js';
import { freePort, until } from './support/ports.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function server(): Promise<ModbusServer> {
  const s = await ModbusServer.start();
  cleanups.push(() => s.stop());
  return s;
}

async function device(config: Partial<DeviceConfig> & { points: DeviceConfig['points'] }, port: number) {
  const lines: string[] = [];
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
  const readings: Reading[] = [];
  /** Each DEVICE_OFFLINE / DEVICE_ONLINE event, with the number of readings delivered before it. */
  const events: { code: string; after: number }[] = [];
  const connector = (await createModbus(
    { id: 'meter', protocol: 'modbus-tcp', host: '127.0.0.1', port, poll: 100, timeout: 300, ...config },
    { log, agentId: 'gw', report: (e) => events.push({ code: e.event!.code, after: readings.length }) },
  )) as Connector & { readErrors: number };
  cleanups.push(() => connector.stop());
  return { connector, readings, events, lines, start: () => connector.start((r) => readings.push(r)) };
}

describe('Modbus writes write what was asked or fail', () => {
  const points = [
    { name: 'tenths', area: 'holding', address: 0, type: 'uint16', scale: 0.1, writable: true },
    { name: 'signed', area: 'holding', address: 1, type: 'int16', writable: true },
    { name: 'offset', area: 'holding', address: 2, type: 'int16', scale: 2, offset: 100, writable: true },
    { name: 'setpoint', area: 'holding', address: 10, type: 'float32', order: 'CDAB', scale: 0.5, writable: true },
    { name: 'label', area: 'holding', address: 20, type: 'string', length: 2, writable: true },
    { name: 'breaker', area: 'coil', address: 5, writable: true },
  ];

  it('refuses, before sending anything, a value the register cannot hold exactly, naming device, point and type', async () => {
    const s = await server();
    const { connector } = await device({ poll: 60_000, points }, s.port);
    const u = s.unit(1);
    u.holding[0] = 7;
    const before = s.requests;
    await expect(connector.write('tenths', 12.34)).rejects.toThrow('device meter, point tenths: 12.34 is not a whole uint16 value after scale 0.1 and offset 0');
    await expect(connector.write('offset', 101)).rejects.toThrow('device meter, point offset: 101 is not a whole int16 value after scale 2 and offset 100 (raw 0.5)');
    await expect(connector.write('signed', '12' as unknown as number)).rejects.toThrow('device meter, point signed: "12" is not a number (the point is int16)');
    await expect(connector.write('signed', 40000)).rejects.toThrow('device meter, point signed: 40000 is out of range for int16 (raw 40000, from -32768 to 32767)');
    await expect(connector.write('tenths', -0.1)).rejects.toThrow('device meter, point tenths: -0.1 is out of range for uint16');
    await expect(connector.write('setpoint', 1e39)).rejects.toThrow('device meter, point setpoint: 1e+39 is out of range for float32');
    await expect(connector.write('label', 5)).rejects.toThrow('device meter, point label: 5 is not a string (the point is a string of 2 registers)');
    await expect(connector.write('breaker', 'on' as unknown as boolean)).rejects.toThrow('device meter, point breaker: "on" is not a boolean (the point is a coil)');
    expect(s.requests).toBe(before); // nothing reached the device
    expect(u.holding[0]).toBe(7);
  });

  it('resolves with the value as sent, decoded back, and the value read back', async () => {
    const s = await server();
    const { connector } = await device({ poll: 60_000, points }, s.port);
    const u = s.unit(1);
    // 0.3 / 0.1 is 2.9999999999999996 in binary: a whole register value all the same
    expect(await connector.write('tenths', 0.3)).toEqual({ written: 0.30000000000000004, readBack: 0.30000000000000004 });
    expect(u.holding[0]).toBe(3);
    expect(await connector.write('offset', 90)).toEqual({ written: 90, readBack: 90 });
    expect(u.holding[2]).toBe(0xfffb); // -5
    // a float32 holds 0.1 only approximately: what was written says so
    expect(await connector.write('setpoint', 0.1)).toEqual({ written: Math.fround(0.2) * 0.5, readBack: Math.fround(0.2) * 0.5 });
    expect(await connector.write('label', 'AB')).toEqual({ written: 'AB', readBack: 'AB' });
    expect(await connector.write('breaker', true)).toEqual({ written: true, readBack: true });
    expect(u.coils[5]).toBe(1);
  });
});

describe('Modbus device status is smoothed', () => {
  it('stays online when every other poll is refused, goes offline after offline_after failed polls in a row, online after one good one', async () => {
    const s = await server();
    const u = s.unit(1);
    u.holding[0] = 42;
    u.refuseEvery = 2;
    const { connector, readings, events, lines, start } = await device({ points: [{ name: 'v', area: 'holding', address: 0 }] }, s.port);
    start();
    await until(() => readings.length >= 20, 20_000, '20 polls');
    const bad = readings.filter((r) => r.quality?.v === 'bad').length;
    console.log(`exception every other poll: ${readings.length} polls, ${bad} bad, ${events.length} status events`);
    expect(bad).toBeGreaterThanOrEqual(8);
    expect(readings.filter((r) => r.values.v === 42).length).toBeGreaterThanOrEqual(8);
    expect(events).toEqual([]);
    expect(connector.online).toBe(true);

    u.refuseEvery = 1;
    await until(() => events.length === 1, 10_000, 'DEVICE_OFFLINE');
    expect(events[0].code).toBe('DEVICE_OFFLINE');
    // the third failed poll in a row (the default offline_after) raised it: two before it
    const lastGood = readings.findLastIndex((r) => r.values.v === 42);
    expect(events[0].after - lastGood - 1).toBe(2);
    expect(connector.online).toBe(false);
    expect(lines.filter((l) => l.includes('does not answer'))[0]).toMatch(/device meter does not answer \(3 polls in a row\): .*Modbus exception 4/);

    u.refuseEvery = 0;
    await until(() => events.length === 2, 10_000, 'DEVICE_ONLINE');
    expect(events[1].code).toBe('DEVICE_ONLINE');
    expect(readings[events[1].after - 1].quality?.v).toBe('bad'); // the first good poll brought it back
    expect(connector.online).toBe(true);
  });

  it('takes offline_after from the device config', async () => {
    const s = await server();
    s.unit(1).refuseEvery = 2;
    const { readings, events, start } = await device({ offline_after: 1, points: [{ name: 'v', area: 'holding', address: 0 }] }, s.port);
    start();
    await until(() => readings.length >= 8, 20_000, '8 polls');
    // with 1, each refused poll is an outage of its own
    expect(events.filter((e) => e.code === 'DEVICE_OFFLINE').length).toBeGreaterThanOrEqual(3);
  });
});

describe('Modbus TCP connecting', () => {
  it('logs a connection attempt that gets no answer within its timeout, once, and tries again later', async () => {
    // a listener that never accepts, with its backlog full: further connection attempts get no answer
    const port = await freePort();
    const silent = spawn('/usr/bin/python3', ['-c', `import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',${port}))\ns.listen(0)\nprint('ready',flush=True)\ntime.sleep(600)`], { stdio: ['ignore', 'pipe', 'inherit'] });
    cleanups.push(() => void silent.kill('SIGKILL'));
    await new Promise<void>((resolve) => silent.stdout!.once('data', () => resolve()));
    const fillers: Socket[] = [];
    for (let i = 0; i < 4; i++) fillers.push(tcpConnect(port, '127.0.0.1').on('error', () => {}));
    cleanups.push(() => fillers.forEach((f) => f.destroy()));
    await new Promise((r) => setTimeout(r, 300));

    const { connector, readings, lines, start } = await device({ timeout: 500, points: [{ name: 'v', area: 'holding', address: 0 }] }, port);
    start();
    await until(() => lines.some((l) => l.includes('cannot connect')), 10_000, 'the connection attempt logged');
    expect(lines.find((l) => l.includes('cannot connect'))).toMatch(new RegExp(`device meter: .*modbus-tcp 127.0.0.1:${port}: cannot connect: no answer within 500 ms; attempt 1, next in \\d+ s`));
    await until(() => readings.length >= 5, 10_000, 'more polls');
    expect(readings.every((r) => r.quality?.v === 'bad')).toBe(true);
    expect(lines.filter((l) => l.includes('"level":40') && l.includes('function 3'))).toHaveLength(1);
    expect(connector.readErrors).toBeGreaterThanOrEqual(5);
    // stopping ends a connection attempt in flight (it waited for the attempt, minutes without an answer)
    await until(() => lines.length > 0, 1000, 'a log line');
    await connector.stop();
  });
});
