import type Database from 'better-sqlite3';
import type { Logger } from 'pino';
import type { AgentConfig } from '../config/types.js';
import { openDatabase } from '../outbox/database.js';
import { Outbox } from '../outbox/outbox.js';
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
 * to be moved aside is reported upstream (OUTBOX_QUARANTINED), so the loss is seen where the
 * data goes.
 */
export function openStore(config: AgentConfig, log: Logger): Store {
  const { db, path, quarantined } = openDatabase(config.agent.data_dir, { durability: config.outbox.durability, maxSize: config.outbox.max_size }, log);
  let outbox: Outbox | undefined;
  const state = new StateStore(db, () => outbox?.scheduleCommit(), { ttl: config.agent.state_ttl, cacheKeys: config.agent.state_cache, log });
  outbox = new Outbox(db, config.outbox, config.agent.id, state, log);
  if (quarantined) {
    outbox.add(config.upstream.map((u) => u.name), 'agent', {
      device: config.agent.id,
      ts: Date.now(),
      values: {},
      event: {
        code: 'OUTBOX_QUARANTINED',
        severity: 'major',
        description: `database ${path} could not be used; moved to ${quarantined} and started afresh: records it held were not sent`,
        state: 'raised',
      },
    });
  }
  log.info({ path, seq: outbox.lastSeq }, `outbox ${path} open`);
  return { db, state, outbox, key: storeKey(config) };
}

/** Commits what is open and closes the database. */
export function closeStore(store: Store): void {
  store.outbox.removeCommitListeners();
  store.outbox.close();
  store.db.close();
}
