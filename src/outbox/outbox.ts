import type { Database, Statement } from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { OutboxConfig } from './config.js';
import type { Reading } from '../core/reading.js';
import { Episodes } from '../core/episodes.js';
import { applySizeCap, isDiskFull, storageFault } from './database.js';
import { recordJson } from './record.js';


/** The stream state that is saved in the same transaction as each group (see StateStore). */
export interface GroupState {
  /** Keys changed since the last save. */
  readonly pending: number;
  /** Writes the changed keys: called inside the group's transaction. */
  save(): void;
  /** The transaction committed. */
  saved(): void;
}

/** A record as stored for one upstream; `payload` is the record's JSON, seq included. */
export interface OutboxRow {
  id: number;
  stream: string;
  device: string;
  payload: string;
}

/**
 * overflow: when_full (the cap or a full disk); expired: older than max_age; refused: not
 * accepted because the storage fails (I/O error, read-only, no permission).
 */
export type DropReason = 'overflow' | 'expired' | 'refused';

/** The drop counts of an upstream that has lost nothing yet, one per reason. */
export function noDrops(): Record<DropReason, number> {
  return { overflow: 0, expired: 0, refused: 0 };
}

/** The clocks the outbox reads; tests inject their own. */
export interface OutboxClocks {
  /** Wall-clock ms (stored with each record, compared with max_age). */
  wall(): number;
  /** Monotonic ms: how long this process has really held a record. */
  mono(): number;
}

const SYSTEM_CLOCKS: OutboxClocks = { wall: Date.now, mono: () => performance.now() };

/** What the seq side file says was saved before, when the database holds less (a lost tail). */
export interface OutboxLoss {
  /** The epoch of the opening that saved `seenSeq`. */
  epoch: string;
  /** The last seq the database holds. */
  savedSeq: number;
  /** The last seq committed before, by the side file. */
  seenSeq: number;
}

/** Records of one upstream acknowledged and not deleted yet: ids `from..to`, `n` rows of the table. */
interface AckedRange {
  from: number;
  to: number;
  n: number;
}

/** Deletes of acknowledged records to run in one transaction, and each touched upstream's ranges after them. */
interface DeletePlan {
  pieces: { upstream: string; from: number; to: number }[];
  after: Map<string, AckedRange[]>;
  rows: number;
}

/**
 * An upstream's acknowledged ranges waiting for their delete: past this many, they are deleted
 * at once (in transactions of their own). Keeps the memory and the `meta` row that saves them
 * small (about 25 bytes a range).
 */
const ACKED_RANGES = 16;
/** Rows of acknowledged records deleted in one transaction, at most (a forwarder's batch is 1,000). */
const DELETE_CHUNK = 1000;
/** When no group commit came this long after an acknowledgement, its records are deleted on their own (at least 2 × group_wait). */
const ACKED_WAIT = 5000;

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
 * acknowledged them (with the next group, see `acked`). One ordered queue per upstream;
 * bounded by max_size and max_age.
 *
 * Storage faults never throw out of it: SQLITE_FULL (the cap or the disk) takes the when_full
 * path; any other failure (I/O error, read-only, no permission) keeps what is committed,
 * refuses new groups (counted as `refused`), and each kind is logged once per episode. Every
 * operation tries the storage again, so writing resumes by itself when it works again.
 */
