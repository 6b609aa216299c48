import Database from 'better-sqlite3';
import { existsSync, mkdirSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';

export interface DatabaseOptions {
  durability: 'normal' | 'full';
  /** Bytes the database file plus its WAL may use; SQLite answers SQLITE_FULL past it. */
  maxSize: number;
}

export interface OpenedDatabase {
  db: Database.Database;
  path: string;
  /** Where an unreadable database was moved, when one was. */
  quarantined?: string;
}

const FILE = 'edge-agent.db';

/**
 * Opens (or creates) the agent's database in `dir`. One that cannot be read (truncated,
 * corrupt, not a database) is moved aside and a fresh one started, so that a damaged file
 * costs what it held but never a restart loop.
 */
export function openDatabase(dir: string, options: DatabaseOptions, log: Logger): OpenedDatabase {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, FILE);
  try {
    return { db: open(path, options), path };
  } catch (err) {
    const quarantined = `${path}.corrupt-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    for (const suffix of ['', '-wal', '-shm']) {
      if (existsSync(path + suffix)) renameSync(path + suffix, quarantined + suffix);
    }
    log.error({ err, path, quarantined }, `database ${path} cannot be used (${(err as Error).message}); moved it to ${quarantined} and started a fresh one`);
    return { db: open(path, options), path, quarantined };
  }
}

function open(path: string, options: DatabaseOptions): Database.Database {
  const db = new Database(path);
  try {
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${options.durability === 'full' ? 'FULL' : 'NORMAL'}`);
    const check = db.pragma('quick_check(1)', { simple: true });
    if (check !== 'ok') throw new Error(`integrity check failed: ${check}`);
    applySizeCap(db, options.maxSize);
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

/**
 * Splits the cap between the main file (max_page_count) and the WAL (checkpointed and
 * truncated at a quarter of the cap, at most 4 MB), so both together stay within it.
 */
function applySizeCap(db: Database.Database, maxSize: number): void {
  const pageSize = db.pragma('page_size', { simple: true }) as number;
  const walBytes = Math.min(4 * 1024 * 1024, Math.floor(maxSize / 4));
  const walPages = Math.max(16, Math.floor(walBytes / pageSize));
  db.pragma(`wal_autocheckpoint = ${walPages}`);
  db.pragma(`journal_size_limit = ${walPages * pageSize}`);
  db.pragma(`max_page_count = ${Math.max(32, Math.floor((maxSize - walPages * pageSize) / pageSize))}`);
}

export function isDiskFull(err: unknown): boolean {
  const code = (err as { code?: string })?.code;
  return code === 'SQLITE_FULL' || code === 'SQLITE_IOERR_WRITE' && /disk|space/i.test(String((err as Error).message));
}
