import { timezoneOffset } from '../core/time.js';
const DAY = 86_400_000;

/**
 * Wall-clock windows: sizes under a day align to the epoch in UTC; a day or more aligns to
 * local midnight in the agent's timezone (so a "1d" window is a calendar day, 23 or 25 hours
 * long on a DST change). Hopping windows (`every` < `size`) are for sizes under a day.
 */
export class Windows {
  private readonly days: number;
  private readonly offset: (ts: number) => number;

  constructor(
    readonly size: number,
    readonly every: number = size,
    timezone = 'UTC',
  ) {
    this.days = size >= DAY ? size / DAY : 0;
    this.offset = timezoneOffset(timezone);
  }

  private readonly starts: number[] = [];

  /** The start of every window that holds `ts`, latest first (one array, reused by the next call). */
  startsOf(ts: number): readonly number[] {
    const starts = this.starts;
    starts.length = 0;
    if (this.days) starts.push(this.dayStart(ts));
    else for (let start = Math.floor(ts / this.every) * this.every; start + this.size > ts; start -= this.every) starts.push(start);
    return starts;
  }

  /** The start of the window of `ts` (the latest one, for hopping windows). */
  startOf(ts: number): number {
    return this.days ? this.dayStart(ts) : Math.floor(ts / this.every) * this.every;
  }

  end(start: number): number {
    return this.days ? this.localMidnight(this.localDay(start + 12 * 3_600_000) + this.days) : start + this.size;
  }

  private localDay(ts: number): number {
    return Math.floor((ts + this.offset(ts)) / DAY);
  }

  private dayStart(ts: number): number {
    const day = this.localDay(ts);
    return this.localMidnight(day - (((day % this.days) + this.days) % this.days));
  }

  /** The instant of local midnight that starts local day number `day` (days since 1970-01-01). */
  private localMidnight(day: number): number {
    const guess = day * DAY - this.offset(day * DAY);
    return day * DAY - this.offset(guess);
  }
}

export function checkWindow(size: number, every: number): string | undefined {
  if (!(size > 0)) return 'size must be positive';
  if (!(every > 0)) return 'every must be positive';
  if (every > size) return `every (${every} ms) must not exceed size (${size} ms)`;
  if (size >= DAY && size % DAY !== 0) return 'a window of a day or more must be whole days';
  if (size >= DAY && every !== size) return 'hopping windows must be shorter than a day';
  return undefined;
}

