import type { Logger } from 'pino';
import { Backoff, upperHalf } from '../core/backoff.js';
import type { Upstream } from './upstream.js';
import type { Outbox } from '../outbox/outbox.js';

export interface ForwarderOptions {
  /** Records read from the outbox per send. */
  batch: number;
  /** Sends awaiting acknowledgement at once; by default the upstream's own `window`. */
  window: number;
  /** How long a batch shorter than `batch` may wait for more records while nothing is in flight. */
  linger: number;
  minBackoff: number;
  maxBackoff: number;
}

const DEFAULTS = { batch: 1000, linger: 0, minBackoff: 500, maxBackoff: 30_000 };

/**
 * Moves one upstream's queue from the outbox to the upstream, in order: reads a batch, sends
 * it, deletes it once acknowledged. After a failed send it lets the other sends in flight
 * settle, then starts again from the oldest record still in the outbox, after a backoff
 * (exponential, with jitter) or as soon as the upstream reconnects.
 */
export class Forwarder {
  private readonly options: ForwarderOptions;
  private cursor = 0;
  private inFlight = 0;
  private failed = false;
  private failures = 0;
  /** The wait before starting over after a failed round: one step per failure. */
  private readonly backoff: Backoff;
  private retryTimer: NodeJS.Timeout | undefined;
  private lingerTimer: NodeJS.Timeout | undefined;
  private lingered = false;
  private stopped = false;
  /** When a send last settled, or the first send went out after an idle spell. */
  private lastProgress = performance.now();
  sent = 0;
  errors = 0;
  deadLettered = 0;
  private lastDeadLetterLog = -Infinity;

  constructor(
    private readonly outbox: Outbox,
    private readonly upstream: Upstream,
    private readonly log: Logger,
    options: Partial<ForwarderOptions> = {},
  ) {
    this.options = { ...DEFAULTS, window: upstream.window, batch: upstream.batch ?? DEFAULTS.batch, linger: upstream.linger ?? DEFAULTS.linger, ...options };
    this.backoff = new Backoff(this.options.minBackoff, this.options.maxBackoff, upperHalf);
  }

  start(): void {
    this.upstream.onConnect(() => {
      if (this.retryTimer && !this.failed) {
        clearTimeout(this.retryTimer);
        this.retryTimer = undefined;
      }
      this.pump();
    });
    this.pump();
  }

  /** New records were committed. */
  wake(): void {
    this.pump();
  }

  private pump(): void {
    if (this.stopped || this.failed || this.retryTimer || !this.upstream.connected) return;
    const { batch, window, linger } = this.options;
    while (this.inFlight < window) {
      const rows = this.outbox.read(this.upstream.name, this.cursor, batch);
      if (rows.length === 0) {
        // the storage cannot be read now: nothing else would wake this loop, so look again soon
        if (this.outbox.failing) this.retryTimer = setTimeout(() => ((this.retryTimer = undefined), this.pump()), 1000);
        return;
      }
      if (rows.length < batch && linger > 0 && this.inFlight === 0 && !this.lingered) {
        this.lingerTimer ??= setTimeout(() => {
          this.lingerTimer = undefined;
          this.lingered = true;
          this.pump();
        }, linger);
        return;
      }
      clearTimeout(this.lingerTimer);
      this.lingerTimer = undefined;
      this.lingered = false;
      const first = rows[0].id;
      const last = rows[rows.length - 1].id;
      this.cursor = last;
      if (this.inFlight === 0) this.lastProgress = performance.now();
      this.inFlight++;
      this.upstream.send(rows).then(
        (result) => {
          // `sent` counts what the upstream acknowledged: dead letters have their own counter
          let refused = 0;
          for (const { ids, reason } of result?.rejected ?? []) {
            this.outbox.deadLetter(this.upstream.name, ids, reason);
            this.deadLettered += ids.length;
            refused += ids.length;
            // one line per ten seconds at most: a refused topic may get a record every second
            if (performance.now() - this.lastDeadLetterLog > 10_000) {
              this.lastDeadLetterLog = performance.now();
              this.log.warn({ upstream: this.upstream.name, total: this.deadLettered, reason }, `upstream ${this.upstream.name} refused records for good (${reason}); ${this.deadLettered} moved to the dead-letter table so far`);
            }
          }
          const retry = result?.retry;
          if (retry?.ids.length) {
            const unacknowledged = new Set(retry.ids);
            this.outbox.ackIds(this.upstream.name, rows.filter((r) => !unacknowledged.has(r.id)).map((r) => r.id));
            this.sent += rows.length - unacknowledged.size - refused;
            this.errors++;
            if (!this.failed) this.onFailure(new Error(`${unacknowledged.size} of ${rows.length} records not acknowledged: ${retry.reason}`));
          } else {
            this.outbox.ack(this.upstream.name, first, last);
            if (this.sent === 0 && rows.length > refused) this.log.info({ upstream: this.upstream.name }, `upstream ${this.upstream.name}: first records delivered`);
            this.sent += rows.length - refused;
          }
          this.settle();
        },
        (err: Error) => {
          this.errors++;
          if (!this.failed) this.onFailure(err);
          this.settle();
        },
      );
    }
  }

  private onFailure(err: Error): void {
    this.failed = true;
    if (this.failures === 0) {
      this.log.warn({ upstream: this.upstream.name, err: err.message }, `upstream ${this.upstream.name}: send failed (${err.message}); records stay in the outbox and are retried`);
    }
    this.failures++;
  }

  private settle(): void {
    this.inFlight--;
    this.lastProgress = performance.now();
    if (!this.failed) {
      if (this.failures > 0 && this.inFlight === 0) {
        this.log.info({ upstream: this.upstream.name }, `upstream ${this.upstream.name}: delivering again after ${this.failures} failed sends`);
        this.failures = 0;
        this.backoff.reset();
      }
      this.pump();
      return;
    }
    if (this.inFlight > 0) return;
    // Every send has settled: start over at the oldest record the outbox still holds.
    this.failed = false;
    this.cursor = 0;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.pump();
    }, this.backoff.next());
  }

  /** True from a failed send until a send succeeds again. */
  get retrying(): boolean {
    return this.failures > 0;
  }

  /** How long sends have been in flight without any of them settling (0 when none is). */
  stalledFor(now = performance.now()): number {
    return this.inFlight > 0 ? now - this.lastProgress : 0;
  }

  /** Stops sending; waits up to `timeout` ms for sends in flight to be acknowledged. */
  async stop(timeout = 2000): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.lingerTimer);
    const deadline = performance.now() + timeout;
    while (this.inFlight > 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  }
}
