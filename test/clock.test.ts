import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { startTimer, TimerSchedule } from '../src/connectors/timer/timer.js';
import { ClockGuard, ClockSync } from '../src/core/clock.js';
import { everyTick, MAX_WAIT, schedule } from '../src/core/schedule.js';
import { ActionSink } from '../src/streams/action.js';
import type { Reading } from '../src/core/reading.js';
import { at, minutes, reading, StepHarness } from './support/steps.js';

const SECOND = 1000;
const DAY = 86_400_000;
const YEAR = 365 * DAY;

/**
 * vitest's fake timers model an NTP step exactly: `setSystemTime` moves Date.now() while the
 * timers (and performance.now()) go on in monotonic time. So the scheduler runs as it does in
 * the agent, through the system clock, and the test steps the wall clock under it.
 */
describe('the scheduler across steps of the wall clock', () => {
  let delays: number[];
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date', 'performance'] });
    vi.setSystemTime(Date.UTC(2026, 0, 5, 10, 0, 0, 300));
    delays = [];
    const fakeSetTimeout = globalThis.setTimeout;
    vi.spyOn(globalThis, 'setTimeout').mockImplementation(((fn: () => void, ms?: number) => {
      delays.push(ms ?? 0);
      return fakeSetTimeout(fn, ms);
    }) as typeof setTimeout);
  });
  afterEach(() => {
    vi.restoreAllMocks();
    vi.useRealTimers();
  });

  function run(timer: { every?: number; cron?: string }) {
    const ticks: { due: number; wall: number }[] = [];
    const stop = startTimer(new TimerSchedule(timer), (due) => ticks.push({ due, wall: Date.now() }));
    return { ticks, stop };
  }

  it('aligns every: 15m to :00 :15 :30 :45, waiting at most MAX_WAIT at a time', () => {
    const { ticks, stop } = run({ every: minutes(15) });
    vi.advanceTimersByTime(minutes(61));
    stop();
    expect(ticks.map((t) => new Date(t.due).toISOString().slice(11, 16))).toEqual(['10:15', '10:30', '10:45', '11:00']);
    for (const t of ticks) expect(t.wall).toBe(t.due);
    expect(Math.max(...delays)).toBeLessThanOrEqual(MAX_WAIT);
  });

  it('a step back by 120 s: polls go on every second, aligned to the new time (no silence)', () => {
    const { ticks, stop } = run({ every: SECOND });
    vi.advanceTimersByTime(5 * SECOND);
    const before = ticks.length;
    const stepAt = Date.now();
    vi.setSystemTime(stepAt - 120 * SECOND);
    vi.advanceTimersByTime(10 * SECOND);
    stop();
    const after = ticks.slice(before);
    // one tick may be lost to the re-alignment; none of 120 s of silence
    expect(after.length).toBeGreaterThanOrEqual(9);
    for (const t of after) {
      expect(t.due).toBeLessThan(stepAt - 100 * SECOND);
      expect(t.due % SECOND).toBe(0);
    }
  });

  it('a step back by 30 days (past the 24.8-day timer limit): no flood, no overflow, ticks go on', () => {
    const { ticks, stop } = run({ every: SECOND });
    vi.advanceTimersByTime(3 * SECOND);
    const before = ticks.length;
    vi.setSystemTime(Date.now() - 30 * DAY);
    vi.advanceTimersByTime(10 * SECOND);
    stop();
    const after = ticks.length - before;
    expect(after).toBeGreaterThanOrEqual(9);
    expect(after).toBeLessThanOrEqual(11);
    expect(Math.max(...delays)).toBeLessThanOrEqual(MAX_WAIT);
  });

  it('an hourly cron after a step back by 30 days ticks at the next hour of the new time', () => {
    const { ticks, stop } = run({ cron: '0 * * * *' });
    vi.advanceTimersByTime(minutes(5));
    vi.setSystemTime(Date.now() - 30 * DAY);
    vi.advanceTimersByTime(minutes(65));
    stop();
    expect(ticks).toHaveLength(1);
    expect(ticks[0].due).toBe(Date.UTC(2025, 11, 6, 11, 0, 0));
    // it fired at its time (a minute of hops at most late), not 30 days later
    expect(ticks[0].wall - ticks[0].due).toBeLessThan(MAX_WAIT);
    expect(Math.max(...delays)).toBeLessThanOrEqual(MAX_WAIT);
  });

  it('the min_interval of an action is a span: a step back by 30 days does not mute it', () => {
    const writes: number[] = [];
    const action = new ActionSink({ device: 'plc', point: 'trip', value: true, min_interval: minutes(1) }, async () => void writes.push(Date.now()), () => {}, pino({ level: 'silent' }));
    action.handle(reading(Date.now(), { p: 1 }));
    vi.setSystemTime(Date.now() - 30 * DAY);
    vi.advanceTimersByTime(minutes(2));
    action.handle(reading(Date.now(), { p: 1 }));
    expect(writes).toHaveLength(2);
  });

  it('a poll (atStart) reads once at start, at the time then, and then on the aligned ticks an interval later at least', () => {
    const fired: number[] = [];
    const stop = schedule(everyTick(15 * 60 * SECOND), (due) => fired.push(due), { atStart: true });
    const started = Date.now();
    vi.advanceTimersByTime(minutes(46));
    stop();
    expect(fired[0]).toBe(started);
    // 10:15 came 14:59.7 after the read at start: two reads a moment apart would make any rate
    // between them look many times its size
    expect(fired.slice(1).map((t) => new Date(t).toISOString().slice(11, 16))).toEqual(['10:30', '10:45']);
  });

  it('a poll (atStart) whose clock is stepped back 30 days right after its read at start reads on the new timeline at once', () => {
    const fired: number[] = [];
    const stop = schedule(everyTick(SECOND), (due) => fired.push(due), { atStart: true });
    vi.advanceTimersByTime(1);
    expect(fired).toHaveLength(1);
    const back = Date.now() - 30 * DAY;
    vi.setSystemTime(back);
    vi.advanceTimersByTime(3 * SECOND);
    stop();
    // the read at start belongs to the old timeline: the new one's first tick is not taken for
    // the tick right after it (which is skipped), and none is fired twice
    const after = fired.slice(1);
    expect(after.length).toBeGreaterThanOrEqual(2);
    expect(after[0]).toBeLessThan(back + 2 * SECOND);
    expect(after.every((t, i) => t % SECOND === 0 && (i === 0 || t - after[i - 1] === SECOND))).toBe(true);
  });

  it('a poll (atStart) whose start comes when a tick is due reads once, at the aligned time; stopped at once, it does not read', () => {
    vi.setSystemTime(Date.UTC(2026, 0, 5, 10, 0, 0, 999));
    const fired: number[] = [];
    const stop = schedule(everyTick(SECOND), (due) => fired.push(due), { atStart: true });
    // the event loop was busy elsewhere until the tick at 10:00:01 was due
    vi.setSystemTime(Date.now() + 5);
    vi.advanceTimersByTime(SECOND);
    stop();
    expect(fired.map((t) => new Date(t).toISOString().slice(17, 23))).toEqual(['01.000', '02.000']);
    const none: number[] = [];
    schedule(everyTick(SECOND), (due) => none.push(due), { atStart: true })();
    vi.advanceTimersByTime(5 * SECOND);
    expect(none).toEqual([]);
  });

  it('a step forward by a year: no burst of the skipped ticks, aligned to the new time', () => {
    const { ticks, stop } = run({ every: SECOND });
    vi.advanceTimersByTime(3 * SECOND);
    const before = ticks.length;
    const stepTo = Date.now() + YEAR;
    vi.setSystemTime(stepTo);
    vi.advanceTimersByTime(10 * SECOND);
    stop();
    const after = ticks.slice(before);
    expect(after.length).toBeGreaterThanOrEqual(9);
    expect(after.length).toBeLessThanOrEqual(11);
    for (const t of after) expect(t.due).toBeGreaterThanOrEqual(stepTo - SECOND);
  });
});

