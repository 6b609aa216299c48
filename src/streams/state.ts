import type { Database, Statement } from 'better-sqlite3';

/**
 * Per-key state of stream steps, kept in memory and saved to SQLite in the same transaction
 * as the outbox group that carries the results computed from it: after a crash, state and
 * results agree, so energy is neither counted twice nor lost.
 */
export class StateStore {
  private readonly values = new Map<string, unknown>();
  private readonly dirty = new Set<string>();
  private readonly upsert: Statement;
  private readonly remove: Statement;

  constructor(
    private readonly db: Database,
    /** Called when state changed, so that the next group commit saves it. */
    private readonly changed: () => void = () => {},
  ) {
    db.exec('CREATE TABLE IF NOT EXISTS state (scope TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (scope, key)) WITHOUT ROWID');
    this.upsert = db.prepare('INSERT INTO state (scope, key, value) VALUES (?, ?, ?) ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value');
    this.remove = db.prepare('DELETE FROM state WHERE scope = ? AND key = ?');
    for (const row of db.prepare('SELECT scope, key, value FROM state').iterate() as Iterable<{ scope: string; key: string; value: string }>) {
      this.values.set(compose(row.scope, row.key), JSON.parse(row.value));
    }
  }

  /** The state of one step, e.g. scope `power-15m/1` for the second step of stream power-15m. */
  scope(scope: string): ScopedState {
    return new ScopedState(this, scope);
  }

  get<T>(scope: string, key: string): T | undefined {
    return this.values.get(compose(scope, key)) as T | undefined;
  }

  set(scope: string, key: string, value: unknown): void {
    const id = compose(scope, key);
    this.values.set(id, value);
    this.dirty.add(id);
    this.changed();
  }

  delete(scope: string, key: string): void {
    const id = compose(scope, key);
    this.values.delete(id);
    this.dirty.add(id);
    this.changed();
  }

  /** Every key of a scope with its value (a scan of the whole store: for start-up, not the hot path). */
  *entries(scope: string): Generator<[string, unknown]> {
    const prefix = scope + SEPARATOR;
    for (const [id, value] of this.values) if (id.startsWith(prefix)) yield [id.slice(prefix.length), value];
  }

  /** Forgets every key of a scope (a stream that was removed or changed). */
  clearScope(scope: string): void {
    const prefix = scope + SEPARATOR;
    for (const id of this.values.keys()) if (id.startsWith(prefix)) this.delete(scope, id.slice(prefix.length));
  }

  get pending(): number {
    return this.dirty.size;
  }

  /** Writes changed keys; call inside the group-commit transaction, then `saved()` once it committed. */
  save(): void {
    for (const id of this.dirty) {
      const at = id.indexOf(SEPARATOR);
      const scope = id.slice(0, at);
      const key = id.slice(at + 1);
      const value = this.values.get(id);
      if (value === undefined) this.remove.run(scope, key);
      else this.upsert.run(scope, key, JSON.stringify(value));
    }
  }

  saved(): void {
    this.dirty.clear();
  }
}

const SEPARATOR = '\u0000';
const compose = (scope: string, key: string) => scope + SEPARATOR + key;

/** The view of the store that one step sees: its own keys only. */
export class ScopedState {
  constructor(
    private readonly store: StateStore,
    readonly name: string,
  ) {}

  get<T>(key: string): T | undefined {
    return this.store.get<T>(this.name, key);
  }

  set(key: string, value: unknown): void {
    this.store.set(this.name, key, value);
  }

  delete(key: string): void {
    this.store.delete(this.name, key);
  }

  entries<T>(): Generator<[string, T]> {
    return this.store.entries(this.name) as Generator<[string, T]>;
  }
}
