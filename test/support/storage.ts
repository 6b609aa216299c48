import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import type { OutboxConfig } from '../../src/config/types.js';
import { openDatabase } from '../../src/outbox/database.js';
import { Outbox, type OutboxClocks } from '../../src/outbox/outbox.js';
import { StateStore } from '../../src/streams/state.js';

/**
 * Real storage faults for the outbox tests: tmpfs mounts, loop-mounted ext4 images, chattr.
 * They need root; CI runs as root, so a run without it fails rather than skips.
 */
export function requireRoot(): void {
  if (process.getuid?.() !== 0) throw new Error('this test mounts file systems and needs root (CI runs it as root)');
}

export function sh(cmd: string, ...args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A tmpfs of `size` (e.g. '2m') mounted on a new directory. */
export function mountTmpfs(size: string): { dir: string; unmount(): void } {
  requireRoot();
  const dir = mkdtempSync(join(tmpdir(), 'outbox-tmpfs-'));
  sh('mount', '-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir);
  return {
    dir,
    unmount: () => {
      sh('umount', '-l', dir);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Writes `file` until the file system answers ENOSPC: the disk is then full to the last byte. */
export function fillUp(file: string): number {
  const fd = openSync(file, 'a');
  let written = 0;
  try {
    for (const chunk of [65536, 4096, 512, 1]) {
      const buffer = Buffer.alloc(chunk, 1);
      for (;;) {
        try {
          written += writeSync(fd, buffer);
        } catch {
          break;
        }
      }
    }
  } finally {
    closeSync(fd);
  }
  return written;
}

/** A pino logger whose lines the test can read. */
export function capturingLog(): { log: pino.Logger; lines: { level: number; msg: string; [k: string]: unknown }[] } {
  const lines: { level: number; msg: string }[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { log, lines };
}

export const OUTBOX: OutboxConfig = { max_size: 1024 ** 3, max_age: 86_400_000, when_full: 'drop-oldest', durability: 'normal', group_records: 50, group_wait: 5 };

/**
 * An outbox on `dir` the way the agent opens it. `kill()`: the process dies, the file is closed
 * without the outbox's close (no last commit, no delete of acknowledged records).
 */
export function openOutbox(dir: string, log: pino.Logger, config: Partial<OutboxConfig> = {}, clocks?: OutboxClocks, agent = 'gw') {
  const full = { ...OUTBOX, ...config };
  const { db, quarantined } = openDatabase(dir, { durability: full.durability, maxSize: full.max_size }, log);
  let outbox: Outbox | undefined;
  const state = new StateStore(db, () => outbox?.scheduleCommit());
  outbox = new Outbox(db, full, agent, state, log, clocks);
  return { db, state, outbox, quarantined, close: () => (outbox.close(), db.close()), kill: () => db.close() };
}

export const seqOf = (payload: string) => JSON.parse(payload).seq as number;

/**
 * An ext4 file system in an image file, loop-mounted on a new directory. With `backingSize`,
 * the image (sparse, 64 MB) sits on a tmpfs of that size: once the tmpfs is full, every block
 * the ext4 writes fails in the loop device, and the writer gets a real I/O error.
 */
export function mountExt4(options: { backingSize?: string; mountOptions?: string } = {}) {
  requireRoot();
  const root = mkdtempSync(join(tmpdir(), 'outbox-ext4-'));
  const backing = join(root, 'backing');
  const dir = join(root, 'mnt');
  sh('mkdir', '-p', backing, dir);
  if (options.backingSize) sh('mount', '-t', 'tmpfs', '-o', `size=${options.backingSize}`, 'tmpfs', backing);
  const image = join(backing, 'image');
  sh('truncate', '-s', '64M', image);
  sh('mkfs.ext4', '-q', '-F', image);
  sh('mount', '-o', `loop${options.mountOptions ? `,${options.mountOptions}` : ''}`, image, dir);
  return {
    dir,
    backing,
    remount: (how: string) => sh('mount', '-o', `remount,${how}`, dir),
    growBacking: (size: string) => sh('mount', '-o', `remount,size=${size}`, backing),
    unmount: () => {
      try {
        sh('umount', '-l', dir);
      } finally {
        if (options.backingSize) sh('umount', '-l', backing);
        rmSync(root, { recursive: true, force: true });
      }
    },
  };
}
