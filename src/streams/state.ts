import type { Database, Statement } from 'better-sqlite3';
import type { Logger } from 'pino';
import type { StepState } from '../operators/operator.js';

export interface StateOptions {
  /** A key neither read nor written for this long (ms) is pruned, unless its step retains it. */
  ttl: number;
  /** Keys of one step held in memory; the others stay in SQLite until used. */
  cacheKeys: number;
  log?: Logger;
  now?: () => number;
}

export const STATE_DEFAULTS: StateOptions = { ttl: 7 * 86_400_000, cacheKeys: 10_000 };

/** In the cache: a key known to have no value (not in SQLite, or deleted and not yet saved). */
const NONE = Symbol('none');

interface Entry {
  value: unknown;
  /** When SQLite last recorded the key as used (0: not saved yet). */
  seen: number;
  /** In the scope's `dirty` set: a flag read per `set`, where a Set lookup would hash the key. */
  dirty: boolean;
}

/** Rows looked at per pruning transaction, so that a large table does not stall the event loop. */
const PRUNE_BATCH = 1000;

/**
 * Keys written per INSERT statement at a save: a burst changes hundreds of keys between two
 * commits, and one statement of 32 rows costs a third less CPU than 32 of one (better-sqlite3
 * binds and steps once; 560 keys per commit: 2.1 -> 1.4 µs per key).
 */
const UPSERT_ROWS = 32;
const UPSERT_SQL = (rows: number) =>
  `INSERT INTO state (scope, key, value, seen) VALUES ${Array.from({ length: rows }, () => '(?, ?, ?, ?)').join(', ')} ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value, seen = excluded.seen`;

/**
 * Per-key state of stream steps, saved to SQLite in the same transaction as the outbox group
 * that carries the results computed from it: after a crash, state and results agree, so energy
 * is neither counted twice nor lost.
 *
 * Memory is bounded: nothing is loaded at start; a key is read from SQLite on first use and
 * kept in a cache of at most `cacheKeys` keys per step (keys changed since the last commit stay
 * until it saved them). SQLite records when each key was last used; `prune` deletes keys unused
 * for `ttl`, except those a step marks as holding something still owed (`ScopedState.retain`:
 * open windows, held readings, an energy counter's baseline), which are kept and counted.
 */
export class StateStore {
  private readonly scopes = new Map<string, ScopedState>();
  /** @internal */ readonly selectOne: Statement;
  private readonly upsert: Statement;
  private readonly upsertMany: Statement;
  /** The parameters of `upsertMany` and their entries, filled at a save (reused: no garbage per commit). */
  private readonly upsertArgs: unknown[] = new Array(UPSERT_ROWS * 4);
  private readonly upsertEntries: (Entry | undefined)[] = new Array(UPSERT_ROWS);
  private readonly remove: Statement;
  private readonly removeScope: Statement;
  private readonly countScope: Statement;
  /** @internal */ readonly selectPage: Statement;
  private readonly selectStale: Statement;
  private readonly pruneBatch: (cutoff: number, afterScope: string, afterKey: string) => { last?: [string, string]; pruned: number; kept: number };
  readonly options: StateOptions;
  /** @internal */ readonly now: () => number;
  /** @internal */ readonly touchAfter: number;
  /** Keys pruned since start, and stale keys kept at the last pruning because their step retains them. */
  pruned = 0;
  retained = 0;

  constructor(
    private readonly db: Database,
    /** Called when state changed, so that the next group commit saves it. */
    private readonly changed: () => void = () => {},
    options: Partial<StateOptions> = {},
  ) {
    this.options = { ...STATE_DEFAULTS, ...options };
    this.now = this.options.now ?? Date.now;
    // a key only read is written back now and then, so that its use is recorded for pruning
    this.touchAfter = Math.min(3_600_000, Math.floor(this.options.ttl / 8));
    db.exec('CREATE TABLE IF NOT EXISTS state (scope TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, seen INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (scope, key)) WITHOUT ROWID');
    const columns = db.prepare('SELECT name FROM pragma_table_info(?)').pluck().all('state') as string[];
    if (!columns.includes('seen')) {
      // a database from before pruning: its keys count as used now, so they get a full ttl
      db.transaction(() => {
        db.exec('ALTER TABLE state ADD COLUMN seen INTEGER NOT NULL DEFAULT 0');
        db.prepare('UPDATE state SET seen = ?').run(this.now());
      })();
    }
    this.selectOne = db.prepare('SELECT value, seen FROM state WHERE scope = ? AND key = ?');
    this.upsert = db.prepare(UPSERT_SQL(1));
    this.upsertMany = db.prepare(UPSERT_SQL(UPSERT_ROWS));
    this.remove = db.prepare('DELETE FROM state WHERE scope = ? AND key = ?');
    this.removeScope = db.prepare('DELETE FROM state WHERE scope = ?');
    this.countScope = db.prepare('SELECT COUNT(*) FROM state WHERE scope = ?').pluck();
    this.selectPage = db.prepare('SELECT key, value FROM state WHERE scope = ? AND key > ? ORDER BY key LIMIT 500');
    this.selectStale = db.prepare('SELECT scope, key, value FROM state WHERE seen < ? AND (scope, key) > (?, ?) ORDER BY scope, key LIMIT ?');
    this.pruneBatch = db.transaction((cutoff: number, afterScope: string, afterKey: string) => {
      const rows = this.selectStale.all(cutoff, afterScope, afterKey, PRUNE_BATCH) as { scope: string; key: string; value: string }[];
      let pruned = 0;
      let kept = 0;
      for (const row of rows) {
        const scope = this.scopes.get(row.scope);
        const cached = scope?.cache.get(row.key);
        // changed since the last commit (or saved by it a moment ago): in use, not stale
        if (scope?.dirty.has(row.key) || (cached && cached.seen >= cutoff)) continue;
        if (scope?.retain?.(JSON.parse(row.value))) {
          kept++;
          continue;
        }
        this.remove.run(row.scope, row.key);
        scope?.forget(row.key);
        pruned++;
      }
      const last = rows.at(-1);
      return { last: last && ([last.scope, last.key] as [string, string]), pruned, kept };
    });
  }

