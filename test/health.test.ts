import { describe, expect, it } from 'vitest';
import { paramError, reading, StepHarness } from './support/steps.js';

const SECOND = 1000;
const t0 = Date.UTC(2026, 0, 5, 10);
const series = (values: (number | null)[], from = 0) => values.map((x, i) => reading(t0 + (from + i) * SECOND, { x }));

describe('anomaly, flatline and capture: state, restarts and bad parameters', () => {
  it('anomaly statistics survive a restart: the spike after it is scored against the window before it', () => {
    for (const method of ['zscore', 'mad', 'ewma'] as const) {
      const step = new StepHarness('anomaly', { point: 'x', method, window: 5, warmup: 5, alpha: 0.3 });
      step.push(...series([10, 11, 10, 11, 10, 10.5]));
      step.restart();
      const out = step.push(...series([30], 6));
      expect(out.map((r) => r.edge), method).toEqual(['raise']);
      expect(out[0].values.x_score as number, method).toBeGreaterThan(10);
    }
  });

  it('anomaly mad scores as the textbook formula does, over random windows (the sorted window kept incrementally)', () => {
    let seed = 7;
    const random = () => ((seed = (seed * 1_103_515_245 + 12_345) & 0x7fffffff) / 0x7fffffff);
    const median = (v: number[]) => {
      const s = [...v].sort((a, b) => a - b);
      return s.length % 2 ? s[s.length >> 1] : (s[(s.length >> 1) - 1] + s[s.length >> 1]) / 2;
    };
    for (const window of [3, 4, 7, 10]) {
      const step = new StepHarness('anomaly', { point: 'x', method: 'mad', window, pass: 'all' });
      const xs = Array.from({ length: 60 }, () => Math.round(random() * 20) / 2);
      const out = step.push(...series(xs));
      xs.forEach((x, i) => {
        if (i < window) return;
        const before = xs.slice(i - window, i);
        const m = median(before);
        const mad = median(before.map((v) => Math.abs(v - m)));
        const sd = mad > 0 ? 1.4826 * mad : 1.2533 * (before.reduce((a, v) => a + Math.abs(v - m), 0) / window);
        const expected = x === m ? 0 : sd > 0 ? Math.abs(x - m) / sd : 1e6;
        expect(out[i].values.x_score, `window ${window}, reading ${i}`).toBeCloseTo(Math.round(expected * 1000) / 1000, 3);
      });
    }
  });

  it('anomaly: missing values are not scored (counted); a constant sensor that moves scores the most a score can', () => {
    const step = new StepHarness('anomaly', { point: 'x', method: 'zscore', window: 3, pass: 'all' });
    const out = step.push(...series([5, 5, null, 5, 6]));
    expect(step.count('missing')).toBe(1);
    expect(out.map((r) => r.values.x_score)).toEqual([undefined, undefined, undefined, undefined, 1e6]);
  });

  it('flatline: a stuck sensor raised before a restart is not raised again after it, and clears when it moves', () => {
    const step = new StepHarness('flatline', { point: 'x', for: 3 * SECOND });
    expect(step.push(...series([7, 7, 7, 7])).map((r) => r.edge)).toEqual(['raise']);
    step.restart();
    expect(step.push(...series([7, 7], 4))).toEqual([]);
    expect(step.push(...series([8], 6)).map((r) => r.edge)).toEqual(['clear']);
  });

  it('capture: a capture under way goes on after a restart; the buffer before a trigger is bounded by max_readings (dropped, counted)', () => {
    const step = new StepHarness('capture', { when: 'x > 100', before: 60 * SECOND, after: 3 * SECOND, max_readings: 4 });
    step.push(...series([1, 2, 3, 4, 5, 6]));
    expect(step.count('dropped')).toBe(2);
    const trigger = step.push(...series([500], 6));
    expect(trigger.map((r) => r.values.x)).toEqual([3, 4, 5, 6, 500]);
    step.restart();
    const after = step.push(...series([7, 8, 9, 10], 7));
    expect(after.map((r) => [r.values.x, r.capture])).toEqual([
      [7, t0 + 6 * SECOND],
      [8, t0 + 6 * SECOND],
      [9, t0 + 6 * SECOND],
    ]);
  });

  it('bad parameters are config errors naming the key', () => {
    expect(paramError('anomaly', { point: 'x', method: 'rate' })).toMatch(/max_rate: method rate needs max_rate/);
    expect(paramError('anomaly', { point: 'x', method: 'zscore', window: 10, warmup: 20 })).toMatch(/warmup: warmup \(20\) cannot be more than the window \(10\)/);
  });
});
