import type { Database, Statement } from 'better-sqlite3';

/**
 * Per-key state of stream steps, kept in memory and saved to SQLite in the same transaction
 * as the outbox group that carries the results computed from it: after a crash, state and
 * results agree, so energy is neither counted twice nor lost.
 */
export class StateStore {
  private readonly scopes = new Map<string, ScopedState>();
  private readonly upsert: Statement;
  private readonly remove: Statement;

  constructor(
    db: Database,
    /** Called when state changed, so that the next group commit saves it. */
    private readonly changed: () => void = () => {},
  ) {
    db.exec('CREATE TABLE IF NOT EXISTS state (scope TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (scope, key)) WITHOUT ROWID');
    this.upsert = db.prepare('INSERT INTO state (scope, key, value) VALUES (?, ?, ?) ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value');
    this.remove = db.prepare('DELETE FROM state WHERE scope = ? AND key = ?');
    for (const row of db.prepare('SELECT scope, key, value FROM state').iterate() as Iterable<{ scope: string; key: string; value: string }>) {
      this.scope(row.scope).values.set(row.key, JSON.parse(row.value));
    }
  }

  /** The state of one step, e.g. scope `power-15m/1/energy` for the second step of stream power-15m. */
  scope(name: string): ScopedState {
    let scope = this.scopes.get(name);
    if (!scope) this.scopes.set(name, (scope = new ScopedState(name, this.changed)));
    return scope;
  }

  /** Forgets every key of a scope (a stream that was removed or changed). */
  clearScope(name: string): void {
    const scope = this.scopes.get(name);
    if (scope) for (const key of [...scope.values.keys()]) scope.delete(key);
  }

  /** Keys changed since the last save. */
  get pending(): number {
    let n = 0;
    for (const scope of this.scopes.values()) n += scope.dirty.size;
    return n;
  }

  /** Writes changed keys; call inside the group-commit transaction, then `saved()` once it committed. */
  save(): void {
    for (const scope of this.scopes.values()) {
      for (const key of scope.dirty) {
        const value = scope.values.get(key);
        if (value === undefined) this.remove.run(scope.name, key);
        else this.upsert.run(scope.name, key, JSON.stringify(value));
      }
    }
  }

  saved(): void {
    for (const scope of this.scopes.values()) scope.dirty.clear();
  }
}

/** The view of the store that one step sees: its own keys only. */
export class ScopedState {
  /** @internal */ readonly values = new Map<string, unknown>();
  /** @internal */ readonly dirty = new Set<string>();

  constructor(
    readonly name: string,
    private readonly changed: () => void,
  ) {}

  get<T>(key: string): T | undefined {
    return this.values.get(key) as T | undefined;
  }

  /** Stores a value (or marks a mutated one); saved with the next group commit. */
  set(key: string, value: unknown): void {
    // steps mostly mutate their state object and set it again: only mark it
    if (this.values.get(key) !== value) this.values.set(key, value);
    if (!this.dirty.has(key)) {
      this.dirty.add(key);
      this.changed();
    }
  }

  delete(key: string): void {
    this.values.delete(key);
    this.dirty.add(key);
    this.changed();
  }

  entries<T>(): IterableIterator<[string, T]> {
    return this.values.entries() as IterableIterator<[string, T]>;
  }
}
