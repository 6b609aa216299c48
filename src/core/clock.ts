import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { Logger } from 'pino';
import type { Quality, Reading } from './reading.js';
import { Episodes } from './episodes.js';
import { STEP_TOLERANCE, systemClock, type Clock } from './schedule.js';

export interface ClockOptions {
  /** ms a reading's ts may be ahead of the agent's clock (agent.max_future). */
  max_future: number;
  /** ISO date before which no reading is believed (agent.min_time). */
  min_time: string;
  /** agent.clock_sync: `auto`, `off`, or a file that exists while the clock is synchronized. */
  clock_sync: string;
}

/**
 * Where readings enter the streams (every device reading, every timer tick), the agent judges
 * their time once:
 *
 * - a ts further than `max_future` ahead of the agent's clock, or before `min_time`, is not
 *   believed: the reading passes with every value `bad` and `untimely` set, so that no step
 *   uses its ts to advance its state (a window watermark in 2100 would drop every later reading
 *   as late). Counted, and logged once per episode and device.
 * - while the system clock is known not to be synchronized (a Pi without RTC before NTP), the
 *   values of a reading that had no quality of their own are marked `estimated`.
 */
export class ClockGuard {
  rejected = 0;
  estimated = 0;
  private maxFuture = 3_600_000;
  private minTime = Date.UTC(2020, 0, 1);
  private readonly episodes = new Episodes<string>(1000);

  constructor(
    options: ClockOptions,
    private readonly log: Logger,
    readonly sync: ClockSync,
    private readonly clock: Clock = systemClock,
  ) {
    this.configure(options);
  }

  configure(options: ClockOptions): void {
    this.maxFuture = options.max_future;
    const floor = Date.parse(options.min_time);
    this.minTime = Number.isFinite(floor) ? floor : Date.UTC(2020, 0, 1);
    this.sync.configure(options.clock_sync);
  }

  /** The reading as the streams should see it (the same object when nothing is to be said). */
  admit(reading: Reading): Reading {
    const { ts } = reading;
    const now = this.clock.wall();
    const ahead = ts - now;
    if (ahead > this.maxFuture || ts < this.minTime || !Number.isFinite(ts)) return this.untimely(reading, ahead > this.maxFuture ? 'future' : 'past', now);
    if (this.episodes.size > 0) this.endEpisode(reading.device);
    if (this.sync.synchronized === false) return this.markEstimated(reading);
    return reading;
  }

  private untimely(reading: Reading, why: 'future' | 'past', now: number): Reading {
    this.rejected++;
    const cause = `${reading.device}\u0000${why}`;
    if (this.episodes.begin(cause)) {
      const bound = why === 'future' ? `more than ${this.maxFuture} ms (agent.max_future) ahead of the agent's clock (${new Date(now).toISOString()})` : `before ${new Date(this.minTime).toISOString()} (agent.min_time)`;
      this.log.warn({ device: reading.device, ts: reading.ts }, `device ${reading.device}: reading stamped ${stamp(reading.ts)} is ${bound}: passed with quality bad, not used to advance windows, energy or samplers`);
    } else if (this.episodes.untracked === 1) this.log.warn({ devices: this.episodes.max }, `more than ${this.episodes.max} devices send readings out of time: the others are counted, not logged`);
    let quality: Record<string, Quality> | undefined;
    for (const name in reading.values) (quality ??= {})[name] = 'bad';
    return { ...reading, quality, untimely: why };
  }

  private endEpisode(device: string): void {
    for (const why of ['future', 'past']) {
      const count = this.episodes.end(`${device}\u0000${why}`);
      if (count) this.log.info({ device, count }, `device ${device}: readings are in time again (${count} were stamped ${why === 'future' ? 'in the future' : 'before agent.min_time'})`);
    }
  }

  private markEstimated(reading: Reading): Reading {
    this.estimated++;
    let quality: Record<string, Quality> | undefined;
    for (const name in reading.values) if (!reading.quality?.[name]) (quality ??= { ...reading.quality })[name] = 'estimated';
    return quality ? { ...reading, quality } : reading;
  }
}

function stamp(ts: number): string {
  return Number.isFinite(ts) && Math.abs(ts) < 8.64e15 ? new Date(ts).toISOString() : String(ts);
}

/** A file is looked at every 2 s; timedatectl (a process, a D-Bus call) every 30 s. */
const SYNC_CHECK_MS = 2_000;
const TIMEDATECTL_EVERY = 15;
const TIMESYNCD_DIR = '/run/systemd/timesync';

