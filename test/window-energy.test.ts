import { describe, expect, it } from 'vitest';
import { Windows } from '../src/operators/window-bounds.js';
import { at, minutes, paramError, reading, StepHarness } from './support/steps.js';

const every = (from: number, to: number, step: number, value: (ts: number, i: number) => number, point = 'p') => {
  const out = [];
  for (let ts = from, i = 0; ts <= to; ts += step, i++) out.push(reading(ts, { [point]: value(ts, i) }));
  return out;
};

describe('window', () => {
  const functions = { p: ['avg', 'min', 'max', 'sum', 'count', 'first', 'last', 'delta', 'integral'] };

  it('tumbling: emits every function when a reading past the end arrives', () => {
    const step = new StepHarness('window', { size: minutes(15), functions });
    // one reading a minute from 10:00 to 10:14, rising 1 per minute
    expect(step.push(...every(at('10:00'), at('10:14'), minutes(1), (_, i) => 10 + i))).toEqual([]);
    const [out] = step.push(reading(at('10:15'), { p: 100 }));
    expect(out).toEqual({
      device: 'm1',
      ts: at('10:00'),
      // delta and integral run to the window's end, 10:15, where the reading of 100 is
      values: { p_avg: 17, p_min: 10, p_max: 24, p_sum: 255, p_count: 15, p_first: 10, p_last: 24, p_delta: 90, p_integral: expect.closeTo((17 * 14) / 60 + (24 + 100) / 2 / 60, 9) },
      quality: undefined,
    });
  });

  it('marks a window partial when its readings cover under 90% of it', () => {
    const step = new StepHarness('window', { size: minutes(15), functions: { p: ['avg'] } });
    step.push(...every(at('10:00'), at('10:06'), minutes(1), () => 5));
    const [out] = step.push(reading(at('10:15'), { p: 1 }));
    expect(out.quality).toEqual({ p_avg: 'partial' });
  });

  it('hopping: every reading counts in each window that holds it', () => {
    const step = new StepHarness('window', { size: minutes(10), every: minutes(5), functions: { p: ['count', 'sum'] } });
    step.push(...every(at('10:00'), at('10:14'), minutes(1), () => 1));
    step.push(reading(at('10:20'), { p: 0 }));
    expect(step.out.map((r) => [new Date(r.ts).toISOString().slice(11, 16), r.values.p_count])).toEqual([
      ['09:55', 5],
      ['10:00', 10],
      ['10:05', 10],
      ['10:10', 5],
    ]);
  });

  it('drops readings later than lateness for a closed window, and counts them', () => {
    const step = new StepHarness('window', { size: minutes(15), lateness: minutes(2), functions: { p: ['count'] } });
    step.push(reading(at('10:00'), { p: 1 }), reading(at('10:16'), { p: 1 }));
    expect(step.push(reading(at('10:14'), { p: 1 }))).toEqual([]); // within lateness: still counted
    expect(step.push(reading(at('10:17'), { p: 1 })).map((r) => r.values.p_count)).toEqual([2]);
    expect(step.push(reading(at('10:10'), { p: 1 }))).toEqual([]);
    expect(step.count('late')).toBe(1);
  });

  it('closes the window of a silent device on the clock at end + lateness + size', () => {
    const step = new StepHarness('window', { size: minutes(15), functions: { p: ['avg'] } });
    step.push(...every(at('10:00'), at('10:14'), minutes(1), () => 3));
    expect(step.tick(at('10:29'))).toEqual([]);
    expect(step.tick(at('10:30')).map((r) => r.values.p_avg)).toEqual([3]);
  });

  it('does not aggregate missing values, and emits nothing for an empty window', () => {
    const step = new StepHarness('window', { size: minutes(15), functions: { p: ['avg', 'count'] } });
    step.push(reading(at('10:00'), { p: 2 }), reading(at('10:01'), { p: NaN }), reading(at('10:02'), { p: null }), reading(at('10:03'), { p: 4 }));
    expect(step.push(reading(at('10:15'), { q: 1 })).map((r) => r.values)).toEqual([{ p_avg: 3, p_count: 2 }]);
    expect(step.count('missing')).toBe(2);
    expect(step.push(reading(at('10:45'), { q: 1 }))).toEqual([]);
  });

  it('continues a window across a restart, and emits one that ended while down as partial', () => {
    const step = new StepHarness('window', { size: minutes(15), functions: { p: ['count', 'sum'] } });
    step.push(...every(at('10:00'), at('10:07'), minutes(1), () => 1));
    step.restart();
    step.push(...every(at('10:08'), at('10:14'), minutes(1), () => 1));
    expect(step.push(reading(at('10:15'), { p: 1 })).map((r) => r.values)).toEqual([{ p_count: 15, p_sum: 15 }]);

    step.restart(); // down from 10:15 to 10:40: the 10:15 window ended meanwhile
    const out = step.tick(at('10:40'));
    expect(out).toEqual([{ device: 'm1', ts: at('10:15'), values: { p_count: 1, p_sum: 1 }, quality: { p_count: 'partial', p_sum: 'partial' } }]);
  });

  it('rejects bad parameters', () => {
    expect(paramError('window', { size: -1, functions })).toBe('size: size must be positive');
    expect(paramError('window', { size: minutes(5), every: minutes(10), functions })).toBe('size: every (600000 ms) must not exceed size (300000 ms)');
  });
});

