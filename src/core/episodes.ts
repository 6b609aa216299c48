/**
 * Remembers which causes are failing now, so that each is logged once when it starts and once
 * when it ends (an episode), however many times it happens in between. Memory is bounded: at
 * most `max` causes are remembered; past that, new causes are counted in `untracked` and the
 * caller logs them as one.
 */
export class Episodes<K = string> {
  private readonly open = new Map<K, number>();
  untracked = 0;

  constructor(readonly max = 1000) {}

  /**
   * Notes one occurrence of `cause`. True when this starts an episode (log it now); false when
   * the episode is already open, or when the cause could not be remembered (see `untracked`).
   */
  begin(cause: K): boolean {
    const seen = this.open.get(cause);
    if (seen !== undefined) {
      this.open.set(cause, seen + 1);
      return false;
    }
    if (this.open.size >= this.max) {
      this.untracked++;
      return this.untracked === 1;
    }
    this.open.set(cause, 1);
    return true;
  }

  /** Ends the episode of `cause`: how many times it happened, or 0 when none was open (nothing to log). */
  end(cause: K): number {
    const count = this.open.get(cause);
    if (count === undefined) return 0;
    this.open.delete(cause);
    return count;
  }

  has(cause: K): boolean {
    return this.open.has(cause);
  }

  get size(): number {
    return this.open.size;
  }
}