/**
 * Whether the system clock is synchronized, as far as the agent can tell (Node has no adjtimex):
 *
 * - `auto`: with systemd-timesyncd, the file /run/systemd/timesync/synchronized (it exists once
 *   the first NTP answer set the clock); otherwise `timedatectl show -p NTPSynchronized`, which
 *   reads the kernel's sync flag that chrony and ntpd keep too. Neither available: unknown, and
 *   readings are not marked.
 * - a path: the clock is synchronized while that file exists (for other setups, and tests).
 * - `off`: not checked.
 *
 * It also watches for steps of the wall clock (wall elapsed ≠ monotonic elapsed) and logs each.
 */
export class ClockSync {
  /** undefined: unknown (not checked, or no way to tell). */
  synchronized: boolean | undefined;
  steps = 0;
  private mode = 'off';
  private timer: NodeJS.Timeout | undefined;
  private stepTimer: NodeJS.Timeout | undefined;
  private checking = false;
  private noTimedatectl = false;
  private checks = 0;

  constructor(
    private readonly log: Logger,
    private readonly clock: Clock = systemClock,
  ) {}

  configure(mode: string): void {
    if (mode === this.mode && this.timer) return;
    this.mode = mode;
    clearInterval(this.timer);
    this.timer = undefined;
    this.synchronized = undefined;
    this.checks = 0;
    if (mode === 'off') return;
    this.check();
    this.timer = setInterval(() => this.check(), SYNC_CHECK_MS);
    this.timer.unref();
  }

  /** Logs each step of the wall clock it sees (checked every second on the monotonic clock). */
  watchSteps(): void {
    let wall = this.clock.wall();
    let mono = this.clock.monotonic();
    this.stepTimer = setInterval(() => {
      const wallNow = this.clock.wall();
      const monoNow = this.clock.monotonic();
      const step = wallNow - wall - (monoNow - mono);
      wall = wallNow;
      mono = monoNow;
      if (Math.abs(step) > STEP_TOLERANCE) {
        this.steps++;
        this.log.warn({ step_ms: Math.round(step) }, `the system clock was stepped ${step > 0 ? 'forward' : 'back'} by ${describeMs(Math.abs(step))} (now ${new Date(wallNow).toISOString()}): polls and timers re-aligned`);
      }
    }, 1000);
    this.stepTimer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    clearInterval(this.stepTimer);
    this.timer = undefined;
  }

  private check(): void {
    const mode = this.mode;
    if (mode.startsWith('/')) return this.set(existsSync(mode), mode);
    if (existsSync(TIMESYNCD_DIR)) return this.set(existsSync(`${TIMESYNCD_DIR}/synchronized`), 'systemd-timesyncd');
    if (this.noTimedatectl || this.checking || this.checks++ % TIMEDATECTL_EVERY !== 0) return;
    this.checking = true;
    execFile('timedatectl', ['show', '-p', 'NTPSynchronized', '--value'], { timeout: 2000 }, (err, stdout, stderr) => {
      this.checking = false;
      if (this.mode !== mode) return;
      const answer = stdout?.trim();
      if (err || (answer !== 'yes' && answer !== 'no')) {
        this.noTimedatectl = true;
        this.log.info(`cannot tell whether the system clock is synchronized (no systemd-timesyncd, timedatectl: ${err ? String(stderr).trim().split('\n')[0] || err.message : answer}); readings are not marked; set agent.clock_sync to a file, or off`);
        return;
      }
      this.set(answer === 'yes', 'timedatectl');
    });
  }

  private set(synchronized: boolean, source: string): void {
    if (synchronized === this.synchronized) return;
    const first = this.synchronized === undefined;
    this.synchronized = synchronized;
    if (!synchronized) this.log.warn({ source }, `the system clock is not synchronized (${source}): readings are marked estimated until it is`);
    else if (!first) this.log.info({ source }, `the system clock is synchronized (${source})`);
  }
}

function describeMs(ms: number): string {
  if (ms >= 86_400_000) return `${(ms / 86_400_000).toFixed(1)} d`;
  if (ms >= 3_600_000) return `${(ms / 3_600_000).toFixed(1)} h`;
  if (ms >= 60_000) return `${(ms / 60_000).toFixed(1)} min`;
  return `${(ms / 1000).toFixed(1)} s`;
}
