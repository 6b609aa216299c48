import { fillDefaults } from '../../core/config-kit.js';
import { simulatorPoint, type SimulatorPointConfig } from './config.js';
import type { Value } from '../../core/reading.js';

export type Signal = (ts: number) => Value;

const HOUR = 3_600_000;
/** Counters count from here, so a simulated meter keeps rising across restarts like a real one. */
const COUNTER_EPOCH = Date.UTC(2025, 0, 1);

/**
 * - sine: between min and max with the given period
 * - counter: start + rate per hour since 2025-01-01 UTC (monotonic, for energy meters)
 * - random: a random walk between min and max, moving at most `step` per reading
 * - step: alternates between min and max every period
 * - constant: `value` (the default, e.g. for a writable breaker)
 */
export function signalOf(input: Partial<SimulatorPointConfig> & { name: string }): Signal {
  const point = fillDefaults(simulatorPoint, { ...input });
  const { min, max, period } = point;
  switch (point.signal) {
    case 'sine':
      return (ts) => round(min + ((max - min) * (1 + Math.sin((2 * Math.PI * ts) / period))) / 2);
    case 'counter': {
      const start = point.start ?? 0;
      const rate = point.rate;
      return (ts) => round(start + (rate * (ts - COUNTER_EPOCH)) / HOUR);
    }
    case 'random': {
      const step = point.step ?? (max - min) / 100;
      let value = point.start ?? (min + max) / 2;
      return () => {
        value = Math.min(max, Math.max(min, value + (Math.random() * 2 - 1) * step));
        return round(value);
      };
    }
    case 'step':
      return (ts) => (Math.floor(ts / period) % 2 === 0 ? min : max);
    case 'constant':
      return () => point.value;
  }
}

/** Meters report a fixed number of decimals; so does the simulator. */
function round(value: number): number {
  return Math.round(value * 1000) / 1000;
}