export class Outbox {
  /** The last seq handed out; persisted with each group. */
  private seq: number;
  /**
   * Random id of this opening of the outbox, in every record beside seq: a seq handed out
   * again (a lost WAL tail, a quarantined database, a new data_dir, a restored backup) comes
   * with another epoch, so (agent, epoch, seq) never names two records.
   */
  readonly epoch = randomBytes(8).toString('hex');
  /** Set when the database holds a lower seq than the side file saw committed before. */
  readonly loss: OutboxLoss | undefined;
  private group: Pending[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly depths = new Map<string, number>();
  readonly drops = new Map<string, Record<DropReason, number>>();
  private readonly committedListeners: (() => void)[] = [];
  private lastDropLog = 0;
  /** Open storage episodes: 'full' and 'failing' (any other storage error). */
  private readonly faults = new Episodes<'full' | 'failing'>();
  private readonly faultDrops = { full: 0, failing: 0 };
  /** The seq side file (next to the database): the last seq committed, outside the database and its WAL. */
  private readonly seqFile: string | undefined;
  private lastInsertId = 0;
  /** When when_full last had to act (monotonic ms): the full episode ends a minute after. */
  private fullAt = -Infinity;
  /**
   * Monotonic marks: records with id <= `id` were held by this process at monotonic time
   * `mono`. max_age expires only records old by the wall clock *and* held that long here.
   */
  private held: { id: number; mono: number }[] = [];
  private latest = { id: 0, mono: 0 };
  private readonly insert: Statement;
  private readonly saveSeq: Statement;
  private readonly selectAfter: Statement;
  private readonly deleteRange: Statement;
  private readonly oldest: Statement;
  private readonly moveToDeadLetter: Statement;
  private readonly deleteOne: Statement;
  private readonly groupTransaction: (group: Pending[], plan: DeletePlan) => void;
  private readonly saveAcked: Statement;
  private readonly countRange: Statement;
  private readonly nthId: Statement;
  private readonly oldestAfter: Statement;
  /**
   * Per upstream, the records acknowledged and not deleted yet: disjoint ranges, sorted. An
   * acknowledgement is saved at once as its upstream's row of `meta` (key `acked:<upstream>`,
   * the ranges as text: one small page of the WAL), and the records themselves are deleted
   * in the next group commit's transaction, before its inserts, so the pages they free take
   * the new records. Deleting them in a transaction of their own rewrote every page they had
   * filled (the table's and the index's leaves) and was about a third of what the agent wrote
   * at a trickle (scripts/bench/wear). Meanwhile they are never read, counted or sent again,
   * and the saved ranges are deleted after a crash too: an acknowledged record is sent again
   * no more than before. No new table, no change to the stored record or to its id
   * (AUTOINCREMENT: an id is never handed out twice, so a saved range can only ever name the
   * records it was saved for); code from before this ignores the rows and at worst sends the
   * acknowledged records again.
   */
  private readonly acked = new Map<string, AckedRange[]>();
  private ackedTimer: NodeJS.Timeout | undefined;
  /**
   * The deletes of acknowledged records failed for another reason than a full disk (a damaged
   * page under them, say): group commits write without them, so that new records are still
   * taken, and the timer alone tries again.
   */
  private deletesFailing = false;
  private closed = false;

  constructor(
    private readonly db: Database,
    private readonly config: OutboxConfig,
    private readonly agentId: string,
    private readonly state: GroupState,
    private readonly log: Logger,
    private readonly clocks: OutboxClocks = SYSTEM_CLOCKS,
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
    this.saveAcked = db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value');
    this.countRange = db.prepare('SELECT count(*) FROM outbox WHERE upstream = ? AND id BETWEEN ? AND ?').pluck();
    this.nthId = db.prepare('SELECT id FROM outbox WHERE upstream = ? AND id BETWEEN ? AND ? ORDER BY id LIMIT 1 OFFSET ?').pluck();
    this.oldestAfter = db.prepare('SELECT id, at FROM outbox WHERE upstream = ? AND id > ? ORDER BY id LIMIT 1');
    const savedSeq = (db.prepare("SELECT value FROM meta WHERE key = 'seq'").pluck().get() as number | undefined) ?? 0;
    this.seqFile = db.memory ? undefined : join(dirname(db.name), 'edge-agent.seq');
    const before = this.readSeqFile();
    if (before && before.seq > savedSeq) this.loss = { epoch: before.epoch, savedSeq, seenSeq: before.seq };
    // seq goes on from the highest known, so it only ever grows (the epoch alone keeps keys unique)
    this.seq = Math.max(savedSeq, before?.seq ?? 0);
    for (const row of db.prepare('SELECT upstream, count(*) AS n FROM outbox GROUP BY upstream').all() as { upstream: string; n: number }[]) {
      this.depths.set(row.upstream, row.n);
    }
    // acknowledged before the last exit and not deleted yet (a crash, a full disk): deleted with the first group
    for (const row of db.prepare("SELECT key, value FROM meta WHERE key >= 'acked:' AND key < 'acked;'").all() as { key: string; value: unknown }[]) {
      const upstream = row.key.slice('acked:'.length);
      const ranges: AckedRange[] = [];
      for (const [from, to] of readRanges(String(row.value))) {
        const n = this.countRange.get(upstream, from, to) as number;
        if (n > 0) ranges.push({ from, to, n });
      }
      if (ranges.length === 0) continue;
      this.acked.set(upstream, ranges.sort((a, b) => a.from - b.from));
      this.depths.set(upstream, (this.depths.get(upstream) ?? 0) - ranges.reduce((sum, r) => sum + r.n, 0));
    }
    // what the database holds now has been held by this process since now, no longer
    this.lastInsertId = (db.prepare('SELECT max(id) FROM outbox').pluck().get() as number | null) ?? 0;
    this.latest = { id: this.lastInsertId, mono: clocks.mono() };
    this.held.push(this.latest);
    this.groupTransaction = db.transaction((group: Pending[], plan: DeletePlan) => {
      // first: the pages the acknowledged records free take this group's records
      this.deletesAhead(plan);
      let last = 0;
      for (const record of group) {
        for (const upstream of record.upstreams) last = this.insert.run(upstream, record.at, record.stream, record.device, record.payload).lastInsertRowid as number;
      }
      this.state.save();
      this.saveSeq.run(this.seq);
      if (last) this.lastInsertId = last;
    });
  }

  /** Writes a group with the changed state and the deletes of acknowledged records (a chunk of them), in one transaction. */
  private writeGroup(group: Pending[]): void {
    const plan = this.deletesAlongside(DELETE_CHUNK);
    try {
      this.groupTransaction(group, plan);
    } catch (err) {
      // the deletes failed (a damaged page under acknowledged records, say): new records must
      // not be refused for that, so the group goes in without them (SQLite takes no more
      // writes in a transaction that met a damaged page: a transaction of its own)
      if (!this.deletesFailing || isEmpty(plan)) throw err;
      this.groupTransaction(group, this.deletesAlongside(DELETE_CHUNK));
      return;
    }
    this.deleted(plan);
  }

  /** A plan's deletes ahead of another write, in its transaction; a failure other than a full disk marks the deletes failing. */
  private deletesAhead(plan: DeletePlan): void {
    try {
      this.deletePlanned(plan);
    } catch (err) {
      if (!isDiskFull(err)) this.deletesFailed(err);
      throw err;
    }
  }

  private deletesFailed(err: unknown): void {
    if (!this.deletesFailing) {
      this.deletesFailing = true;
      const why = storageFault(err, this.db.name);
      this.log.error(
        { path: this.db.name, err: why },
        `outbox ${this.db.name}: acknowledged records cannot be deleted (${why}); they are kept and not sent again, new records are still written, the delete is tried again every ${ACKED_WAIT / 1000} s`,
      );
    }
    this.scheduleAckedFlush();
  }

  /** The deletes to run in another write's transaction: none while they fail (the timer's flush tries them alone). */
  private deletesAlongside(limit: number): DeletePlan {
    return this.deletesFailing ? { pieces: [], after: new Map(), rows: 0 } : this.planDeletes(limit);
  }

  /**
   * The next deletes of acknowledged records, `limit` rows at most (a range larger than what
   * is left of it is cut at a row), and what each touched upstream keeps acknowledged after them.
   */
  private planDeletes(limit: number): DeletePlan {
    const plan: DeletePlan = { pieces: [], after: new Map(), rows: 0 };
    for (const [upstream, ranges] of this.acked) {
      if (plan.rows >= limit) break;
      const left: AckedRange[] = [];
      for (const range of ranges) {
        const room = limit - plan.rows;
        if (room <= 0) left.push(range);
        else if (range.n <= room) {
          plan.pieces.push({ upstream, from: range.from, to: range.to });
          plan.rows += range.n;
        } else {
          const cut = this.nthId.get(upstream, range.from, range.to, room - 1) as number | undefined;
          // fewer rows than counted (none is deleted but through a plan: a guard only): all of it
          if (cut === undefined) {
            plan.pieces.push({ upstream, from: range.from, to: range.to });
            plan.rows += range.n;
            continue;
          }
          plan.pieces.push({ upstream, from: range.from, to: cut });
          left.push({ from: cut + 1, to: range.to, n: range.n - room });
          plan.rows += room;
        }
      }
      plan.after.set(upstream, left);
    }
    return plan;
  }

  /** Runs a plan's deletes and saves what stays acknowledged; inside a transaction, followed by `deleted(plan)` once it committed. */
  private deletePlanned(plan: DeletePlan): void {
    for (const { upstream, from, to } of plan.pieces) this.deleteRange.run(upstream, from, to);
    for (const [upstream, left] of plan.after) this.saveAcked.run(`acked:${upstream}`, rangesText(left));
  }

  /** The plan's transaction committed. */
  private deleted(plan: DeletePlan): void {
    for (const [upstream, left] of plan.after) {
      if (left.length > 0) this.acked.set(upstream, left);
      else this.acked.delete(upstream);
    }
    if (this.acked.size === 0) {
      clearTimeout(this.ackedTimer);
      this.ackedTimer = undefined;
    }
  }

  /**
   * Deletes the acknowledged records now, in transactions of their own of DELETE_CHUNK rows,
   * smaller after SQLITE_FULL (the WAL left on a full disk may hold a few pages only). True
   * when it deleted any; what it could not delete stays acknowledged, for the next try.
   */
  private flushAcked(): boolean {
    let chunk = DELETE_CHUNK;
    let any = false;
    while (this.acked.size > 0) {
      let plan: DeletePlan;
      try {
        plan = this.planDeletes(chunk);
        this.withRoom(() => this.db.transaction(() => this.deletePlanned(plan))());
      } catch (err) {
        if (isDiskFull(err) && chunk > 1) {
          chunk = Math.ceil(chunk / 4);
          continue;
        }
        if (isDiskFull(err)) {
          this.beginFault('full', err, 'ack');
          this.scheduleAckedFlush();
        } else this.deletesFailed(err);
        return any;
      }
      this.deleted(plan);
      this.endFault('failing');
      if (this.deletesFailing) {
        this.deletesFailing = false;
        this.log.info({ path: this.db.name }, `outbox ${this.db.name}: acknowledged records are deleted again`);
      }
      any = true;
    }
    return any;
  }

  /** Makes sure acknowledged records are deleted soon when no group commit comes to carry them. */
  private scheduleAckedFlush(): void {
    if (this.closed) return;
    this.ackedTimer ??= setTimeout(
      () => {
        this.ackedTimer = undefined;
        this.flushAcked();
      },
      Math.max(ACKED_WAIT, 2 * this.config.group_wait),
    );
  }

  /** The acknowledged range of `upstream` that holds `id`. */
  private ackedRange(upstream: string, id: number): AckedRange | undefined {
    for (const range of this.acked.get(upstream) ?? []) if (id >= range.from && id <= range.to) return range;
    return undefined;
  }

  /** Upstreams that still hold records but are no longer configured. */
  orphans(configured: readonly string[]): string[] {
    return [...this.depths.entries()].filter(([name, n]) => n > 0 && !configured.includes(name)).map(([name]) => name);
  }

  /** Queues one record for the given upstreams; it counts as accepted once its group commits. */
  add(upstreams: readonly string[], stream: string, reading: Reading): void {
    const payload = recordJson(this.agentId, stream, reading, ++this.seq, this.epoch);
    this.group.push({ upstreams, at: this.clocks.wall(), stream, device: reading.device, payload });
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
    if (this.group.length === 0 && this.state.pending === 0) {
      // closing, or a commit asked for with nothing to write: the acknowledged records alone
      if (this.acked.size > 0) this.flushAcked();
      return;
    }
    const group = this.group;
    this.group = [];
    try {
      try {
        this.writeGroup(group);
        // at the cap, drop-oldest and acks make room for a few groups at a time: still one episode
        if (this.clocks.mono() - this.fullAt > 60_000) this.endFault('full');
      } catch (err) {
        if (!isDiskFull(err)) throw err;
        // the acknowledged records' deletes first, in transactions small enough to fit: the
        // pages they free take the group
        if (this.flushAcked() && this.tryWrite(group)) {
          if (this.clocks.mono() - this.fullAt > 60_000) this.endFault('full');
        } else {
          // space may have come back since the cap was set from the free space: set it again, retry
          if (!this.raiseCap()) throw err;
          this.writeGroup(group);
          this.endFault('full');
        }
      }
      this.endFault('failing');
      this.committed(group);
    } catch (err) {
      if (isDiskFull(err)) this.whenFull(group, err as Error);
      else this.refuse(group, err, 'commit');
    }
  }

  /** Sets the size cap from the free space again (a statfs: cheap); true when it grew. */
  private raiseCap(): boolean {
    try {
      const before = this.db.pragma('max_page_count', { simple: true }) as number;
      return applySizeCap(this.db, this.config.max_size) > before;
    } catch {
      return false;
    }
  }

  private committed(group: Pending[]): void {
    this.state.saved();
    for (const record of group) {
      for (const upstream of record.upstreams) this.depths.set(upstream, (this.depths.get(upstream) ?? 0) + 1);
    }
    this.saved();
    if (group.length > 0) this.markHeld();
    for (const listener of this.committedListeners) listener();
  }

  /** seq is in the database: note it in the side file too (see `loss`). */
  private saved(): void {
    if (!this.seqFile) return;
    // fixed length, written in place: no truncation, no new block on a full disk
    const text = `${this.epoch} ${String(this.seq).padStart(20)}\n`;
    let fd: number | undefined;
    try {
      try {
        fd = openSync(this.seqFile, 'r+');
      } catch {
        fd = openSync(this.seqFile, 'w');
      }
      writeSync(fd, text, 0);
    } catch {
      // the side file only serves to detect a lost tail; the database is what counts
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  }

  private readSeqFile(): { epoch: string; seq: number } | undefined {
    if (!this.seqFile) return undefined;
    try {
      const [epoch, seq] = readFileSync(this.seqFile, 'utf8').trim().split(/\s+/);
      const n = Number(seq);
      return epoch && Number.isSafeInteger(n) ? { epoch, seq: n } : undefined;
    } catch {
      return undefined;
    }
  }

  /** Keeps the monotonic marks of max_age: about a hundred per max_age, so memory stays bounded. */
  private markHeld(): void {
    const mono = this.clocks.mono();
    this.latest = { id: this.lastInsertId, mono };
    if (mono - this.held[this.held.length - 1].mono >= this.config.max_age / 100) this.held.push(this.latest);
  }

  /** The cap (or the disk) is reached: apply when_full. */
  private whenFull(group: Pending[], err: Error): void {
    this.beginFault('full', err, 'commit');
    this.fullAt = this.clocks.mono();
    let kept: Pending[] = [];
    try {
      // what was acknowledged makes room first (commit tried that already; a retry is cheap)
      this.flushAcked();
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
        this.countDrops(group.slice(0, group.length - kept.length), 'overflow');
      } else {
        // reject-new: keep the group's oldest records that still fit, reject the rest.
        kept = this.largestFit(group, (n) => group.slice(0, n));
        this.countDrops(group.slice(kept.length), 'overflow');
      }
    } catch (other) {
      // the storage failed otherwise while making room: nothing of the group was written
      this.refuse(group, other, 'making room');
      return;
    }
    this.faultDrops.full += group.length - kept.length;
    if (kept.length > 0) this.committed(kept);
    if (kept.length < group.length) {
      try {
        // the rejected records' seqs and the state stay saved
        this.db.transaction(() => {
          this.state.save();
          this.saveSeq.run(this.seq);
        })();
        this.state.saved();
        this.saved();
      } catch {
        // not even that fits: state and seq are saved with the next group that does
      }
    }
  }

  /**
   * The storage fails (not full): the group is not accepted. Holding it in memory would grow
   * without bound through a long fault, so it is refused, counted, and logged once per
   * episode; stream state stays in memory and is saved with the next group that commits.
   */
  private refuse(group: Pending[], err: unknown, operation: string): void {
    this.beginFault('failing', err, operation);
    this.countDrops(group, 'refused');
    this.faultDrops.failing += group.length;
    // nothing else flushes the state if no record follows: try again in a while
    if (this.state.pending > 0) this.timer ??= setTimeout(() => this.commit(), 1000);
  }

  private beginFault(kind: 'full' | 'failing', err: unknown, operation: string): void {
    if (!this.faults.begin(kind)) return;
    if (kind === 'full') {
      this.log.warn({ path: this.db.name, err: (err as Error).message }, `outbox ${this.db.name} is full (${(err as Error).message}) in ${operation}; when_full: ${this.config.when_full}`);
    } else {
      const why = storageFault(err, this.db.name);
      this.log.error(
        { path: this.db.name, err: why },
        `outbox ${this.db.name}: the storage fails in ${operation} (${why}); records already committed are kept, new records are refused until it works again`,
      );
    }
  }

  private endFault(kind: 'full' | 'failing'): void {
    if (!this.faults.has(kind)) return;
    const times = this.faults.end(kind);
    const lost = this.faultDrops[kind];
    this.faultDrops[kind] = 0;
    this.log.info({ path: this.db.name, times, records: lost }, `outbox ${this.db.name}: writing again (${kind === 'full' ? 'no longer full' : 'the storage works'}); ${lost} records ${kind === 'full' ? 'dropped by when_full' : 'refused'} meanwhile`);
  }

  /**
   * A write outside the group commit (ack, dead letter, expiry); see withRoom. Returns undefined when it failed: the records stay where they are.
   */
  private write<T>(operation: string, run: () => T): T | undefined {
    try {
      const result = this.withRoom(run);
      this.endFault('failing');
      return result;
    } catch (err) {
      this.beginFault(isDiskFull(err) ? 'full' : 'failing', err, operation);
      return undefined;
    }
  }

  /**
   * Runs a write; on SQLITE_FULL checkpoints the WAL, so that the next write starts at its
   * beginning again, in space the file already holds, then runs it once more.
   */
  private withRoom<T>(run: () => T): T {
    try {
      return run();
    } catch (err) {
      if (!isDiskFull(err)) throw err;
      try {
        this.db.pragma('wal_checkpoint(PASSIVE)');
      } catch {
        // tried once more anyway
      }
      return run();
    }
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
    const plan = this.deletesAlongside(DELETE_CHUNK);
    try {
      this.db.transaction(() => {
        // as writeGroup would: the acknowledged records' deletes first
        this.deletesAhead(plan);
        for (const record of records) {
          for (const upstream of record.upstreams) this.insert.run(upstream, record.at, record.stream, record.device, record.payload);
        }
        throw rollback;
      })();
    } catch (err) {
      if (err === rollback) return true;
      if (isDiskFull(err)) return false;
      // as writeGroup would: without the deletes when they failed
      if (this.deletesFailing && !isEmpty(plan)) return this.tryWriteDry(records);
      throw err;
    }
    return false;
  }

  private countDrops(records: Pending[], reason: DropReason): void {
    for (const record of records) for (const upstream of record.upstreams) this.countDrop(upstream, reason, 1);
  }

  /** Deletes the oldest records; 0 when not even the delete fits (then nothing can be dropped). */
  private dropOldest(count: number): number {
    let dropped: string[];
    try {
      const drop = this.db.prepare('DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?) RETURNING upstream').pluck();
      // acknowledged records go first and uncounted: they are no drop
      const plan = this.planDeletes(Infinity);
      dropped = this.withRoom(() => this.db.transaction(() => (this.deletePlanned(plan), drop.all(count) as string[]))());
      this.deleted(plan);
    } catch (err) {
      if (isDiskFull(err)) return 0;
      throw err;
    }
    const perUpstream = new Map<string, number>();
    for (const upstream of dropped) perUpstream.set(upstream, (perUpstream.get(upstream) ?? 0) + 1);
    for (const [upstream, n] of perUpstream) {
      this.depths.set(upstream, (this.depths.get(upstream) ?? 0) - n);
      this.countDrop(upstream, 'overflow', n);
    }
    return dropped.length;
  }

  /**
   * Drops records older than max_age; run it now and then. A record is old when it is older
   * than max_age by the wall clock *and* this process has held it for max_age by the
   * monotonic clock: a step of the wall clock alone (a gateway that booted with a wrong time
   * and then got NTP) expires nothing, and after a restart the wall clock is trusted only for
   * records this process has held for max_age.
   */
  expire(now = this.clocks.wall(), mono = this.clocks.mono()): void {
    let mark: { id: number; mono: number } | undefined;
    let keepFrom = 0;
    const marks = this.held[this.held.length - 1] === this.latest ? this.held : [...this.held, this.latest];
    for (let i = 0; i < marks.length && marks[i].mono <= mono - this.config.max_age; i++) {
      mark = marks[i];
      keepFrom = i;
    }
    if (!mark) return;
    const heldSince = mark;
    // older marks are covered by this one from now on (latest joins them only when it is the one)
    this.held = keepFrom < this.held.length ? this.held.slice(keepFrom) : [this.latest];
    const cutoff = now - this.config.max_age;
    const plan = this.planDeletes(Infinity);
    const expired = this.write('expire', () =>
      this.db.transaction(() => {
        // acknowledged records are not counted as expired
        this.deletePlanned(plan);
        const counts = this.db.prepare('SELECT upstream, count(*) AS n FROM outbox WHERE at < ? AND id <= ? GROUP BY upstream').all(cutoff, heldSince.id) as { upstream: string; n: number }[];
        if (counts.length > 0) this.db.prepare('DELETE FROM outbox WHERE at < ? AND id <= ?').run(cutoff, heldSince.id);
        return counts;
      })(),
    );
    if (expired) this.deleted(plan);
    if (!expired?.length) return;
    for (const { upstream, n } of expired) {
      this.depths.set(upstream, (this.depths.get(upstream) ?? 0) - n);
      this.countDrop(upstream, 'expired', n);
    }
    this.logDrops(`outbox ${this.db.name}: records older than max_age dropped`);
  }

  private countDrop(upstream: string, reason: DropReason, n: number): void {
    let counts = this.drops.get(upstream);
    if (!counts) this.drops.set(upstream, (counts = noDrops()));
    counts[reason] += n;
  }

  /** One log line per ten seconds at most, with the running totals. */
  private logDrops(message: string): void {
    const now = Date.now();
    if (now - this.lastDropLog < 10_000) return;
    this.lastDropLog = now;
    this.log.warn({ drops: Object.fromEntries(this.drops) }, message);
  }

  /** True while the storage fails (not full): forwarders retry reading on their own. */
  get failing(): boolean {
    return this.faults.has('failing');
  }

  /** The next records of an upstream's queue after `afterId`, oldest first; none while they cannot be read. */
  read(upstream: string, afterId: number, limit: number): OutboxRow[] {
    try {
      const ranges = this.acked.get(upstream);
      // a forwarder reads past what it had acknowledged: the plain query
      if (!ranges || afterId >= ranges[ranges.length - 1].to) return this.selectAfter.all(upstream, afterId, limit) as OutboxRow[];
      // one that starts over reads from the oldest: skip what was acknowledged, a range at a time
      const rows: OutboxRow[] = [];
      for (let after = afterId; ; ) {
        let skip: AckedRange | undefined;
        for (const row of this.selectAfter.all(upstream, after, limit - rows.length) as OutboxRow[]) {
          if ((skip = this.ackedRange(upstream, row.id))) break;
          rows.push(row);
        }
        if (!skip) return rows;
        after = skip.to;
      }
    } catch (err) {
      this.beginFault('failing', err, 'read');
      return [];
    }
  }

  /**
   * The upstream refused these records for good: move them to the dead-letter table (kept for
   * a person to look at, never sent again) so that the queue behind them keeps flowing. When
   * that cannot be written they stay queued and are sent (and refused) again later.
   */
  deadLetter(upstream: string, ids: readonly number[], reason: string): void {
    const now = this.clocks.wall();
    const moved =
      this.write('dead-letter', () =>
        this.db.transaction(() => {
          let n = 0;
          for (const id of ids) {
            // acknowledged meanwhile (a forwarder that started over): not refused
            if (this.ackedRange(upstream, id)) continue;
            this.moveToDeadLetter.run(now, reason, upstream, id);
            n += this.deleteOne.run(upstream, id).changes;
          }
          return n;
        })(),
      ) ?? 0;
    this.depths.set(upstream, (this.depths.get(upstream) ?? 0) - moved);
    this.deadLettered.set(upstream, (this.deadLettered.get(upstream) ?? 0) + moved);
  }

  /**
   * What the dead-letter table holds, oldest first. Through the agent's own connection: the
   * database is locked to other connections while the agent runs (see openDatabase).
   */
  deadLetters(upstream?: string): { upstream: string; reason: string; payload: string }[] {
    try {
      const rows = this.db.prepare('SELECT upstream, reason, payload FROM dead_letter ORDER BY id').all() as { upstream: string; reason: string; payload: string }[];
      return upstream === undefined ? rows : rows.filter((r) => r.upstream === upstream);
    } catch (err) {
      this.beginFault('failing', err, 'read');
      return [];
    }
  }

  /** Records moved to the dead-letter table, per upstream, since start. */
  readonly deadLettered = new Map<string, number>();

  /**
   * The upstream acknowledged records `fromId..toId`: saved at once as acknowledged (a row of
   * `meta`), deleted with the next group commit (see `acked`). Parts acknowledged before are
   * not counted again. When not even that row can be written they are deleted now; when that
   * fails too they stay, and are sent again later (a duplicate, never a loss).
   */
  ack(upstream: string, fromId: number, toId: number): void {
    // a send that settled after close: its records are sent again after the next start
    if (this.closed) return;
    if ((this.acked.get(upstream)?.length ?? 0) >= ACKED_RANGES) this.flushAcked();
    const ranges = this.acked.get(upstream) ?? [];
    // what is acknowledged already is not counted again (a forwarder that started over, sends settling out of order)
    const gaps = gapsOf(ranges, fromId, toId);
    if (gaps.length === 0) return;
    // the earlier ones could not be deleted (the storage fails or is full): no more ranges held
    if (ranges.length >= ACKED_RANGES) return this.deleteNow(upstream, gaps);
    let added: AckedRange[];
    try {
      added = this.withRoom(() =>
        this.db.transaction(() => {
          const counted = gaps.map(([from, to]) => ({ from, to, n: this.countRange.get(upstream, from, to) as number })).filter((r) => r.n > 0);
          if (counted.length > 0) this.saveAcked.run(`acked:${upstream}`, rangesText([...ranges, ...counted].sort((a, b) => a.from - b.from)));
          return counted;
        })(),
      );
    } catch (err) {
      if (!isDiskFull(err)) {
        this.beginFault('failing', err, 'ack');
        return;
      }
      // not even the small row fits: delete them now, which frees pages
      return this.deleteNow(upstream, gaps);
    }
    this.endFault('failing');
    if (added.length === 0) return;
    this.acked.set(upstream, [...ranges, ...added].sort((a, b) => a.from - b.from));
    this.depths.set(upstream, (this.depths.get(upstream) ?? 0) - added.reduce((n, r) => n + r.n, 0));
    // deleted with the next group commit (see `acked`), or on their own when none comes soon
    this.scheduleAckedFlush();
  }

  /** Deletes acknowledged records at once; when that cannot be written they stay, and are sent again later. */
  private deleteNow(upstream: string, ranges: readonly [number, number][]): void {
    const changes = this.write('ack', () => this.db.transaction(() => ranges.reduce((n, [from, to]) => n + this.deleteRange.run(upstream, from, to).changes, 0))()) ?? 0;
    this.depths.set(upstream, (this.depths.get(upstream) ?? 0) - changes);
  }

  /** Acknowledges single records (an upstream that answered for part of a send). */
  ackIds(upstream: string, ids: readonly number[]): void {
    const changes =
      this.write('ack', () =>
        this.db.transaction(() => {
          let n = 0;
          for (const id of ids) if (!this.ackedRange(upstream, id)) n += this.deleteOne.run(upstream, id).changes;
          return n;
        })(),
      ) ?? 0;
    this.depths.set(upstream, (this.depths.get(upstream) ?? 0) - changes);
  }

  depth(upstream: string): number {
    return this.depths.get(upstream) ?? 0;
  }

  /** Age in ms of the oldest record waiting for an upstream, or 0. */
  oldestAge(upstream: string, now = Date.now()): number {
    try {
      if (!this.acked.has(upstream)) {
        const at = this.oldest.get(upstream) as number | undefined;
        return at === undefined ? 0 : now - at;
      }
      // the oldest record not acknowledged
      for (let after = 0; ; ) {
        const row = this.oldestAfter.get(upstream, after) as { id: number; at: number } | undefined;
        if (!row) return 0;
        const range = this.ackedRange(upstream, row.id);
        if (!range) return now - row.at;
        after = range.to;
      }
    } catch {
      return 0;
    }
  }

  get lastSeq(): number {
    return this.seq;
  }

  /** Seqs handed out from now on follow `seq` (another database was in use before this one). */
  continueAfter(seq: number): void {
    if (seq <= this.seq) return;
    this.seq = seq;
    // saved with the next group when it cannot be now
    if (this.write('seq save', () => this.saveSeq.run(seq)) !== undefined) this.saved();
  }

  /** Commits what is open; call before closing the database. */
  close(): void {
    this.commit();
    // what the group did not carry (more than a chunk), so that the next start has nothing to delete
    this.flushAcked();
    clearTimeout(this.timer);
    this.timer = undefined;
    clearTimeout(this.ackedTimer);
    this.ackedTimer = undefined;
    this.closed = true;
  }
}

/**
 * Saved ranges read back: only `from-to` pairs of ids with from ≤ to, merged where they overlap
 * or touch (the agent writes them disjoint; a damaged row or another version's is not trusted
 * further than that).
 */
function readRanges(text: string): [number, number][] {
  const pairs: [number, number][] = [];
  for (const part of text.split(' ')) {
    const match = /^(\d{1,15})-(\d{1,15})$/.exec(part);
    if (!match) continue;
    const from = Number(match[1]);
    const to = Number(match[2]);
    if (from <= to) pairs.push([from, to]);
  }
  pairs.sort((a, b) => a[0] - b[0]);
  const merged: [number, number][] = [];
  for (const [from, to] of pairs) {
    const last = merged[merged.length - 1];
    if (last && from <= last[1] + 1) last[1] = Math.max(last[1], to);
    else merged.push([from, to]);
  }
  return merged;
}

function isEmpty(plan: DeletePlan): boolean {
  return plan.pieces.length === 0 && plan.after.size === 0;
}

/** Acknowledged ranges as saved in `meta`: "from-to from-to". */
function rangesText(ranges: readonly AckedRange[]): string {
  return ranges.map((r) => `${r.from}-${r.to}`).join(' ');
}

/** The parts of `from..to` that no range of `ranges` (disjoint, sorted) covers. */
function gapsOf(ranges: readonly AckedRange[], from: number, to: number): [number, number][] {
  const gaps: [number, number][] = [];
  let start = from;
  for (const range of ranges) {
    if (range.to < start) continue;
    if (range.from > to) break;
    if (range.from > start) gaps.push([start, range.from - 1]);
    start = range.to + 1;
  }
  if (start <= to) gaps.push([start, to]);
  return gaps;
}
