import { queryObjects } from 'node:v8';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { acquireBus, releaseBus, type Client } from '../src/connectors/modbus/bus.js';
import { testLog } from './support/log.js';
import { ModbusServer } from './support/modbus-server.js';

const YEAR = 365 * 86_400_000;
const timedOut = () => Promise.reject(Object.assign(new Error('Timed out'), { errno: 'ETIMEDOUT' }));

afterEach(() => {
  vi.useRealTimers();
});

describe('Modbus bus under a stepped wall clock', () => {
  it('tries a backed-off unit again after its backoff even when the clock steps a year back meanwhile', async () => {
    const server = await ModbusServer.start();
    const bus = acquireBus({ tcp: { host: '127.0.0.1', port: server.port } }, testLog);
    try {
      // two timeouts in a row: the unit is skipped for 5 s
      await expect(bus.request(7, 200, timedOut)).rejects.toThrow(/Timed out/);
      await expect(bus.request(7, 200, timedOut)).rejects.toThrow(/Timed out/);
      await expect(bus.request(7, 200, async () => 'asked')).rejects.toThrow(/unit 7 is backed off/);
      // NTP steps the wall clock back a year; only Date is faked, timers stay real
      vi.useFakeTimers({ toFake: ['Date'], now: Date.now() - YEAR });
      await new Promise((r) => setTimeout(r, 5500));
      expect(await bus.request(7, 200, async () => 'asked')).toBe('asked');
    } finally {
      releaseBus(bus);
      await server.stop();
    }
  });
});

describe('Modbus bus memory', () => {
  it('keeps no finished request in the client: modbus-serial held the last 256 with their replies', async () => {
    const server = await ModbusServer.start();
    const bus = acquireBus({ tcp: { host: '127.0.0.1', port: server.port } }, testLog);
    try {
      let client: Client | undefined;
      for (let i = 0; i < 300; i++) {
        const reply = await bus.request(1, 1000, (c) => ((client = c), c.readHoldingRegisters(0, 50)));
        expect(reply.data).toHaveLength(50);
      }
      const table = (client as unknown as { _transactions: Record<number, unknown> })._transactions;
      expect(Object.keys(table)).toEqual([]);
    } finally {
      releaseBus(bus);
      await server.stop();
    }
  });

  it('holds no promise per request once it settled (a race with the bus closing kept each one)', async () => {
    const server = await ModbusServer.start();
    const bus = acquireBus({ tcp: { host: '127.0.0.1', port: server.port } }, testLog);
    try {
      const read = () => bus.request(1, 1000, (c) => c.readHoldingRegisters(0, 50));
      for (let i = 0; i < 10; i++) await read();
      const before = queryObjects(Promise, { format: 'count' });
      for (let i = 0; i < 1000; i++) await read();
      // on 0abb571: about 2 more promises for each request
      expect(queryObjects(Promise, { format: 'count' }) - before).toBeLessThan(100);
    } finally {
      releaseBus(bus);
      await server.stop();
    }
  });
});
