import type Database from 'better-sqlite3';
import type { Logger } from 'pino';
import type { AgentConfig } from '../config/types.js';
import { Backoff } from '../core/backoff.js';
import { openDatabase, StorageUnavailableError } from '../outbox/database.js';
import { Outbox } from '../outbox/outbox.js';
import type { Reading } from '../core/reading.js';
import { StateStore } from '../streams/state.js';

/** The database, outbox and stream state: kept across reloads that leave data_dir, agent id and outbox alone. */
export interface Store {
  db: Database.Database;
  state: StateStore;
  outbox: Outbox;
  /** The settings it was opened with (see `storeKey`). */
  key: string;
}

/** A reload that changes these needs the database reopened. */
export function storeKey(config: AgentConfig): string {
  return JSON.stringify([config.agent.data_dir, config.agent.id, config.outbox]);
}

/**
 * Opens the agent's database in data_dir with its outbox and stream state. A database that had
 * to be moved aside is reported upstream (OUTBOX_QUARANTINED), and so is a lost tail
 * (OUTBOX_LOSS: the database holds a lower seq than was committed before), so the loss is seen
 * where the data goes. Throws StorageUnavailableError when the storage fails.
 */
export function openStore(config: AgentConfig, log: Logger): Store {
  const { db, path, quarantined } = openDatabase(config.agent.data_dir, { durability: config.outbox.durability, maxSize: config.outbox.max_size }, log);
  let outbox: Outbox | undefined;
  let state: StateStore;
  try {
    state = new StateStore(db, () => outbox?.scheduleCommit(), { ttl: config.agent.state_ttl, cacheKeys: config.agent.state_cache, log });
    outbox = new Outbox(db, config.outbox, config.agent.id, state, log);
  } catch (err) {
    // a fresh database on a full or failing disk: its tables cannot be created
    db.close();
    throw new StorageUnavailableError(path, err);
  }
  const { loss } = outbox;
  const lost = loss ? `; seq ${loss.savedSeq + 1}..${loss.seenSeq} (epoch ${loss.epoch}) had been committed and are gone` : '';
  if (quarantined) {
    raiseOutboxEvent(config, outbox, 'OUTBOX_QUARANTINED', `database ${path} could not be used; moved to ${quarantined} and started afresh: records it held were not sent${lost}`);
  } else if (loss) {
    const description = `outbox ${path} holds seq up to ${loss.savedSeq}, but seq up to ${loss.seenSeq} (epoch ${loss.epoch}) had been committed before: those records are lost (a damaged or missing WAL, or a database restored from a backup)`;
    log.error({ path, ...loss }, description);
    raiseOutboxEvent(config, outbox, 'OUTBOX_LOSS', description, { last_seq_saved: loss.savedSeq, last_seq_seen: loss.seenSeq, lost_epoch: loss.epoch });
  }
  log.info({ path, seq: outbox.lastSeq, epoch: outbox.epoch }, `outbox ${path} open`);
  return { db, state, outbox, key: storeKey(config) };
}

function raiseOutboxEvent(config: AgentConfig, outbox: Outbox, code: string, description: string, values: Reading['values'] = {}): void {
  outbox.add(
    config.upstream.map((u) => u.name),
    'agent',
    { device: config.agent.id, ts: Date.now(), values, event: { code, severity: 'major', description, state: 'raised' } },
  );
}

/**
 * At start (and when a reload opens another database), a database whose storage fails
 * (read-only, I/O error, no permission, full) is opened again until it works, with a backoff
 * of up to 30 s: no device is read and nothing is sent meanwhile, so there are no records to
 * lose and no crash-and-restart loop that sends the same records again and again.
 */
export async function openStoreWhenPossible(config: AgentConfig, log: Logger): Promise<Store> {
  const backoff = new Backoff(1000, 30_000);
  // nothing runs yet that a stop would have to wind down: a stop signal while waiting just exits
  const exit = () => {
    log.info('stopped while waiting for the outbox database');
    process.exit(0);
  };
  try {
    for (;;) {
      try {
        const store = openStore(config, log);
        if (backoff.attempts > 0) log.info(`outbox database opened after ${backoff.attempts} failed attempts`);
        return store;
      } catch (err) {
        if (!(err instanceof StorageUnavailableError)) throw err;
        if (backoff.attempts === 0) {
          log.error({ path: err.path, err: err.message }, `${err.message}; nothing is read or sent until it opens; trying again`);
          process.once('SIGTERM', exit).once('SIGINT', exit);
        }
        await new Promise((resolve) => setTimeout(resolve, Math.max(1000, backoff.next())));
      }
    }
  } finally {
    process.off('SIGTERM', exit).off('SIGINT', exit);
  }
}

/** Commits what is open and closes the database. */
export function closeStore(store: Store): void {
  store.outbox.removeCommitListeners();
  store.outbox.close();
  store.db.close();
}
