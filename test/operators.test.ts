import { describe, expect, it } from 'vitest';
import { at, minutes, paramError, reading, StepHarness } from './support/steps.js';

const values = (rs: { values: Record<string, unknown> }[], point: string) => rs.map((r) => r.values[point]);

describe('threshold', () => {
  it('linear: holds an outlier until the next good value and interpolates it (the operators.md example)', () => {
    const step = new StepHarness('threshold', { point: 'p', min: 0, max: 100, fill: 'linear' });
    expect(values(step.push(reading(at('10:00'), { p: 50 })), 'p')).toEqual([50]);
    expect(step.push(reading(at('10:01'), { p: 120 }))).toEqual([]);
    const out = step.push(reading(at('10:02'), { p: 60 }));
    expect(out).toEqual([
      { device: 'm1', ts: at('10:01'), values: { p: 55 }, quality: { p: 'interpolated' } },
      { device: 'm1', ts: at('10:02'), values: { p: 60 } },
    ]);
    expect(step.count('outliers')).toBe(1);
  });

  it('linear: after max_hold without a good value, emits the held reading as previous would', () => {
    const step = new StepHarness('threshold', { point: 'p', max: 100, fill: 'linear', max_hold: minutes(5) });
    step.push(reading(at('10:00'), { p: 50 }), reading(at('10:01'), { p: 120 }), reading(at('10:02'), { p: 130 }));
    expect(step.tick(at('10:05'))).toEqual([]);
    expect(step.tick(at('10:06'))).toEqual([
      { device: 'm1', ts: at('10:01'), values: { p: 50 }, quality: { p: 'estimated' } },
      { device: 'm1', ts: at('10:02'), values: { p: 50 }, quality: { p: 'estimated' } },
    ]);
  });

  it('linear: a held reading survives a restart and is interpolated afterwards', () => {
    const step = new StepHarness('threshold', { point: 'p', max: 100, fill: 'linear' });
    step.push(reading(at('10:00'), { p: 40 }), reading(at('10:01'), { p: 500 }));
    step.restart();
    expect(values(step.push(reading(at('10:02'), { p: 60 })), 'p')).toEqual([50, 60]);
  });

  it('previous: replaces an outlier at once with the last good value, quality estimated', () => {
    const step = new StepHarness('threshold', { point: 'p', min: 0, max: 100, fill: 'previous' });
    expect(step.push(reading(1, { p: 50 }), reading(2, { p: -5 }), reading(3, { p: 70 }))).toEqual([
      reading(1, { p: 50 }),
      { device: 'm1', ts: 2, values: { p: 50 }, quality: { p: 'estimated' } },
      reading(3, { p: 70 }),
    ]);
  });

  it('none: drops the outlier value (counted) and lets the other values of the reading go on', () => {
    const step = new StepHarness('threshold', { point: 'p', max: 100 });
    expect(step.push(reading(1, { p: 50 }), reading(2, { p: 150, q: 1 }), reading(3, { p: 150 }))).toEqual([reading(1, { p: 50 }), reading(2, { q: 1 })]);
    expect(step.count('dropped')).toBe(2);
  });

  it('drops an outlier with no earlier good value, whatever the fill', () => {
    for (const fill of ['none', 'previous', 'linear']) {
      const step = new StepHarness('threshold', { point: 'p', max: 100, fill });
      expect(step.push(reading(1, { p: 500 })), fill).toEqual([]);
      expect(step.count('dropped')).toBe(1);
    }
  });

  it('passes missing values (NaN, null, bad) unjudged and counts them; other devices have their own state', () => {
    const step = new StepHarness('threshold', { point: 'p', max: 100, fill: 'previous' });
    const bad = reading(2, { p: 500 }, 'm1', { quality: { p: 'bad' } });
    expect(step.push(reading(1, { p: NaN }), reading(1, { p: null }), bad)).toHaveLength(3);
    expect(step.count('missing')).toBe(3);
    step.push(reading(3, { p: 10 }, 'm1'));
    expect(step.push(reading(4, { p: 500 }, 'm2'))).toEqual([]); // m2 has no good value yet
  });

  it('rejects bad parameters', () => {
    expect(paramError('threshold', { point: 'p', min: 10, max: 5 })).toBe('min: min (10) is greater than max (5)');
    expect(paramError('threshold', { point: 'p' })).toBe(': needs min, max or both');
  });
});

describe('filter', () => {
  it('passes readings for which the expression is true, using the latest values', () => {
    const step = new StepHarness('filter', 'p > 10 and mode == "auto"');
    step.push(reading(1, { mode: 'auto' }));
    expect(values(step.push(reading(2, { p: 5 }), reading(3, { p: 15 })), 'p')).toEqual([15]);
    expect(step.count('dropped')).toBe(2);
  });

  it('rejects a syntax error at load with the column', () => {
    expect(paramError('filter', 'p > > 1')).toBe(': expression "p > > 1": column 5: expected a value but found ">"');
  });
});

