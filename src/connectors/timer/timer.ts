import { createRequire } from 'node:module';
import type { CronExpressionParser } from 'cron-parser';
import { schedule, type Clock } from '../../core/schedule.js';

// cron-parser and its luxon (about 1.6 MB resident, 1 MB of heap) are loaded the first time a
// cron is read, not at start: most configs have no cron. require() keeps TimerSchedule
// synchronous (the config check builds one); the package is CommonJS.
let cronParser: typeof CronExpressionParser | undefined;
const cron = () => (cronParser ??= (createRequire(import.meta.url)('cron-parser') as typeof import('cron-parser')).CronExpressionParser);

/**
 * The timer source's schedule: `cron` (five fields, or six with seconds first, in the agent's
 * timezone) or `every` (aligned to the epoch, so `every: 15m` ticks at :00 :15 :30 :45).
 * Ticks missed while the agent was down are not replayed: the next one is after now.
 */
export class TimerSchedule {
  constructor(
    private readonly timer: { cron?: string; every?: number },
    private readonly timezone = 'UTC',
  ) {
    if ((timer.cron === undefined) === (timer.every === undefined)) throw new Error('a timer needs either cron or every');
    if (timer.every !== undefined && !(timer.every > 0)) throw new Error('every must be positive');
    if (timer.cron !== undefined) this.next(0);
  }

  /** The first tick strictly after `ts`. */
  next(ts: number): number {
    if (this.timer.every !== undefined) return (Math.floor(ts / this.timer.every) + 1) * this.timer.every;
    return cron().parse(this.timer.cron!, { currentDate: ts, tz: this.timezone }).next().getTime();
  }
}

/**
 * Runs a schedule on the agent's scheduler (aligned to the wall clock, waiting on the monotonic
 * one, re-aligned after a step of the wall clock); `fire(ts)` at each tick.
 */
export function startTimer(timerSchedule: TimerSchedule, fire: (ts: number) => void, clock?: Clock): () => void {
  return schedule((ts) => timerSchedule.next(ts), fire, { clock });
}