describe('operators facing a step of the clock', () => {
  it('energy (meter-reading) facing a year-long step: a few windows, kWh kept, partial, in milliseconds', () => {
    const step = new StepHarness('energy', { method: 'meter-reading', point: 'e', window: minutes(15), output: 'kwh' });
    step.push(reading(at('10:00'), { e: 100 }), reading(at('10:05'), { e: 105 }));
    const started = performance.now();
    const out = step.push(reading(at('10:05') + YEAR, { e: 8865 }));
    const ms = performance.now() - started;
    console.log(`energy: a 1-year meter step handled in ${ms.toFixed(2)} ms, ${out.length - 1} windows emitted`);
    const windows = out.filter((r) => 'kwh' in r.values);
    expect(windows).toHaveLength(1); // 10:00 closed; the window of the new reading stays open
    expect(windows[0]).toMatchObject({ ts: at('10:00'), values: { kwh: 5 }, quality: { kwh: 'partial' } });
    // the year's 8,760 kWh are not lost: they go to the window of the new reading, partial
    const [next] = step.tick(at('10:05') + YEAR + minutes(30));
    expect(next.values.kwh).toBeCloseTo(8760, 6);
    expect(next.quality).toEqual({ kwh: 'partial' });
    expect(step.count('gaps')).toBe(1);
  });

  it('energy (instant-power) facing a year-long gap: the two ends partial, nothing made up', () => {
    const step = new StepHarness('energy', { method: 'instant-power', point: 'p', window: minutes(15), output: 'kwh' });
    step.push(reading(at('10:00'), { p: 10 }), reading(at('10:05'), { p: 10 }));
    const out = step.push(reading(at('10:05') + YEAR, { p: 10 }), reading(at('10:06') + YEAR, { p: 10 }));
    const windows = out.filter((r) => 'kwh' in r.values);
    expect(windows).toHaveLength(1);
    expect(windows[0]).toMatchObject({ ts: at('10:00'), quality: { kwh: 'partial' } });
    expect(step.tick(at('10:06') + YEAR + minutes(30))).toMatchObject([{ quality: { kwh: 'partial' } }]);
  });

  it('energy after the clock was stepped back 30 days: windows closed as partial, counting goes on', () => {
    const step = new StepHarness('energy', { method: 'meter-reading', point: 'e', window: minutes(15), output: 'kwh' });
    const ahead = 30 * DAY;
    step.clock = at('10:05') + ahead;
    step.push(reading(at('10:00') + ahead, { e: 100 }), reading(at('10:05') + ahead, { e: 105 }));
    step.clock = at('10:10'); // NTP stepped back: readings are stamped 30 days earlier now
    const out = step.push(reading(at('10:10'), { e: 107 }), reading(at('10:20'), { e: 117 }));
    expect(step.count('clock_back')).toBe(1);
    const windows = out.filter((r) => 'kwh' in r.values);
    expect(windows[0]).toMatchObject({ ts: at('10:00') + ahead, values: { kwh: 5 }, quality: { kwh: 'partial' } });
    // 107 - 105 goes to the 10:00 window of the new time (partial); 10:10 → 10:20 is counted
    expect(windows[1]).toMatchObject({ ts: at('10:00'), quality: { kwh: 'partial' } });
    expect(windows[1].values.kwh).toBeCloseTo(2 + 5, 6);
    expect(step.count('dropped')).toBe(0);
  });

  it('window after the clock was stepped back 30 days: aggregates go on instead of every reading dropped as late', () => {
    const step = new StepHarness('window', { size: minutes(1), functions: { v: ['count'] } });
    const ahead = 30 * DAY;
    step.clock = at('10:00:30') + ahead;
    step.push(reading(at('10:00:10') + ahead, { v: 1 }), reading(at('10:00:20') + ahead, { v: 1 }));
    step.clock = at('10:00:30');
    const out = step.push(...[0, 10, 20, 30, 40, 50, 60, 70].map((s) => reading(at('10:00') + s * SECOND, { v: 1 })));
    expect(step.count('late')).toBe(0);
    expect(step.count('clock_back')).toBe(1);
    expect(out.map((r) => [r.ts, r.values.v_count])).toEqual([
      [at('10:00') + ahead, 2],
      [at('10:00'), 6],
    ]);
  });

  it('window and energy let an untimely reading pass without moving their state', () => {
    const window = new StepHarness('window', { size: minutes(1), functions: { v: ['count'] } });
    const future: Reading = reading(Date.UTC(2100, 0, 1), { v: 1 }, 'm1', { untimely: 'future', quality: { v: 'bad' } });
    window.push(reading(at('10:00:10'), { v: 1 }), future, reading(at('10:00:20'), { v: 1 }), reading(at('10:01:00'), { v: 1 }));
    expect(window.count('late')).toBe(0);
    expect(window.count('untimely')).toBe(1);
    expect(window.out.map((r) => r.values.v_count)).toEqual([2]);

    const energy = new StepHarness('energy', { method: 'meter-reading', point: 'e', window: minutes(15), output: 'kwh' });
    const passed = energy.push(reading(at('10:00'), { e: 1 }), { ...future, values: { e: 5 } }, reading(at('10:15'), { e: 2 }));
    expect(passed.filter((r) => r.untimely)).toHaveLength(1);
    expect(passed.find((r) => 'kwh' in r.values)).toMatchObject({ ts: at('10:00'), values: { kwh: 1 } });
  });

  it('threshold (linear fill) after a step back: held readings go out at the next tick, not 30 days later', () => {
    const step = new StepHarness('threshold', { point: 'v', max: 10, fill: 'linear', max_hold: minutes(5) });
    const ahead = 30 * DAY;
    step.clock = at('10:00') + ahead;
    step.push(reading(at('10:00') + ahead, { v: 1 }), reading(at('10:01') + ahead, { v: 99 }));
    step.clock = at('10:01');
    expect(step.tick(at('10:01'))).toMatchObject([{ ts: at('10:01') + ahead, values: { v: 1 }, quality: { v: 'estimated' } }]);
  });

  it('sampler (server clock) after a step back: the next reading passes', () => {
    const step = new StepHarness('sampler', { interval: minutes(2) });
    step.clock = at('10:00') + 30 * DAY;
    step.push(reading(at('10:00'), { v: 1 }));
    step.clock = at('10:00');
    expect(step.push(reading(at('10:00'), { v: 2 }))).toHaveLength(1);
    step.clock = at('10:01');
    expect(step.push(reading(at('10:01'), { v: 3 }))).toHaveLength(0);
  });
});