/** The energy readings among what a step emitted (readings pass through it too). */
const kwhOf = (step: StepHarness) => step.out.filter((r) => 'kwh' in r.values);

describe('energy: meter-reading', () => {
  it('splits a step across a boundary by time: 23:45=1200, 00:15=1204 → 2 and 2 (the operators.md example)', () => {
    const step = new StepHarness('energy', { method: 'meter-reading', point: 'e', window: 86_400_000, output: 'kwh' });
    step.push(reading(at('00:00', 4), { e: 1000 }), reading(at('23:45', 4), { e: 1200 }));
    step.push(reading(at('00:15', 5), { e: 1204 }));
    const [day] = kwhOf(step);
    expect(day.ts).toBe(at('00:00', 4));
    expect(day.values.kwh).toBeCloseTo(202, 9); // 200 during the day + 2 of the step over midnight
    step.push(reading(at('23:59', 5), { e: 1300 }), reading(at('00:00', 6), { e: 1300 }));
    const [, next] = kwhOf(step);
    expect(next.values.kwh).toBeCloseTo(2 + 96, 9);
  });

  it('applies scale, rejects steps outside [0, max_rate] and moves the baseline', () => {
    const step = new StepHarness('energy', { method: 'meter-reading', point: 'e', window: minutes(15), output: 'kwh', scale: 0.01, max_rate: 1000 });
    step.push(reading(at('10:00'), { e: 100_000 }), reading(at('10:05'), { e: 101_000 })); // 10 kWh in 5 min: 120 kW
    step.push(reading(at('10:06'), { e: 9_000_000 })); // 89,990 kWh in a minute: rejected
    step.push(reading(at('10:15'), { e: 9_001_000 }));
    const [w] = kwhOf(step);
    expect(w.values.kwh).toBeCloseTo(20, 9);
    expect(step.count('rejected')).toBe(1);
  });

  it('counts a rollover as R - v1 + v2, and a reset as v2, flagged', () => {
    const rolling = new StepHarness('energy', { method: 'meter-reading', point: 'e', window: minutes(15), output: 'kwh', rollover: 100_000 });
    rolling.push(reading(at('10:00'), { e: 99_990 }), reading(at('10:10'), { e: 5 }), reading(at('10:15'), { e: 5 }));
    expect(kwhOf(rolling)[0].values.kwh).toBeCloseTo(15, 9);
    expect(rolling.count('rollovers')).toBe(1);

    const reset = new StepHarness('energy', { method: 'meter-reading', point: 'e', window: minutes(15), output: 'kwh', rollover: 100_000 });
    reset.push(reading(at('10:00'), { e: 5000 }), reading(at('10:10'), { e: 3 }), reading(at('10:15'), { e: 4 }));
    expect(kwhOf(reset)[0]).toMatchObject({ values: { kwh: 4 }, quality: { kwh: 'estimated' } });
    expect(reset.count('resets')).toBe(1);
  });

  it('passes every reading on', () => {
    const step = new StepHarness('energy', { method: 'meter-reading', point: 'e', window: minutes(15), output: 'kwh' });
    expect(step.push(reading(at('10:00'), { e: 1, p: 3 }), reading(at('10:01'), { p: 4 }), reading(at('10:02'), { e: null }))).toHaveLength(3);
  });

  it('drops a step with Δt ≤ 0 and keeps the baseline', () => {
    const step = new StepHarness('energy', { method: 'meter-reading', point: 'e', window: minutes(15), output: 'kwh' });
    step.push(reading(at('10:00'), { e: 10 }), reading(at('10:00'), { e: 50 }), reading(at('09:59'), { e: 60 }), reading(at('10:15'), { e: 12 }));
    expect(kwhOf(step)[0].values.kwh).toBeCloseTo(2, 9);
    expect(step.count('dropped')).toBe(2);
  });

  it('counts energy exactly once across a restart in the middle of a window', () => {
    const step = new StepHarness('energy', { method: 'meter-reading', point: 'e', window: minutes(15), output: 'kwh' });
    step.push(...every(at('10:00'), at('10:06'), minutes(1), (_, i) => 100 + i, 'e'));
    step.restart();
    step.push(...every(at('10:07'), at('10:30'), minutes(1), (_, i) => 107 + i, 'e'));
    expect(kwhOf(step).map((r) => r.values.kwh)).toEqual([15, 15]);
    expect(kwhOf(step).every((r) => r.quality === undefined)).toBe(true);
  });

  it('keeps the energy of a window the clock closed while the device was silent', () => {
    const step = new StepHarness('energy', { method: 'meter-reading', point: 'e', window: minutes(15), output: 'kwh' });
    step.push(reading(at('10:00'), { e: 0 }), reading(at('10:05'), { e: 5 }));
    const [closed] = step.tick(at('10:30'));
    expect(closed).toMatchObject({ ts: at('10:00'), values: { kwh: 5 }, quality: { kwh: 'partial' } });
    step.push(reading(at('10:40'), { e: 40 }), reading(at('10:45'), { e: 45 }));
    const total = kwhOf(step).reduce((sum, r) => sum + (r.values.kwh as number), 0);
    expect(total).toBeCloseTo(45, 9);
    expect(step.count('late')).toBe(1);
  });
});

