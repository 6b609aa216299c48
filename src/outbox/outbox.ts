import type { Database, Statement } from 'better-sqlite3';
import type { Logger } from 'pino';
import type { OutboxConfig } from '../config/types.js';
import type { StateStore } from '../streams/state.js';
import type { Reading } from '../streams/reading.js';
import { isDiskFull } from './database.js';
import { recordJson } from './record.js';

/** A record as stored for one upstream; `payload` is the record's JSON, seq included. */
export interface OutboxRow {
  id: number;
  stream: string;
  device: string;
  payload: string;
}

export type DropReason = 'overflow' | 'expired';

interface Pending {
  upstreams: readonly string[];
  at: number;
  stream: string;
  device: string;
  payload: string;
}

/**
 * The store-and-forward buffer: the only way anything goes upstream. Records are committed
 * to SQLite in groups (group_records, or group_wait after the first, whichever comes first),
 * together with the stream state that produced them, and deleted only when their upstream
 * acknowledged them. One ordered queue per upstream; bounded by max_size and max_age.
 */
export class Outbox {
  /** The last seq handed out; persisted with each group. */
  private seq: number;
  private group: Pending[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly depths = new Map<string, number>();
  readonly drops = new Map<string, Record<DropReason, number>>();
  private readonly committedListeners: (() => void)[] = [];
  private lastDropLog = 0;
  private writeFailing = false;
  private readonly insert: Statement;
  private readonly saveSeq: Statement;
  private readonly selectAfter: Statement;
  private readonly deleteRange: Statement;
  private readonly oldest: Statement;
  private readonly moveToDeadLetter: Statement;
  private readonly deleteOne: Statement;
  private readonly writeGroup: (group: Pending[]) => void;

  constructor(
    private readonly db: Database,
    private readonly config: OutboxConfig,
    private readonly agentId: string,
    private readonly state: StateStore,
    private readonly log: Logger,
  ) {
    db.exec(`
      CREATE TABLE IF NOT EXISTS outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        upstream TEXT NOT NULL,
        at INTEGER NOT NULL,
        stream TEXT NOT NULL,
        device TEXT NOT NULL,
        payload TEXT NOT NULL);
      CREATE INDEX IF NOT EXISTS outbox_by_upstream ON outbox (upstream, id);
      CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS dead_letter (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        upstream TEXT NOT NULL,
        at INTEGER NOT NULL,
        rejected_at INTEGER NOT NULL,
        reason TEXT NOT NULL,
        stream TEXT NOT NULL,
        device TEXT NOT NULL,
        payload TEXT NOT NULL);`);
    this.insert = db.prepare('INSERT INTO outbox (upstream, at, stream, device, payload) VALUES (?, ?, ?, ?, ?)');
    this.saveSeq = db.prepare("INSERT INTO meta (key, value) VALUES ('seq', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value");
    this.selectAfter = db.prepare('SELECT id, stream, device, payload FROM outbox WHERE upstream = ? AND id > ? ORDER BY id LIMIT ?');
    this.deleteRange = db.prepare('DELETE FROM outbox WHERE upstream = ? AND id BETWEEN ? AND ?');
    this.oldest = db.prepare('SELECT at FROM outbox WHERE upstream = ? ORDER BY id LIMIT 1').pluck();
    this.moveToDeadLetter = db.prepare(
      'INSERT INTO dead_letter (upstream, at, rejected_at, reason, stream, device, payload) SELECT upstream, at, ?, ?, stream, device, payload FROM outbox WHERE upstream = ? AND id = ?',
    );
    this.deleteOne = db.prepare('DELETE FROM outbox WHERE upstream = ? AND id = ?');
    this.seq = (db.prepare("SELECT value FROM meta WHERE key = 'seq'").pluck().get() as number | undefined) ?? 0;
    for (const row of db.prepare('SELECT upstream, count(*) AS n FROM outbox GROUP BY upstream').all() as { upstream: string; n: number }[]) {
      this.depths.set(row.upstream, row.n);
    }
    this.writeGroup = db.transaction((group: Pending[]) => {
      for (const record of group) {
        for (const upstream of record.upstreams) this.insert.run(upstream, record.at, record.stream, record.device, record.payload);
      }
      this.state.save();
      this.saveSeq.run(this.seq);
    });
  }

  /** Upstreams that still hold records but are no longer configured. */
  orphans(configured: readonly string[]): string[] {
    return [...this.depths.entries()].filter(([name, n]) => n > 0 && !configured.includes(name)).map(([name]) => name);
  }

  /** Queues one record for the given upstreams; it counts as accepted once its group commits. */
  add(upstreams: readonly string[], stream: string, reading: Reading): void {
    const payload = recordJson(this.agentId, stream, reading, ++this.seq);
    this.group.push({ upstreams, at: Date.now(), stream, device: reading.device, payload });
    if (this.group.length >= this.config.group_records) this.commit();
    else this.scheduleCommit();
  }

  /** Makes sure a commit follows soon: records or state are waiting. */
  scheduleCommit(): void {
    this.timer ??= setTimeout(() => this.commit(), this.config.group_wait);
  }

  /** Called after each group commit: the forwarders have something new to read. */
  onCommitted(listener: () => void): void {
    this.committedListeners.push(listener);
  }

  removeCommitListeners(): void {
    this.committedListeners.length = 0;
  }

  /** Commits the open group (and changed stream state) now. */
  commit(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.group.length === 0 && this.state.pending === 0) return;
    const group = this.group;
    this.group = [];
    try {
      this.writeGroup(group);
      this.committed(group);
    } catch (err) {
      if (isDiskFull(err)) this.whenFull(group, err as Error);
      else this.retryLater(group, err as Error);
    }
  }