describe('readings judged where they enter the streams', () => {
  function logged() {
    const lines: { level: number; msg: string }[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line)) });
    return { lines, log };
  }
  const now = Date.UTC(2026, 0, 5, 10);
  const clock = { wall: () => now, monotonic: () => 0 };

  it('a ts an hour ahead or before min_time passes as bad and untimely, logged once per episode', () => {
    const { lines, log } = logged();
    const guard = new ClockGuard({ max_future: 3_600_000, min_time: '2020-01-01', clock_sync: 'off' }, log, new ClockSync(log, clock), clock);
    const inTime = reading(now - 1000, { v: 1 });
    expect(guard.admit(inTime)).toBe(inTime);
    expect(guard.admit(reading(now + 3_500_000, { v: 1 })).untimely).toBeUndefined();
    for (let i = 0; i < 100; i++) {
      const out = guard.admit(reading(Date.UTC(2100, 0, 1), { v: i }));
      expect(out).toMatchObject({ untimely: 'future', quality: { v: 'bad' }, values: { v: i } });
    }
    expect(guard.admit(reading(Date.UTC(1970, 0, 1), { v: 1 }))).toMatchObject({ untimely: 'past', quality: { v: 'bad' } });
    guard.admit(inTime);
    expect(guard.rejected).toBe(101);
    const warnings = lines.filter((l) => l.level === 40 && /stamped/.test(l.msg));
    expect(warnings).toHaveLength(2);
    expect(warnings[0].msg).toMatch(/2100-01-01T00:00:00.000Z is more than 3600000 ms \(agent.max_future\) ahead/);
    expect(lines.filter((l) => /in time again \(100 were stamped in the future\)/.test(l.msg))).toHaveLength(1);
  });

  it('while the clock is not synchronized, readings are marked estimated (agent.clock_sync: a file)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'clock-sync-'));
    const flag = join(dir, 'synchronized');
    const { lines, log } = logged();
    const sync = new ClockSync(log, clock);
    const guard = new ClockGuard({ max_future: 3_600_000, min_time: '2020-01-01', clock_sync: flag }, log, sync, clock);
    try {
      expect(sync.synchronized).toBe(false);
      expect(guard.admit(reading(now, { v: 1, w: 2 }, 'm1', { quality: { w: 'bad' } })).quality).toEqual({ v: 'estimated', w: 'bad' });
      writeFileSync(flag, '');
      guard.configure({ max_future: 3_600_000, min_time: '2020-01-01', clock_sync: 'off' });
      guard.configure({ max_future: 3_600_000, min_time: '2020-01-01', clock_sync: flag });
      expect(sync.synchronized).toBe(true);
      const r = reading(now, { v: 1 });
      expect(guard.admit(r)).toBe(r);
      expect(lines.some((l) => /not synchronized/.test(l.msg))).toBe(true);
    } finally {
      sync.stop();
      rmSync(dir, { recursive: true });
    }
  });
});

