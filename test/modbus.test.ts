import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { startAgent } from '../src/start.js';
import type { DeviceConfig } from '../src/config/types.js';
import type { Connector } from '../src/connectors/connector.js';
import { createModbus } from '../src/connectors/modbus/modbus.js';
import type { Reading } from '../src/core/reading.js';
import { readJsonLines } from './support/files.js';
import { testLog } from './support/log.js';
import { ModbusServer } from './support/modbus-server.js';
import { until } from './support/ports.js';
import { RtuLine } from './support/rtu.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function server(): Promise<ModbusServer> {
  const s = await ModbusServer.start();
  cleanups.push(() => s.stop());
  return s;
}

function capture() {
  const lines: string[] = [];
  return { lines, log: pino({ level: 'info' }, { write: (l: string) => void lines.push(l) }) };
}

async function connect(device: Partial<DeviceConfig> & { points: DeviceConfig['points'] }, port: number, log = testLog) {
  const events: Reading[] = [];
  const readings: Reading[] = [];
  const connector: Connector = await createModbus({ id: 'meter', protocol: 'modbus-tcp', host: '127.0.0.1', port, poll: 100, timeout: 300, ...device }, { log, agentId: 'gw', report: (e) => events.push(e) });
  cleanups.push(() => connector.stop());
  connector.start((r) => readings.push(r));
  return { connector, readings, events };
}