  private committed(group: Pending[]): void {
    this.state.saved();
    for (const record of group) {
      for (const upstream of record.upstreams) this.depths.set(upstream, (this.depths.get(upstream) ?? 0) + 1);
    }
    if (this.writeFailing) {
      this.writeFailing = false;
      this.log.info('outbox: writing again');
    }
    for (const listener of this.committedListeners) listener();
  }

  /** The cap (or the disk) is reached: apply when_full. */
  private whenFull(group: Pending[], err: Error): void {
    let kept: Pending[] = [];
    if (this.config.when_full === 'drop-oldest') {
      const needed = group.reduce((n, r) => n + r.upstreams.length, 0);
      let fitted = false;
      for (let attempt = 0; attempt < 8 && !fitted; attempt++) {
        const freed = this.dropOldest(Math.max(needed, 256) << attempt);
        fitted = this.tryWrite(group);
        if (!fitted && freed === 0) break;
      }
      // Even an empty outbox cannot hold the whole group: keep its newest records that fit.
      kept = fitted ? group : this.largestFit(group, (n) => group.slice(group.length - n));
      this.countDrops(group.slice(0, group.length - kept.length));
    } else {
      // reject-new: keep the group's oldest records that still fit, reject the rest.
      kept = this.largestFit(group, (n) => group.slice(0, n));
      this.countDrops(group.slice(kept.length));
    }
    if (kept.length > 0) this.committed(kept);
    if (kept.length < group.length) {
      try {
        // the rejected records' seqs and the state stay saved
        this.db.transaction(() => {
          this.state.save();
          this.saveSeq.run(this.seq);
        })();
        this.state.saved();
      } catch {
        // the disk is full beyond the outbox's own cap; state is saved with the next group
      }
    }
    this.logDrops(`outbox ${this.db.name} is full (${err.message}); when_full: ${this.config.when_full}`);
  }

  private tryWrite(records: Pending[]): boolean {
    try {
      this.writeGroup(records);
      return true;
    } catch (err) {
      if (isDiskFull(err)) return false;
      throw err;
    }
  }

  /** Writes the largest `part(n)` that fits (binary search on n); returns what was written. */
  private largestFit(group: Pending[], part: (n: number) => Pending[]): Pending[] {
    let low = 0;
    let high = group.length;
    let written: Pending[] = [];
    while (low < high) {
      const n = Math.ceil((low + high) / 2);
      // a smaller part is tried only after a larger one failed, so nothing is written twice
      if (this.tryWriteDry(part(n))) low = n;
      else high = n - 1;
    }
    if (low > 0 && this.tryWrite((written = part(low)))) return written;
    return [];
  }

  /** Whether the records would fit: written in a transaction that is then rolled back. */
  private tryWriteDry(records: Pending[]): boolean {
    const rollback = new Error('dry run');
    try {
      this.db.transaction(() => {
        for (const record of records) {
          for (const upstream of record.upstreams) this.insert.run(upstream, record.at, record.stream, record.device, record.payload);
        }
        throw rollback;
      })();
    } catch (err) {
      if (err === rollback) return true;
      if (isDiskFull(err)) return false;
      throw err;
    }
    return false;
  }

  private countDrops(records: Pending[]): void {
    for (const record of records) for (const upstream of record.upstreams) this.countDrop(upstream, 'overflow', 1);
  }

