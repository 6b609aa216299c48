import { afterEach, describe, expect, it, vi } from 'vitest';
import { acquireBus, releaseBus } from '../src/connectors/modbus/bus.js';
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
