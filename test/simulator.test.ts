import { describe, expect, it } from 'vitest';
import { createSimulator } from '../src/connectors/simulator/simulator.js';
import { signalOf } from '../src/connectors/simulator/signals.js';
import type { DeviceConfig } from '../src/config/types.js';
import type { Reading } from '../src/core/reading.js';
import { testLog } from './support/log.js';
import { until } from './support/ports.js';

describe('simulator signals', () => {
  it('sine stays within [min, max] and repeats with its period', () => {
    const sine = signalOf({ name: 'p', signal: 'sine', min: 10, max: 90, period: 600_000 });
    const values = Array.from({ length: 600 }, (_, i) => sine(i * 1000) as number);
    expect(Math.min(...values)).toBeGreaterThanOrEqual(10);
    expect(Math.max(...values)).toBeLessThanOrEqual(90);
    expect(Math.max(...values) - Math.min(...values)).toBeGreaterThan(79);
    expect(sine(123_000)).toBe(sine(723_000));
  });

  it('counter rises by rate per hour and never falls, across restarts too', () => {
    const counter = signalOf({ name: 'e', signal: 'counter', rate: 50 });
    const t = Date.UTC(2026, 0, 1);
    expect((counter(t + 3_600_000) as number) - (counter(t) as number)).toBeCloseTo(50, 6);
    // A second instance (an agent restart) continues from the same value.
    const again = signalOf({ name: 'e', signal: 'counter', rate: 50 });
    expect(again(t)).toBe(counter(t));
  });

  it('random walks within bounds by at most step', () => {
    const walk = signalOf({ name: 'v', signal: 'random', min: 225, max: 235, step: 0.5 });
    let previous = walk(0) as number;
    for (let i = 1; i < 2000; i++) {
      const value = walk(i) as number;
      expect(value).toBeGreaterThanOrEqual(225);
      expect(value).toBeLessThanOrEqual(235);
      expect(Math.abs(value - previous)).toBeLessThanOrEqual(0.5 + 1e-9);
      previous = value;
    }
  });

  it('step alternates between min and max every period; constant holds its value', () => {
    const step = signalOf({ name: 's', signal: 'step', min: 0, max: 1, period: 1000 });
    expect([step(0), step(999), step(1000), step(2500)]).toEqual([0, 0, 1, 0]);
    expect(signalOf({ name: 'b', value: true })(0)).toBe(true);
  });
});

describe('simulator connector', () => {
  const device: DeviceConfig = {
    id: 'sim',
    protocol: 'simulator',
    poll: 20,
    points: [
      { name: 'p', signal: 'sine' },
      { name: 'breaker', signal: 'constant', value: true, writable: true },
    ],
  };

  it('reads at start, then on poll multiples, and reports written values of writable points', async () => {
    const connector = await createSimulator(device, { log: testLog, agentId: 'gw' });
    const readings: Reading[] = [];
    const before = Date.now();
    connector.start((r) => readings.push(r));
    const after = Date.now();
    await until(() => readings.length >= 4, 2000, 'four readings');
    // the first at once (or the tick due then, when the start came late for it), the others on ticks
    expect(readings[0].ts).toBeGreaterThanOrEqual(before);
    expect(readings[0].ts).toBeLessThanOrEqual(after + 20);
    const ticks = readings.slice(1).map((r) => r.ts);
    expect(ticks.every((ts) => ts % 20 === 0)).toBe(true);
    // (a stalled test process may skip a tick: increasing, not exactly 20 apart)
    expect(ticks.every((ts, i) => i === 0 || ts > ticks[i - 1])).toBe(true);
    // no two readings closer than a poll: the tick right after the start's reading is skipped
    expect(ticks[0] - readings[0].ts).toBeGreaterThanOrEqual(20);
    expect(readings[0].values.breaker).toBe(true);
    await connector.write('breaker', false);
    const count = readings.length;
    await until(() => readings.length > count + 1, 2000, 'a reading after the write');
    expect(readings.at(-1)!.values.breaker).toBe(false);
    await expect(connector.write('p', 3)).rejects.toThrow('device sim, point p: the point is not writable');
    await expect(connector.write('nope', 3)).rejects.toThrow('device sim, point nope: no such point');
    await connector.stop();
  });
});
