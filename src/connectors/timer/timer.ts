import { CronExpressionParser } from 'cron-parser';

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
    return CronExpressionParser.parse(this.timer.cron!, { currentDate: ts, tz: this.timezone }).next().getTime();
  }
}

/** Runs a schedule on the wall clock; `fire(ts)` at each tick. */
export function startTimer(schedule: TimerSchedule, fire: (ts: number) => void): () => void {
  let timer: NodeJS.Timeout;
  let due = schedule.next(Date.now());
  const arm = () => {
    timer = setTimeout(() => {
      fire(due);
      // after the tick just fired (a timer may run a little early), or after now if it was late
      due = schedule.next(Math.max(due, Date.now()));
      arm();
    }, Math.max(0, due - Date.now()));
  };
  arm();
  return () => clearTimeout(timer);
}