describe('events across time facing clock steps', () => {
  it('absence, debounce and sequence after a step a year forward: one edge each at the time it was due, nothing made up', () => {
    const absence = new StepHarness('absence', { for: minutes(5) });
    absence.push(reading(at('10:00'), { v: 1 }));
    expect(absence.tick(at('10:00') + YEAR).map((r) => [r.ts, r.edge])).toEqual([[at('10:05'), 'raise']]);
    expect(absence.tick(at('10:01') + YEAR)).toEqual([]);

    const debounce = new StepHarness('debounce', { when: 'v > 0', for: minutes(1) });
    debounce.push(reading(at('10:00'), { v: 1 }));
    expect(debounce.push(reading(at('10:00') + YEAR, { v: 1 })).map((r) => [r.ts, r.edge])).toEqual([[at('10:01'), 'raise']]);

    const sequence = new StepHarness('sequence', { steps: ['a > 0', 'b > 0'], within: minutes(1), emit: 'timeout' });
    sequence.push(reading(at('10:00'), { a: 1, b: 0 }));
    expect(sequence.tick(at('10:00') + YEAR).map((r) => [r.ts, r.edge])).toEqual([[at('10:01'), 'raise']]);
    expect(sequence.tick(at('10:02') + YEAR)).toEqual([]);
  });

  it('after the clock was stepped back 30 days: what was stamped ahead starts again from the readings, instead of waiting 30 days', () => {
    const ahead = 30 * DAY;
    const absence = new StepHarness('absence', { for: minutes(5) });
    absence.clock = at('10:00') + ahead;
    absence.push(reading(at('10:00') + ahead, { v: 1 }));
    absence.clock = at('10:00'); // NTP stepped back
    expect(absence.tick(at('10:01'))).toEqual([]);
    expect(absence.count('clock_back')).toBe(1);
    // silence is measured from the step: raised 5 minutes after it, not 30 days later
    expect(absence.tick(at('10:06')).map((r) => r.edge)).toEqual(['raise']);

    const debounce = new StepHarness('debounce', { when: 'v > 0', for: minutes(1) });
    debounce.clock = at('10:00') + ahead;
    debounce.push(reading(at('10:00') + ahead, { v: 1 }));
    debounce.clock = at('10:00');
    debounce.push(reading(at('10:00'), { v: 1 }));
    expect(debounce.count('clock_back')).toBe(1);
    expect(debounce.push(reading(at('10:01'), { v: 1 })).map((r) => [r.ts, r.edge])).toEqual([[at('10:01'), 'raise']]);

    const count = new StepHarness('count', { when: 'v > 0', at_least: 2, within: minutes(10) });
    count.clock = at('10:00') + ahead;
    count.push(reading(at('10:00') + ahead, { v: 1 }));
    count.clock = at('10:00');
    expect(count.push(reading(at('10:00'), { v: 1 }))).toEqual([]);
    expect(count.count('clock_back')).toBe(1);
    expect(count.push(reading(at('10:01'), { v: 1 })).map((r) => r.edge)).toEqual(['raise']);

    const episode = new StepHarness('episode', { when: 'on == 1', functions: { p: ['max'] } });
    episode.clock = at('10:00') + ahead;
    episode.push(reading(at('10:00') + ahead, { on: 1, p: 5 }));
    episode.clock = at('10:00');
    const out = episode.push(reading(at('10:00'), { on: 1, p: 7 }), reading(at('10:10'), { on: 0, p: 0 }));
    expect(out.map((r) => [r.ts, r.values.p_max, r.quality?.p_max])).toEqual([
      [at('10:00') + ahead, 5, 'partial'],
      [at('10:00'), 7, undefined],
    ]);
  });

  it('readings whose time is not believed do not move their state', () => {
    const absence = new StepHarness('absence', { for: minutes(5) });
    absence.push(reading(at('10:00'), { v: 1 }));
    absence.push(reading(at('10:00') + YEAR, { v: 1 }, 'm1', { untimely: 'future' }));
    expect(absence.count('untimely')).toBe(1);
    expect(absence.tick(at('10:06')).map((r) => r.edge)).toEqual(['raise']);
  });
});