  /** The state of one step, e.g. scope `power-15m/1/energy` for the second step of stream power-15m. */
  scope(name: string): ScopedState {
    let scope = this.scopes.get(name);
    if (!scope) this.scopes.set(name, (scope = new ScopedState(name, this, this.changed)));
    return scope;
  }

  /** Forgets every key of a scope (a stream that was removed or changed). */
  clearScope(name: string): void {
    const scope = this.scopes.get(name);
    if (scope) {
      scope.forgetAll();
    }
    this.removeScope.run(name);
  }

  /** Keys a step holds, saved or not yet (for the API's instances; one COUNT over the step's rows). */
  keyCount(name: string): number {
    let n = this.countScope.get(name) as number;
    const scope = this.scopes.get(name);
    for (const key of scope?.dirty ?? []) {
      const entry = scope!.cache.get(key)!;
      // new and unsaved: not in SQLite yet; deleted and unsaved: still there
      if (entry.value !== NONE && entry.seen === 0) n++;
      else if (entry.value === NONE && entry.seen > 0) n--;
    }
    return n;
  }

  /** Keys changed since the last save. */
  get pending(): number {
    let n = 0;
    for (const scope of this.scopes.values()) n += scope.dirty.size;
    return n;
  }

  /** Writes changed keys; call inside the group-commit transaction, then `saved()` once it committed. */
  save(): void {
    const now = this.now();
    const args = this.upsertArgs;
    const entries = this.upsertEntries;
    // keys to write go UPSERT_ROWS to a statement (each key once: `dirty` is a set per scope)
    let n = 0;
    for (const scope of this.scopes.values()) {
      for (const key of scope.dirty) {
        const entry = scope.cache.get(key)!;
        if (entry.value === NONE) {
          this.remove.run(scope.name, key);
          entry.seen = 0; // no longer in SQLite
          continue;
        }
        args[4 * n] = scope.name;
        args[4 * n + 1] = key;
        args[4 * n + 2] = JSON.stringify(entry.value);
        args[4 * n + 3] = now;
        entries[n] = entry;
        if (++n < UPSERT_ROWS) continue;
        this.upsertMany.run(args);
        for (const written of entries) written!.seen = now;
        n = 0;
      }
    }
    for (let i = 0; i < n; i++) {
      this.upsert.run(args[4 * i], args[4 * i + 1], args[4 * i + 2], now);
      entries[i]!.seen = now;
    }
    // hold no values past the save
    args.fill(undefined);
    entries.fill(undefined);
  }

  saved(): void {
    for (const scope of this.scopes.values()) {
      scope.clean();
      scope.evict(scope.cache.size - this.options.cacheKeys);
    }
  }

  /**
   * Deletes keys unused for `ttl` whose step does not retain them (see `ScopedState.retain`).
   * Stale keys of a scope no step uses any more (a stream removed while the agent was down) go
   * too. Logs what it pruned, and once per episode the stale keys it had to keep.
   */
  async prune(now = this.now()): Promise<{ pruned: number; kept: number }> {
    const cutoff = now - this.options.ttl;
    let pruned = 0;
    let kept = 0;
    let after: [string, string] | undefined = ['', ''];
    while (after) {
      const batch = this.pruneBatch(cutoff, after[0], after[1]);
      pruned += batch.pruned;
      kept += batch.kept;
      after = batch.last;
      // 1000 rows at a time, with the event loop free in between (510,000 rows: 1.8 s in all)
      if (after) await new Promise((resolve) => setImmediate(resolve));
    }
    this.pruned += pruned;
    const log = this.options.log;
    if (pruned > 0) log?.info({ pruned, total: this.pruned }, `state: pruned ${pruned} keys unused for ${days(this.options.ttl)} (agent.state_ttl)`);
    if (kept > 0 && this.retained === 0) {
      log?.warn({ kept }, `state: ${kept} keys unused for ${days(this.options.ttl)} are kept: they hold open windows, held readings or an energy counter's baseline (see agent.state_ttl)`);
    }
    this.retained = kept;
    return { pruned, kept };
  }
}

