/**
 * The agent's one scheduler for polls and timers. Ticks are aligned to the wall clock (`every:
 * 15m` at :00 :15 :30 :45, cron in a time zone), but the waiting is done with monotonic timer
 * delays (Node's timers run on CLOCK_MONOTONIC), never longer than MAX_WAIT: a device without
 * an RTC boots with a wrong date and NTP steps it later, by seconds or by years, in either
 * direction. At each wake-up the scheduler compares how far the wall clock moved with how far
 * the monotonic clock moved; when they differ by more than STEP_TOLERANCE, the wall clock was
 * stepped and the schedule is aligned again to the new wall time: one tick at the next aligned
 * instant, no burst of the ticks a forward step skipped, no silence for the span a backward step
 * repeats. A backward step is also seen without the comparison: the tick awaited lies beyond
 * the schedule's next tick after now.
 */

/** Wall time (epoch ms, steps when NTP steps) and monotonic time (ms, never steps). Injected by tests. */
export interface Clock {
  wall(): number;
  monotonic(): number;
}

export const systemClock: Clock = { wall: () => Date.now(), monotonic: () => performance.now() };

/**
 * The longest single wait: far below Node's 2^31-1 ms timer limit (a longer delay fires after
 * 1 ms, with a TimeoutOverflowWarning each time), and short enough that a step of the wall
 * clock during a long wait (an hourly cron) is noticed within a minute.
 */
export const MAX_WAIT = 60_000;

/** Wall and monotonic elapsed differ by more than this: the wall clock was stepped, not slewed. */
export const STEP_TOLERANCE = 1_000;

/** The aligned instants of a schedule: `next(t)` is the first one strictly after wall time t. */
export type NextTick = (wall: number) => number;

/** `every` ms from the epoch (no drift, however long it runs). */
export function everyTick(every: number): NextTick {
  return (wall) => (Math.floor(wall / every) + 1) * every;
}

/**
 * Calls `fire(due)` at each tick of `next` (due: the aligned wall time of the tick); returns
 * the function that stops it. A tick that comes late (a stalled event loop) fires once, and
 * the ticks it covered are skipped. `onStep(ms)` hears of each step of the wall clock it saw.
 * `atStart`: fire once more right after the start, at the wall time then (a poll: a meter on a
 * 15-minute poll has a value at once, not when the quarter comes), unless a tick is due then;
 * the tick after it is skipped when it comes less than an interval later.
 */
export function schedule(next: NextTick, fire: (due: number) => void, options: { clock?: Clock; onStep?: (ms: number) => void; atStart?: boolean } = {}): () => void {
  const clock = options.clock ?? systemClock;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let wall = clock.wall();
  let mono = clock.monotonic();
  let due = next(wall);
  /** The wall time of the read at start, until the tick after it. */
  let startRead: number | undefined;
  // before the first tick's timer, so that it runs first when both are due at once
  let startTimer = options.atStart
    ? setTimeout(() => {
        startTimer = undefined;
        const now = clock.wall();
        // a tick due now has the aligned time: the same reading, a second one would repeat it
        if (stopped || now >= due) return;
        startRead = now;
        fire(now);
      }, 0)
    : undefined;

  const wake = () => {
    if (stopped) return;
    const wallNow = clock.wall();
    const monoNow = clock.monotonic();
    const step = wallNow - wall - (monoNow - mono);
    wall = wallNow;
    mono = monoNow;
    try {
      if (Math.abs(step) > STEP_TOLERANCE) {
        // the tick awaited belongs to the old timeline: align to the new one, fire nothing now
        due = next(wallNow);
        startRead = undefined;
        options.onStep?.(step);
      } else if (wallNow >= due) {
        const tick = due;
        // after the tick due (a timer may wake a little early), or after now if it was late
        due = next(Math.max(due, wallNow));
        // The first tick after the read at start is skipped when it is closer to it than an
        // interval: two reads a moment apart made a rate or a step between them look many times
        // its size (a false anomaly raise, a meter step refused by max_rate).
        const tooSoon = startRead !== undefined && tick - startRead < next(tick) - tick;
        startRead = undefined;
        if (!tooSoon) fire(tick);
      } else {
        // stepped back by less than the tolerance, or slewed: never wait past the next tick after now
        const soonest = next(wallNow);
        if (soonest < due) due = soonest;
      }
    } finally {
      // a tick that throws (the error goes on, as it would from any timer) does not end the schedule
      if (!stopped) arm();
    }
  };

  const arm = () => {
    timer = setTimeout(wake, Math.min(Math.max(0, due - clock.wall()), MAX_WAIT));
  };

  arm();
  return () => {
    stopped = true;
    clearTimeout(timer);
    clearTimeout(startTimer);
  };
}
