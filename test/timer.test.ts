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

  it('rejects a bad cron and a timer with neither or both', () => {
    expect(() => new TimerSchedule({ cron: '61 * * * *' })).toThrow();
    expect(() => new TimerSchedule({})).toThrow('a timer needs either cron or every');
    expect(() => new TimerSchedule({ cron: '* * * * *', every: 1000 })).toThrow('a timer needs either cron or every');
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