/** The view of the store that one step sees: its own keys only. */
export class ScopedState implements StepState {
  /** @internal Keys in memory, oldest first (a used key moves to the end now and then). */
  readonly cache = new Map<string, Entry>();
  /** @internal */ readonly dirty = new Set<string>();
  /**
   * Set by a step whose state can hold something still owed (an open window, a held reading, a
   * counter's baseline): a key for which it answers true is never pruned, however old.
   */
  retain?: (value: unknown) => boolean;
  /**
   * The entry of the key read or written last: a step gets its key's state and sets it again
   * for each reading, and the second Map lookup is then a string comparison. Cleared whenever an
   * entry leaves the cache.
   */
  private lastKey: string | undefined;
  private lastEntry: Entry | undefined;

  constructor(
    readonly name: string,
    private readonly store: StateStore,
    private readonly changed: () => void,
  ) {}

  get<T>(key: string): T | undefined {
    let entry = this.cached(key);
    if (!entry) {
      const row = this.store.selectOne.get(this.name, key) as { value: string; seen: number } | undefined;
      entry = row ? { value: JSON.parse(row.value), seen: row.seen, dirty: false } : { value: NONE, seen: 0, dirty: false };
      this.remember(key, entry);
    } else if (entry.value !== NONE && entry.seen > 0 && !entry.dirty && this.store.now() - entry.seen > this.store.touchAfter) {
      // used, but not written for a while: record the use with the next commit
      this.cache.delete(key);
      this.cache.set(key, entry);
      this.markDirty(key, entry);
    }
    return entry.value === NONE ? undefined : (entry.value as T);
  }

  /** Stores a value (or marks a mutated one); saved with the next group commit. */
  set(key: string, value: unknown): void {
    // steps mostly mutate their state object and set it again: only mark it
    let entry = this.cached(key);
    if (entry) entry.value = value;
    else this.remember(key, (entry = { value, seen: 0, dirty: false }));
    this.markDirty(key, entry);
  }

  delete(key: string): void {
    let entry = this.cached(key);
    if (entry) entry.value = NONE;
    else this.remember(key, (entry = { value: NONE, seen: 0, dirty: false }));
    this.markDirty(key, entry);
  }

  /** Every key of the step and its value, read from SQLite page by page (for a step's start). */
  *entries<T>(): IterableIterator<[string, T]> {
    let after = '';
    for (;;) {
      const rows = this.store.selectPage.all(this.name, after) as { key: string; value: string }[];
      for (const row of rows) if (!this.cache.has(row.key)) yield [row.key, JSON.parse(row.value) as T];
      if (rows.length < 500) break;
      after = rows[rows.length - 1].key;
    }
    for (const [key, entry] of this.cache) if (entry.value !== NONE) yield [key, entry.value as T];
  }

  /** @internal Drops up to `count` of the oldest keys that hold nothing unsaved. */
  evict(count: number): void {
    if (count <= 0) return;
    for (const [key, entry] of this.cache) {
      if (count <= 0) break;
      if (entry.dirty) continue;
      this.forget(key);
      count--;
    }
  }

  /** @internal Takes a key out of the cache (not out of SQLite). */
  forget(key: string): void {
    this.cache.delete(key);
    if (key === this.lastKey) this.lastKey = this.lastEntry = undefined;
  }

  /** @internal Empties the cache, unsaved changes included. */
  forgetAll(): void {
    this.cache.clear();
    this.dirty.clear();
    this.lastKey = this.lastEntry = undefined;
  }

  /** @internal The changed keys were saved. */
  clean(): void {
    for (const key of this.dirty) this.cache.get(key)!.dirty = false;
    this.dirty.clear();
  }

  private cached(key: string): Entry | undefined {
    if (key === this.lastKey) return this.lastEntry;
    const entry = this.cache.get(key);
    if (entry) {
      this.lastKey = key;
      this.lastEntry = entry;
    }
    return entry;
  }

  private remember(key: string, entry: Entry): void {
    this.cache.set(key, entry);
    this.lastKey = key;
    this.lastEntry = entry;
    // keep the cache near its cap between commits; what is left over goes at `saved()`
    if (this.cache.size > this.store.options.cacheKeys) {
      const [oldest, old] = this.cache.entries().next().value!;
      if (oldest !== key && !old.dirty) this.forget(oldest);
    }
  }

  private markDirty(key: string, entry: Entry): void {
    if (!entry.dirty) {
      entry.dirty = true;
      this.dirty.add(key);
      this.changed();
    }
  }
}

function days(ms: number): string {
  return ms % 86_400_000 === 0 ? `${ms / 86_400_000}d` : ms % 3_600_000 === 0 ? `${ms / 3_600_000}h` : `${ms / 1000}s`;
}
