import { createRequire } from 'node:module';
import type { CronExpressionParser } from 'cron-parser';
import { schedule, type Clock } from '../../core/schedule.js';
import { parseTime } from '../../core/time.js';

export interface TimerConfig {
  cron?: string;
  every?: number;
  fixed_delay?: number;
  at?: string | Date;
}

// cron-parser and its luxon (about 1.6 MB resident, 1 MB of heap) are loaded the first time a
// cron is read, not at start: most configs have no cron. require() keeps TimerSchedule
// synchronous (the config check builds one); the package is CommonJS.
let cronParser: typeof CronExpressionParser | undefined;
const cron = () => (cronParser ??= (createRequire(import.meta.url)('cron-parser') as typeof import('cron-parser')).CronExpressionParser);

/**
 * The timer source's schedule, one of: `cron` (five fields, or six with seconds first, in the
 * agent's timezone), `every` (aligned to the epoch, so `every: 15m` ticks at :00 :15 :30 :45),
 * `fixed_delay` (that long after the previous tick, or after the start: not aligned), `at` (one
 * tick at that time, in the agent's timezone when it has no offset; a time already past never
 * fires). Ticks missed while the agent was down are not replayed: the next one is after now.
 */
export class TimerSchedule {
  private readonly at: number | undefined;

  constructor(
    private readonly timer: TimerConfig,
    private readonly timezone = 'UTC',
  ) {
    const given = ['cron', 'every', 'fixed_delay', 'at'].filter((key) => timer[key as keyof TimerConfig] !== undefined);
    if (given.length !== 1) throw new Error(`a timer needs one of cron, every, fixed_delay or at${given.length > 1 ? ` (not ${given.join(' and ')})` : ''}`);
    // under a millisecond, ts + every is ts again (a replay would never get past it)
    if (timer.every !== undefined && !(timer.every >= 1)) throw new Error('every must be at least 1ms');
    if (timer.fixed_delay !== undefined && !(timer.fixed_delay >= 1)) throw new Error('fixed_delay must be at least 1ms');
    if (timer.at !== undefined) {
      // YAML reads an unquoted timestamp as a date
      this.at = timer.at instanceof Date ? timer.at.getTime() : parseTime(timer.at, timezone);
      if (!Number.isFinite(this.at)) throw new Error(`at: "${String(timer.at)}" is not a date and time (ISO 8601, e.g. 2026-12-01T06:00:00Z)`);
    }
    if (timer.cron !== undefined) this.next(0);
  }

  /** The first tick strictly after `ts` (Infinity when there is none: an `at` already past). */
  next(ts: number): number {
    if (this.timer.every !== undefined) return (Math.floor(ts / this.timer.every) + 1) * this.timer.every;
    if (this.timer.fixed_delay !== undefined) return ts + this.timer.fixed_delay;
    if (this.at !== undefined) return ts < this.at ? this.at : Infinity;
    return cron().parse(this.timer.cron!, { currentDate: ts, tz: this.timezone }).next().getTime();
  }

  /** The first tick of a run that starts at `start`: one due at `start` itself counts. */
  first(start: number): number {
    return this.timer.fixed_delay !== undefined ? start + this.timer.fixed_delay : this.next(start - 1);
  }
}

/**
 * Runs a schedule on the agent's scheduler (aligned to the wall clock, waiting on the monotonic
 * one, re-aligned after a step of the wall clock); `fire(ts)` at each tick.
 */
export function startTimer(timerSchedule: TimerSchedule, fire: (ts: number) => void, clock?: Clock): () => void {
  return schedule((ts) => timerSchedule.next(ts), fire, { clock });
}