describe('Modbus TCP', () => {
  it('reads every point type and order from a real server', async () => {
    const s = await server();
    const u = s.unit(1);
    u.holding.set([0x3fc0, 0x0000], 0); // float32 1.5 ABCD
    u.holding.set([0x0000, 0xc2c8], 2); // float32 -100 CDAB
    u.holding.set([0xfffe], 4); // int16 -2
    u.holding.set([0x4240, 0x000f], 5); // uint32 1,000,000 CDAB × 0.01
    u.holding.set([0xffff, 0xffff, 0xffff, 0xfff6], 7); // int64 -10
    u.holding.set([0x7fc0, 0x0000], 11); // float32 NaN
    u.holding.set([0x4142, 0x4344, 0x0000], 13); // "ABCD"
    u.holding.set([0b100], 16); // bit 2
    u.input.set([0x3412, 0x7856], 0); // uint32 BADC
    u.input.set([0, 0, 0, 0xf83f], 10); // float64 1.5 DCBA
    u.coils[3] = 1;
    u.discrete[7] = 1;
    const { readings } = await connect(
      {
        points: [
          { name: 'f', area: 'holding', address: 0, type: 'float32' },
          { name: 'neg', area: 'holding', address: 2, type: 'float32', order: 'CDAB' },
          { name: 'i16', area: 'holding', address: 4, type: 'int16' },
          { name: 'kwh', area: 'holding', address: 5, type: 'uint32', order: 'CDAB', scale: 0.01 },
          { name: 'i64', area: 'holding', address: 7, type: 'int64' },
          { name: 'nan', area: 'holding', address: 11, type: 'float32' },
          { name: 'text', area: 'holding', address: 13, type: 'string', length: 3 },
          { name: 'flag', area: 'holding', address: 16, type: 'bool', bit: 2 },
          { name: 'u32', area: 'input', address: 0, type: 'uint32', order: 'BADC' },
          { name: 'f64', area: 'input', address: 10, type: 'float64', order: 'DCBA' },
          { name: 'coil', area: 'coil', address: 3 },
          { name: 'di', area: 'discrete', address: 7 },
        ],
      },
      s.port,
    );
    await until(() => readings.length > 0, 5000, 'a reading');
    expect(readings[0].values).toEqual({ f: 1.5, neg: -100, i16: -2, kwh: 10000, i64: -10, nan: null, text: 'ABCD', flag: true, u32: 0x12345678, f64: 1.5, coil: true, di: true });
    expect(readings[0].quality).toEqual({ nan: 'bad' });
  });

  it('reads 50 points in 3 clusters with 3 requests per poll', async () => {
    const s = await server();
    const points = [];
    for (const [start, n] of [[0, 20], [1000, 20], [3000, 10]]) for (let i = 0; i < n; i++) points.push({ name: `p${start + i}`, area: 'holding', address: start + i * 2, type: 'float32' });
    const { readings, connector } = await connect({ points, poll: 200 }, s.port);
    expect((connector as unknown as { requestsPerPoll: number }).requestsPerPoll).toBe(3);
    await until(() => readings.length >= 2, 5000, 'two polls');
    const before = s.requests;
    const count = readings.length;
    await until(() => readings.length >= count + 2, 5000, 'two more polls');
    expect(s.requests - before).toBeGreaterThanOrEqual(6);
    expect(s.requests - before).toBeLessThanOrEqual(9); // a poll may be in flight at either end
    expect(Object.keys(readings.at(-1)!.values)).toHaveLength(50);
  });

  it('marks a silent device offline with bad values, logs once per episode, and comes back', async () => {
    const s = await server();
    s.unit(1).holding[0] = 42;
    const { lines, log } = capture();
    const { readings, events } = await connect({ points: [{ name: 'v', area: 'holding', address: 0 }] }, s.port, log);
    await until(() => readings.some((r) => r.values.v === 42), 5000, 'a good reading');
    await s.stop();
    await until(() => events.some((e) => e.event?.code === 'DEVICE_OFFLINE'), 5000, 'DEVICE_OFFLINE');
    const offlineAt = readings.length;
    await until(() => readings.length > offlineAt + 5, 5000, 'more polls while offline');
    expect(readings.at(-1)).toMatchObject({ values: { v: null }, quality: { v: 'bad' } });
    const errors = lines.filter((l) => l.includes('"level":40') && l.includes('function 3'));
    expect(errors).toHaveLength(1); // once for the episode, not once per poll
    expect(errors[0]).toMatch(/device meter: unit 1, function 3 \(holding\), address 0, count 1: /);
    await s.resume();
    await until(() => events.some((e) => e.event?.code === 'DEVICE_ONLINE'), 10_000, 'DEVICE_ONLINE');
    await until(() => readings.at(-1)!.values.v === 42, 5000, 'good readings again');
    expect(events.map((e) => [e.event!.code, e.event!.state])).toEqual([
      ['DEVICE_OFFLINE', 'raised'],
      ['DEVICE_ONLINE', 'cleared'],
    ]);
  });

  it('gives the points of a refused read bad quality, keeps the rest, and logs the exception once', async () => {
    const s = await server();
    s.unit(1).holding[0] = 7;
    s.unit(1).refuseReads.add(500);
    const { lines, log } = capture();
    const { readings, events, connector } = await connect({ points: [{ name: 'ok', area: 'holding', address: 0 }, { name: 'gone', area: 'holding', address: 500 }] }, s.port, log);
    await until(() => readings.length >= 5, 5000, 'five polls');
    expect(readings.at(-1)).toEqual({ device: 'meter', ts: expect.any(Number), values: { ok: 7, gone: null }, quality: { gone: 'bad' } });
    expect(connector.online).toBe(true);
    expect(events).toEqual([]);
    // every refused read is counted, though logged once
    expect((connector as unknown as { readErrors: number }).readErrors).toBeGreaterThanOrEqual(5);
    const logged = lines.filter((l) => l.includes('address 500'));
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatch(/device meter: unit 1, function 3 \(holding\), address 500, count 1: .*Illegal data address/);
  });

  it('polls a point with its own poll at its own rate', async () => {
    const s = await server();
    const { readings } = await connect({ poll: 100, points: [{ name: 'fast', area: 'holding', address: 0 }, { name: 'slow', area: 'holding', address: 50, poll: 1000 }] }, s.port);
    await new Promise((r) => setTimeout(r, 2100));
    const fast = readings.filter((r) => 'fast' in r.values).length;
    const slow = readings.filter((r) => 'slow' in r.values).length;
    // in 2.1 s: 21 ticks of 100 ms, and 2 or 3 of 1 s, each rate with one read at start besides
    expect(fast).toBeGreaterThanOrEqual(18);
    expect(slow).toBeGreaterThanOrEqual(2);
    expect(slow).toBeLessThanOrEqual(4);
  });

  it('shares one connection among the units behind one gateway', async () => {
    const s = await server();
    s.unit(1).holding[0] = 11;
    s.unit(2).holding[0] = 22;
    const a = await connect({ id: 'a', unit_id: 1, points: [{ name: 'v', area: 'holding', address: 0 }] }, s.port);
    const b = await connect({ id: 'b', unit_id: 2, points: [{ name: 'v', area: 'holding', address: 0 }] }, s.port);
    await until(() => a.readings.length > 2 && b.readings.length > 2, 5000, 'readings of both');
    expect([a.readings[0].values.v, b.readings[0].values.v]).toEqual([11, 22]);
    const socks = (s as unknown as { server: { socks: Map<unknown, unknown> } }).server.socks;
    expect(socks.size).toBe(1);
  });

  it('writes coils and registers with the point type and order, reads them back, and reports refusals', async () => {
    const s = await server();
    const { connector } = await connect(
      {
        poll: 60_000,
        points: [
          { name: 'breaker', area: 'coil', address: 5, writable: true },
          { name: 'limit', area: 'holding', address: 10, type: 'uint16', writable: true },
          { name: 'setpoint', area: 'holding', address: 20, type: 'float32', order: 'CDAB', scale: 0.5, writable: true },
          { name: 'locked', area: 'holding', address: 30, writable: true },
          { name: 'measured', area: 'input', address: 0, writable: true },
        ],
      },
      s.port,
    );
    await connector.write('breaker', true);
    await connector.write('limit', 1234);
    await connector.write('setpoint', 3);
    const u = s.unit(1);
    expect(u.coils[5]).toBe(1);
    expect(u.holding[10]).toBe(1234);
    expect(Array.from(u.holding.subarray(20, 22))).toEqual([0x0000, 0x40c0]); // 6.0 as float32, CDAB
    u.refuse.add(30);
    await expect(connector.write('locked', 1)).rejects.toThrow(/device meter, point locked: unit 1, function 6, address 30: .*Illegal data address/i);
    await expect(connector.write('measured', 1)).rejects.toThrow('device meter, point measured: input registers are read-only');
    await expect(connector.write('limit', 70000)).rejects.toThrow('device meter, point limit: 70000 is out of range for uint16');
  });

  it('acts on a threshold breach through the agent: the breaker coil is written and an ACTION event goes upstream', async () => {
    const s = await server();
    s.unit(1).holding[0] = 100;
    const dir = mkdtempSync(join(tmpdir(), 'modbus-agent-'));
    const file = join(dir, 'agent.yaml');
    writeFileSync(
      file,
      `agent: { id: gw, data_dir: ${dir}, log_level: warn }
devices:
  - id: meter-1
    protocol: modbus-tcp
    host: 127.0.0.1
    port: ${s.port}
    poll: 50ms
    points:
      - { name: power_kw, area: holding, address: 0, type: uint16 }
      - { name: breaker, area: coil, address: 0, writable: true }
streams:
  - name: overload
    from: { device: meter-1 }
    steps:
      - hysteresis: { emit: "power_kw > 400", release: "power_kw < 350" }
      - event: { code: OVERLOAD, severity: major, description: "power {power_kw} kW" }
    to:
      - file
      - action: { device: meter-1, point: breaker, value: true }
upstream: [{ name: file, type: file, path: out.jsonl }]
`,
    );
    const agent = await startAgent(file, testLog);
    cleanups.push(() => agent.stop());
    await new Promise((r) => setTimeout(r, 300));
    expect(s.unit(1).coils[0]).toBe(0);
    s.unit(1).holding[0] = 450;
    await until(() => s.unit(1).coils[0] === 1, 5000, 'the breaker coil');
    const records = () => readJsonLines(join(dir, 'out.jsonl'));
    await until(() => records().some((r) => r.event?.code === 'ACTION'), 5000, 'the ACTION event');
    expect(records().find((r) => r.event?.code === 'ACTION').event).toMatchObject({ ok: true, point: 'breaker', value: true, written: true, read_back: true, description: 'wrote true to meter-1.breaker; read back true' });
    expect(records().find((r) => r.event?.code === 'OVERLOAD').event).toMatchObject({ description: 'power 450 kW', state: 'raised' });
  });
});

