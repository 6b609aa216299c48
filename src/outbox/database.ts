import Database from 'better-sqlite3';
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readSync, renameSync, statfsSync } from 'node:fs';
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
 * The storage under the database cannot be used now (I/O error, read-only file system, no
 * permission, full at open): nothing is wrong with the file itself, so it is not quarantined;
 * the caller tries again later.
 */
export class StorageUnavailableError extends Error {
  constructor(
    readonly path: string,
    readonly fault: unknown,
  ) {
    super(`database ${path} cannot be opened for writing: ${storageFault(fault, path)}`);
  }
}

/**
 * Opens (or creates) the agent's database in `dir`. One that cannot be read (truncated,
 * corrupt, not a database) is moved aside and a fresh one started, so that a damaged file
 * costs what it held but never a restart loop. A file that is sound but whose storage fails
 * (I/O error, read-only, no permission, disk full) is left where it is: StorageUnavailableError.
 */
export function openDatabase(dir: string, options: DatabaseOptions, log: Logger): OpenedDatabase {
  const path = join(dir, FILE);
  try {
    mkdirSync(dir, { recursive: true });
    return { db: open(path, options), path };
  } catch (err) {
    // "malformed" can also be what SQLite makes of a read the disk failed: ask the OS first
    if (!isCorrupt(err) || osError(path)) throw new StorageUnavailableError(path, err);
    const quarantined = `${path}.corrupt-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    try {
      for (const suffix of ['', '-wal', '-shm']) {
        if (existsSync(path + suffix)) renameSync(path + suffix, quarantined + suffix);
      }
      log.error({ err, path, quarantined }, `database ${path} cannot be used (${(err as Error).message}); moved it to ${quarantined} and started a fresh one`);
      return { db: open(path, options), path, quarantined };
    } catch (second) {
      throw new StorageUnavailableError(path, second);
    }
  }
}

function open(path: string, options: DatabaseOptions): Database.Database {
  const db = new Database(path);
  try {
    // SQLite opens a file it may not write read-only without a word: every write would fail later
    if (db.readonly) throw Object.assign(new Error('attempt to write a readonly database'), { code: 'SQLITE_READONLY' });
    // Before the first access: the WAL index then lives in this process's memory, not in a
    // mmap'd -shm file. A page of that mapping that the storage cannot write (immutable file,
    // I/O error) is a SIGBUS that kills the process, where a write() is an error to handle. The
    // price: no other process may open the database while the agent runs (a second agent on
    // the same data_dir is refused: SQLITE_BUSY).
    db.pragma('locking_mode = EXCLUSIVE');
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${options.durability === 'full' ? 'FULL' : 'NORMAL'}`);
    const check = db.pragma('quick_check(1)', { simple: true });
    if (check !== 'ok') throw Object.assign(new Error(`integrity check failed: ${check}`), { code: 'SQLITE_CORRUPT' });
    applySizeCap(db, options.maxSize);
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

/**
 * Splits the cap between the main file (max_page_count) and the WAL (checkpointed and
 * truncated at a quarter of the cap, at most 4 MB), so both together stay within it. The
 * space the file system has left counts as a cap too: the WAL gets at most an eighth of what
 * the database could use (its files plus the free space), and the main file the rest minus
 * twice that, so SQLite answers SQLITE_FULL at the page count, before the disk is full. A
 * database that filled the disk itself could not even checkpoint its WAL (that grows the main
 * file) and so could not delete a record: drop-oldest would be stuck, at every restart.
 * Returns max_page_count; call it again when the free space may have changed.
 */
/** WAL pages kept free past the checkpoint mark, for the group commit that crosses it. */
const WAL_SLACK_PAGES = 16;

export function applySizeCap(db: Database.Database, maxSize: number): number {
  const pageSize = db.pragma('page_size', { simple: true }) as number;
  const usable = Math.min(maxSize, usableBytes(db.name));
  const walBytes = Math.min(4 * 1024 * 1024, Math.floor(maxSize / 4), Math.floor(usable / 8));
  // a WAL frame is a page and its 24-byte header, after the file's 32-byte header
  const frame = pageSize + 24;
  const walPages = Math.max(32, Math.floor(walBytes / frame));
  const walFileBytes = 32 + walPages * frame;
  const mainBytes = usable === maxSize ? maxSize - walFileBytes : usable - 2 * walFileBytes;
  // checkpointed before the WAL is full: the group commit that crosses the mark (a few pages)
  // still fits in it (a 1 MB cap was exceeded by 4,920 bytes with the mark at the full size)
  db.pragma(`wal_autocheckpoint = ${walPages - WAL_SLACK_PAGES}`);
  db.pragma(`journal_size_limit = ${walFileBytes}`);
  // SQLite keeps it at the current page count when asked for less
  return db.pragma(`max_page_count = ${Math.max(32, Math.floor(mainBytes / pageSize))}`, { simple: true }) as number;
}

/** Bytes the database could use: the free space plus what its files hold now. */
function usableBytes(path: string): number {
  try {
    const fs = statfsSync(path);
    let files = 0;
    for (const file of [path, `${path}-wal`]) {
      try {
        const fd = openSync(file, 'r');
        files += fstatSync(fd).size;
        closeSync(fd);
      } catch {
        // not there yet
      }
    }
    return fs.bavail * fs.bsize + files;
  } catch {
    return Number.MAX_SAFE_INTEGER;
  }
}

/** The disk or the cap is full: the only error that takes the when_full path. */
export function isDiskFull(err: unknown): boolean {
  return (err as { code?: string })?.code === 'SQLITE_FULL';
}

/** The file's content is damaged (not its storage): only such a file is quarantined. */
function isCorrupt(err: unknown): boolean {
  const code = (err as { code?: string })?.code ?? '';
  return code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB';
}

/**
 * Why the storage of `path` fails, in the OS's words when it gives any: SQLite says only
 * "disk I/O error" or "readonly database", so the file and its WAL are opened for writing and
 * read once to see what the OS answers (EIO, EROFS, EPERM, EACCES, ENOSPC).
 */
export function storageFault(err: unknown, path: string): string {
  const sqlite = `${(err as Error)?.message ?? String(err)}${(err as { code?: string })?.code ? ` [${(err as { code?: string }).code}]` : ''}`;
  const os = osError(path);
  return os ? `${sqlite}; ${os}` : sqlite;
}

/** What the OS answers when the database and its WAL are opened for writing and read: undefined when all is well. */
function osError(path: string): string | undefined {
  for (const file of [path, `${path}-wal`]) {
    let fd: number | undefined;
    try {
      if (!existsSync(file)) continue;
      fd = openSync(file, 'r+');
      readSync(fd, Buffer.alloc(512), 0, 512, 0);
    } catch (os) {
      return `${file}: ${(os as Error).message}`;
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  }
  return undefined;
}