  private dropOldest(count: number): number {
    const dropped = this.db
      .prepare('DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?) RETURNING upstream')
      .pluck()
      .all(count) as string[];
    const perUpstream = new Map<string, number>();
    for (const upstream of dropped) perUpstream.set(upstream, (perUpstream.get(upstream) ?? 0) + 1);
    for (const [upstream, n] of perUpstream) {
      this.depths.set(upstream, (this.depths.get(upstream) ?? 0) - n);
      this.countDrop(upstream, 'overflow', n);
    }
    return dropped.length;
  }

  /** A write error that is not "full" (I/O error, locked file): keep the group and try again. */
  private retryLater(group: Pending[], err: Error): void {
    if (!this.writeFailing) {
      this.writeFailing = true;
      this.log.error({ err }, `outbox: cannot write to ${this.db.name} (${err.message}); keeping ${group.length} records in memory and retrying`);
    }
    this.group = group.concat(this.group);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.commit(), 1000);
  }

  /** Drops records older than max_age; run it now and then. */
  expire(now = Date.now()): void {
    const cutoff = now - this.config.max_age;
    const expired = this.db.prepare('SELECT upstream, count(*) AS n FROM outbox WHERE at < ? GROUP BY upstream').all(cutoff) as { upstream: string; n: number }[];
    if (expired.length === 0) return;
    this.db.prepare('DELETE FROM outbox WHERE at < ?').run(cutoff);
    for (const { upstream, n } of expired) {
      this.depths.set(upstream, (this.depths.get(upstream) ?? 0) - n);
      this.countDrop(upstream, 'expired', n);
    }
    this.logDrops(`outbox ${this.db.name}: records older than max_age dropped`);
  }

  private countDrop(upstream: string, reason: DropReason, n: number): void {
    let counts = this.drops.get(upstream);
    if (!counts) this.drops.set(upstream, (counts = { overflow: 0, expired: 0 }));
    counts[reason] += n;
  }

  /** One log line per ten seconds at most, with the running totals. */
  private logDrops(message: string): void {
    const now = Date.now();
    if (now - this.lastDropLog < 10_000) return;
    this.lastDropLog = now;
    this.log.warn({ drops: Object.fromEntries(this.drops) }, message);
  }

  /** The next records of an upstream's queue after `afterId`, oldest first. */
  read(upstream: string, afterId: number, limit: number): OutboxRow[] {
    return this.selectAfter.all(upstream, afterId, limit) as OutboxRow[];
  }

  /**
   * The upstream refused these records for good: move them to the dead-letter table (kept for
   * a person to look at, never sent again) so that the queue behind them keeps flowing.
   */
  deadLetter(upstream: string, ids: readonly number[], reason: string): void {
    const now = Date.now();
    let moved = 0;
    this.db.transaction(() => {
      for (const id of ids) {
        this.moveToDeadLetter.run(now, reason, upstream, id);
        moved += this.deleteOne.run(upstream, id).changes;
      }
    })();
    this.depths.set(upstream, (this.depths.get(upstream) ?? 0) - moved);
    this.deadLettered.set(upstream, (this.deadLettered.get(upstream) ?? 0) + moved);
  }

  /** Records moved to the dead-letter table, per upstream, since start. */
  readonly deadLettered = new Map<string, number>();

  /** The upstream acknowledged records `fromId..toId`: delete them. */
  ack(upstream: string, fromId: number, toId: number): void {
    const { changes } = this.deleteRange.run(upstream, fromId, toId);
    this.depths.set(upstream, (this.depths.get(upstream) ?? 0) - changes);
  }

  /** Acknowledges single records (an upstream that answered for part of a send). */
  ackIds(upstream: string, ids: readonly number[]): void {
    let changes = 0;
    this.db.transaction(() => {
      for (const id of ids) changes += this.deleteOne.run(upstream, id).changes;
    })();
    this.depths.set(upstream, (this.depths.get(upstream) ?? 0) - changes);
  }

  depth(upstream: string): number {
    return this.depths.get(upstream) ?? 0;
  }

  /** Age in ms of the oldest record waiting for an upstream, or 0. */
  oldestAge(upstream: string, now = Date.now()): number {
    const at = this.oldest.get(upstream) as number | undefined;
    return at === undefined ? 0 : now - at;
  }

  get lastSeq(): number {
    return this.seq;
  }

  /** Seqs handed out from now on follow `seq` (another database was in use before this one). */
  continueAfter(seq: number): void {
    if (seq <= this.seq) return;
    this.seq = seq;
    this.saveSeq.run(seq);
  }

  /** Commits what is open; call before closing the database. */
  close(): void {
    this.commit();
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
