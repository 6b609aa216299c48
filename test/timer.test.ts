import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startAgent } from '../src/start.js';
import { TimerSchedule } from '../src/connectors/timer/timer.js';
import { readJsonLines } from './support/files.js';
import { testLog } from './support/log.js';
import { until } from './support/ports.js';

const iso = (ts: number) => new Date(ts).toISOString();

describe('timer schedule', () => {
  it('cron with five fields, or six with seconds first', () => {
    const fifteen = new TimerSchedule({ cron: '*/15 * * * *' });
    expect(iso(fifteen.next(Date.UTC(2026, 0, 5, 10, 7)))).toBe('2026-01-05T10:15:00.000Z');
    expect(iso(fifteen.next(Date.UTC(2026, 0, 5, 10, 15)))).toBe('2026-01-05T10:30:00.000Z');
    const seconds = new TimerSchedule({ cron: '*/10 * * * * *' });
    expect(iso(seconds.next(Date.UTC(2026, 0, 5, 10, 7, 3)))).toBe('2026-01-05T10:07:10.000Z');
  });

  it('cron follows agent.timezone', () => {
    const midnight = new TimerSchedule({ cron: '0 0 * * *' }, 'Europe/Berlin');
    expect(iso(midnight.next(Date.UTC(2026, 0, 5, 12)))).toBe('2026-01-05T23:00:00.000Z');
    expect(iso(midnight.next(Date.UTC(2026, 6, 5, 12)))).toBe('2026-07-05T22:00:00.000Z');
  });

  it('every is aligned to the epoch', () => {
    const schedule = new TimerSchedule({ every: 900_000 });
    expect(iso(schedule.next(Date.UTC(2026, 0, 5, 10, 7)))).toBe('2026-01-05T10:15:00.000Z');
  });

  it('rejects a bad cron and a timer with none or two of cron, every, fixed_delay, at', () => {
    expect(() => new TimerSchedule({ cron: '61 * * * *' })).toThrow();
    expect(() => new TimerSchedule({})).toThrow('a timer needs one of cron, every, fixed_delay or at');
    expect(() => new TimerSchedule({ cron: '* * * * *', every: 1000 })).toThrow('a timer needs one of cron, every, fixed_delay or at (not cron and every)');
    expect(() => new TimerSchedule({ at: 'soon' })).toThrow('at: "soon" is not a date and time');
  });

  it('fixed_delay counts from the previous tick, not from the epoch; at fires once, and never when past', () => {
    const delay = new TimerSchedule({ fixed_delay: 7 * 60_000 });
    expect(iso(delay.next(Date.UTC(2026, 0, 5, 10, 7, 3)))).toBe('2026-01-05T10:14:03.000Z');
    expect(iso(delay.first(Date.UTC(2026, 0, 5, 10, 0)))).toBe('2026-01-05T10:07:00.000Z');
    const once = new TimerSchedule({ at: '2026-12-01T06:00:00Z' });
    expect(iso(once.next(Date.UTC(2026, 10, 22)))).toBe('2026-12-01T06:00:00.000Z');
    expect(once.next(Date.UTC(2026, 11, 1, 6))).toBe(Infinity);
  });
});

describe('timer source in the agent', () => {
  it('emits readings on schedule that expressions see the latest device values through', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'timer-'));
    const file = join(dir, 'agent.yaml');
    writeFileSync(
      file,
      `agent: { id: gw, data_dir: ${dir}, log_level: warn }
devices: [{ id: meter_1, protocol: simulator, poll: 50ms, points: [{ name: p, signal: constant, value: 42 }] }]
streams:
  - name: snapshot
    from: { timer: { cron: "* * * * * *" } }
    steps:
      - filter: "meter_1.p == 42"
      - event: { code: SNAPSHOT, description: "p is {p}", fields: { p: "meter_1.p" } }
    to: [file]
upstream: [{ name: file, type: file, path: out.jsonl }]
`,
    );
    const agent = await startAgent(file, testLog);
    const lines = () => readJsonLines(join(dir, 'out.jsonl'));
    await until(() => lines().length >= 2, 5000, 'two timer ticks');
    await agent.stop();
    const [first, second] = lines();
    expect(first).toMatchObject({ stream: 'snapshot', device: 'timer', event: { code: 'SNAPSHOT', p: 42, state: 'raised' } });
    expect(first.ts % 1000).toBe(0);
    expect(second.ts - first.ts).toBe(1000);
  });
});

describe('fixed_delay and at in the agent', () => {
  it('ticks every fixed_delay after the start, not on the epoch grid; at fires once; an at in the past never', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'timer-delay-'));
    const file = join(dir, 'agent.yaml');
    const soon = new Date(Date.now() + 1500).toISOString();
    writeFileSync(
      file,
      `agent: { id: gw, data_dir: ${dir}, log_level: warn }
devices: [{ id: m, protocol: simulator, points: [{ name: p }] }]
streams:
  - { name: delay, from: { timer: { fixed_delay: 700ms } }, to: [file] }
  - { name: once, from: { timer: { at: "${soon}" } }, to: [file] }
  - { name: past, from: { timer: { at: 2020-01-01T00:00:00Z } }, to: [file] }
upstream: [{ name: file, type: file, path: out.jsonl }]
`,
    );
    const started = Date.now();
    const agent = await startAgent(file, testLog);
    const lines = () => readJsonLines(join(dir, 'out.jsonl')) as { stream: string; ts: number }[];
    try {
      await until(() => lines().filter((l) => l.stream === 'delay').length >= 4, 10_000, 'four fixed-delay ticks');
      await until(() => Date.now() > Date.parse(soon) + 1000, 5000, 'past the one-shot time');
    } finally {
      await agent.stop();
    }
    const delay = lines().filter((l) => l.stream === 'delay').map((l) => l.ts);
    // 700 ms apart (the scheduler's wake-up may be a little late, never early), not on a 700 ms epoch grid
    for (let i = 1; i < delay.length; i++) expect(delay[i] - delay[i - 1]).toBeGreaterThanOrEqual(700);
    expect(delay[0] - started).toBeGreaterThanOrEqual(700);
    expect(lines().filter((l) => l.stream === 'once').map((l) => l.ts)).toEqual([Date.parse(soon)]);
    expect(lines().filter((l) => l.stream === 'past')).toEqual([]);
  });
});