describe('energy: instant-power', () => {
  it('integrates by the trapezoid rule: 100 → 120 kW over 5 min = 9.167 kWh (the operators.md example)', () => {
    const step = new StepHarness('energy', { method: 'instant-power', point: 'p', window: minutes(5), output: 'kwh' });
    step.push(reading(at('10:00'), { p: 100 }), reading(at('10:05'), { p: 120 }));
    const [out] = kwhOf(step);
    expect(out.values.kwh).toBeCloseTo(9.1667, 4);
    expect(out.quality).toBeUndefined();
  });

  it('splits at a boundary with the power interpolated there', () => {
    const step = new StepHarness('energy', { method: 'instant-power', point: 'p', window: minutes(15), output: 'kwh' });
    step.push(reading(at('10:10'), { p: 0 }), reading(at('10:20'), { p: 60 }), reading(at('10:30'), { p: 60 }));
    const [first, second] = kwhOf(step);
    expect(first.values.kwh).toBeCloseTo(((0 + 30) / 2) * (5 / 60), 9);
    expect(first.quality).toEqual({ kwh: 'partial' }); // 10:00–10:10 had no readings
    expect(second.values.kwh).toBeCloseTo(((30 + 60) / 2) * (5 / 60) + 60 * (10 / 60), 9);
  });

  it('adds nothing over a gap longer than max_gap and marks the window partial', () => {
    const step = new StepHarness('energy', { method: 'instant-power', point: 'p', window: minutes(60), output: 'kwh', max_gap: minutes(15) });
    step.push(...['10:00', '10:10', '10:40', '10:50', '11:00'].map((t) => reading(at(t), { p: 60 })));
    expect(kwhOf(step)[0]).toMatchObject({ values: { kwh: expect.closeTo(30, 9) }, quality: { kwh: 'partial' } });
    expect(step.count('gaps')).toBe(1);
  });
});

describe('energy: average-power', () => {
  it('200 kW over 15 min = 50 kWh (the operators.md example)', () => {
    const step = new StepHarness('energy', { method: 'average-power', point: 'p', window: minutes(15), output: 'kwh' });
    step.push(reading(at('10:00'), { p: 200 }), reading(at('10:15'), { p: 100 }));
    const [out] = kwhOf(step);
    expect(out).toEqual({ device: 'm1', ts: at('10:00'), values: { kwh: 50 }, quality: undefined });
  });
});

describe('windows in a timezone', () => {
  it('aligns a day to local midnight, 23 hours on the spring DST change', () => {
    const windows = new Windows(86_400_000, 86_400_000, 'Europe/Berlin');
    const start = windows.startOf(Date.UTC(2026, 2, 29, 12));
    expect(new Date(start).toISOString()).toBe('2026-03-28T23:00:00.000Z');
    expect((windows.end(start) - start) / 3_600_000).toBe(23);
    expect(new Date(windows.startOf(Date.UTC(2026, 2, 28, 22, 59))).toISOString()).toBe('2026-03-27T23:00:00.000Z');
  });
});