describe('change', () => {
  it('deadband 0.5: 20.0 pass, 20.3 drop, 20.6 pass, 20.2 drop (the operators.md example)', () => {
    const step = new StepHarness('change', { point: 't', deadband: 0.5 });
    expect(values(step.push(...[20.0, 20.3, 20.6, 20.2].map((t, i) => reading(i, { t }))), 't')).toEqual([20.0, 20.6]);
  });

  it('deadband 0 passes any change; a percentage is of the last passed value', () => {
    const any = new StepHarness('change', { point: 't' });
    expect(values(any.push(...[1, 1, 2, 2, 1].map((t, i) => reading(i, { t }))), 't')).toEqual([1, 2, 1]);
    const pct = new StepHarness('change', { point: 't', deadband: '2%' });
    expect(values(pct.push(...[100, 101.5, 102.5, 104.4, 104.6].map((t, i) => reading(i, { t }))), 't')).toEqual([100, 102.5, 104.6]);
  });

  it('drops a reading without the point (or with it missing) and leaves the state alone', () => {
    const step = new StepHarness('change', { point: 't', deadband: 0.5 });
    expect(values(step.push(reading(1, { t: 20 }), reading(2, { x: 1 }), reading(3, { t: NaN }), reading(4, { t: 20.2 })), 't')).toEqual([20]);
    expect(step.count('missing')).toBe(2);
  });

  it('passes non-numeric values when they change, keeps state per key and across a restart', () => {
    const step = new StepHarness('change', { point: 's' });
    expect(values(step.push(...['on', 'on', 'off'].map((s, i) => reading(i, { s }))), 's')).toEqual(['on', 'off']);
    expect(step.push(reading(5, { s: 'off' }, 'm2'))).toHaveLength(1);
    step.restart();
    expect(step.push(reading(6, { s: 'off' }))).toEqual([]);
  });
});

describe('sampler', () => {
  it('2m on the server clock: 11:27:00 pass, 11:28:00 drop, 11:29:05 pass (the operators.md example)', () => {
    const step = new StepHarness('sampler', { interval: minutes(2) });
    const arrive = (hhmmss: string) => {
      step.clock = at(hhmmss);
      return step.push(reading(0, { p: 1 })).length; // ts ignored on the server clock
    };
    expect([arrive('11:27:00'), arrive('11:28:00'), arrive('11:29:05')]).toEqual([1, 0, 1]);
  });

  it('clock: data measures on ts; keys are separate', () => {
    const step = new StepHarness('sampler', { interval: minutes(2), clock: 'data' });
    const out = step.push(reading(at('11:27'), { p: 1 }), reading(at('11:28'), { p: 2 }), reading(at('11:28'), { p: 3 }, 'm2'), reading(at('11:29'), { p: 4 }));
    expect(out.map((r) => r.values.p)).toEqual([1, 3, 4]);
  });
});

describe('hysteresis', () => {
  it('95 –, 105 emit, 98 –, 110 –, 79 re-arm, 101 emit (the operators.md example)', () => {
    const step = new StepHarness('hysteresis', { emit: 'rpm > 100', release: 'rpm < 80' });
    const out = step.push(...[95, 105, 98, 110, 79, 101].map((rpm, i) => reading(i, { rpm })));
    expect(out.map((r) => [r.values.rpm, r.edge])).toEqual([
      [105, 'raise'],
      [101, 'raise'],
    ]);
  });

  it('marks the release as a clearing edge with on_release', () => {
    const step = new StepHarness('hysteresis', { emit: 'rpm > 100', release: 'rpm < 80', on_release: true });
    const out = step.push(...[105, 79, 101].map((rpm, i) => reading(i, { rpm })));
    expect(out.map((r) => [r.values.rpm, r.edge])).toEqual([
      [105, 'raise'],
      [79, 'clear'],
      [101, 'raise'],
    ]);
  });

  it('without release passes every reading for which emit is true', () => {
    const step = new StepHarness('hysteresis', { emit: 'rpm > 100' });
    expect(step.push(...[105, 110, 90, 120].map((rpm, i) => reading(i, { rpm }))).length).toBe(3);
  });

  it('keeps its state across a restart: no edge fires twice', () => {
    const step = new StepHarness('hysteresis', { emit: 'rpm > 100', release: 'rpm < 80' });
    expect(step.push(reading(1, { rpm: 105 }))).toHaveLength(1);
    step.restart();
    expect(step.push(reading(2, { rpm: 110 }))).toEqual([]);
    expect(step.push(reading(3, { rpm: 70 }), reading(4, { rpm: 101 }))).toHaveLength(1);
  });

  it('keeps one state per device', () => {
    const step = new StepHarness('hysteresis', { emit: 'rpm > 100', release: 'rpm < 80' });
    expect(step.push(reading(1, { rpm: 105 }, 'a'), reading(1, { rpm: 105 }, 'b'), reading(2, { rpm: 110 }, 'a')).map((r) => r.device)).toEqual(['a', 'b']);
  });
});

describe('event', () => {
  it('fills the description and fields, and follows the edge', () => {
    const step = new StepHarness('event', { code: 'OVERLOAD', severity: 'major', description: 'power {power_kw} kW at {site}', fields: { over: 'power_kw - 400', gone: 'nope + 1' } });
    const [raised, cleared] = step.push(reading(1, { power_kw: 420 }, 'm1', { edge: 'raise' }), reading(2, { power_kw: 340 }, 'm1', { edge: 'clear' }));
    expect(raised.event).toEqual({ code: 'OVERLOAD', severity: 'major', description: 'power 420 kW at ?', state: 'raised', over: 20, gone: null });
    expect(raised.values).toEqual({ power_kw: 420 });
    expect(cleared.event).toMatchObject({ state: 'cleared', description: 'power 340 kW at ?' });
  });

  it('rejects a bad field expression at load', () => {
    expect(paramError('event', { code: 'X', fields: { a: 'p +' } })).toBe('fields: expression "p +": column 4: expected a value but found the end');
  });
});
