/**
 * Capped exponential backoff with full jitter: the wait before attempt n+1 is random in
 * [0, min(max, base * 2^n)], so that many gateways (or many devices) that lost the same server
 * do not all come back in the same millisecond. Delays are for setTimeout, which runs on the
 * monotonic clock, so a wall-clock step neither shortens nor stretches them.
 */
/**
 * For `Backoff`'s random: a wait in the upper half of the ceiling (equal jitter), where a retry
 * must not come almost at once (a broker that just refused, a queue restarted from its oldest).
 */
export const upperHalf = () => 0.5 + Math.random() / 2;

export class Backoff {
  private failures = 0;

  constructor(
    readonly base = 500,
    readonly max = 30_000,
    private readonly random: () => number = Math.random,
  ) {}

  /** The wait after one more failure, in ms. */
  next(): number {
    const ceiling = Math.min(this.max, this.base * 2 ** Math.min(this.failures, 30));
    this.failures++;
    return Math.round(this.random() * ceiling);
  }

  /** Failures since the last success. */
  get attempts(): number {
    return this.failures;
  }

  reset(): void {
    this.failures = 0;
  }
}