describe('Modbus RTU over a serial line', () => {
  it('polls several slaves on one bus, and dead slaves do not slow the others down', async () => {
    const line = await RtuLine.start([1, 2]);
    cleanups.push(async () => line.stop());
    const serial = { path: line.path, baud: 19200 };
    const device = async (id: string, unit: number) => {
      const readings: Reading[] = [];
      const events: Reading[] = [];
      const connector = await createModbus(
        { id, protocol: 'modbus-rtu', serial, unit_id: unit, poll: 100, timeout: 200, retries: 2, points: [{ name: 'v', area: 'holding', address: 3, type: 'uint16' }] },
        { log: testLog, agentId: 'gw', report: (e) => events.push(e) },
      );
      cleanups.push(() => connector.stop());
      return { connector, readings, events };
    };
    const one = await device('slave-1', 1);
    const two = await device('slave-2', 2);
    const dead = await device('slave-3', 3);
    const dead2 = await device('slave-4', 4);
    const started = Date.now();
    for (const d of [one, two, dead, dead2]) d.connector.start((r) => d.readings.push(r));
    await new Promise((r) => setTimeout(r, 6000));
    // the steady state: from the third second on, once the dead slaves were found out (each
    // timeout costs 200 ms and as long again to drain the line of a late reply: 2 × 2 × 400 ms)
    const from = started + 2000;
    const seconds = (Date.now() - from) / 1000;
    const good = (d: { readings: Reading[] }) => d.readings.filter((r) => r.quality === undefined && r.ts >= from).length;
    expect(one.readings.find((r) => !r.quality)?.values.v).toBe(103);
    expect(two.readings.find((r) => !r.quality)?.values.v).toBe(203);
    expect(dead.events.map((e) => e.event!.code)).toEqual(['DEVICE_OFFLINE']);
    // 10 polls a second are due; a dead slave costs 2 × 400 ms a poll until it is backed off,
    // yet the live slaves keep at least 80 % of their polls
    console.log(`RTU, 4 slaves (two dead), ${seconds.toFixed(1)} s: good readings ${good(one)} and ${good(two)} of ${Math.floor(seconds * 10)} due`);
    expect(good(one)).toBeGreaterThanOrEqual(seconds * 10 * 0.8);
    expect(good(two)).toBeGreaterThanOrEqual(seconds * 10 * 0.8);
    // and no more than the schedule: one poll per period, none twice
    expect(one.readings.filter((r) => r.ts >= from).length).toBeLessThanOrEqual(Math.ceil(seconds * 10) + 1);
  });

  // RTU frames carry no length: a short reply looks like a slow one, so it ends in a timeout
  for (const [fault, message] of [
    ['crc', /CRC error/i],
    ['short', /Timed out/],
  ] as const) {
    it(`logs a reply with ${fault === 'crc' ? 'a wrong CRC' : 'the wrong length'} once, gives bad values, and keeps running`, async () => {
      const line = await RtuLine.start([], fault);
      cleanups.push(async () => line.stop());
      const { lines, log } = capture();
      const readings: Reading[] = [];
      const events: Reading[] = [];
      const connector = await createModbus(
        { id: 'odd', protocol: 'modbus-rtu', serial: { path: line.path, baud: 19200 }, unit_id: 1, poll: 100, timeout: 200, retries: 0, points: [{ name: 'v', area: 'holding', address: 3, type: 'uint32' }] },
        { log, agentId: 'gw', report: (e) => events.push(e) },
      );
      cleanups.push(() => connector.stop());
      connector.start((r) => readings.push(r));
      await until(() => readings.length >= 6, 5000, 'six polls');
      expect(readings.every((r) => r.values.v === null && r.quality?.v === 'bad')).toBe(true);
      const warnings = lines.filter((l) => l.includes('function 3'));
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/device odd: unit 1, function 3 \(holding\), address 3, count 2: /);
      expect(warnings[0]).toMatch(message);
      expect(events.map((e) => e.event!.code)).toEqual(['DEVICE_OFFLINE']);
    });
  }
});
