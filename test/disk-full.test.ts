import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/outbox/database.js';
import { Outbox } from '../src/outbox/outbox.js';
import { StateStore } from '../src/streams/state.js';
import { testLog } from './support/log.js';

/** A real full disk: a 2 MB tmpfs (mounting needs root, which the test suite's machines have). */
const mountPoint = mkdtempSync(join(tmpdir(), 'full-disk-'));
const isRoot = process.getuid?.() === 0;

beforeAll(() => {
  if (isRoot) execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mountPoint]);
});
afterAll(() => {
  if (isRoot) execFileSync('umount', ['-l', mountPoint]);
});

describe.runIf(isRoot)('outbox on a full disk', () => {
  it('rejects new records with a counted drop, keeps every committed one, and writes again once space is freed', () => {
    const filler = join(mountPoint, 'filler');
    writeFileSync(filler, Buffer.alloc(1024 * 1024));
    const { db } = openDatabase(join(mountPoint, 'data'), { durability: 'normal', maxSize: 1024 ** 3 }, testLog);
    let outbox: Outbox | undefined;
    const state = new StateStore(db, () => outbox?.scheduleCommit());
    outbox = new Outbox(db, { max_size: 1024 ** 3, max_age: 86_400_000, when_full: 'reject-new', durability: 'normal', group_records: 50, group_wait: 5 }, 'gw', state, testLog);

    const pad = 'z'.repeat(500);
    let added = 0;
    while (!outbox.drops.get('cloud')?.overflow && added < 20_000) {
      outbox.add(['cloud'], 's', { device: 'm', ts: added, values: { pad, i: added } });
      added++;
    }
    outbox.commit();
    const dropped = outbox.drops.get('cloud')!.overflow;
    const kept = outbox.read('cloud', 0, added).map((r) => JSON.parse(r.payload).seq as number);
    expect(dropped).toBeGreaterThan(0);
    expect(kept.length + dropped).toBe(added);
    expect(kept).toEqual(Array.from({ length: kept.length }, (_, i) => i + 1));

    rmSync(filler);
    outbox.add(['cloud'], 's', { device: 'm', ts: 1, values: { after: 1 } });
    outbox.commit();
    expect(outbox.depth('cloud')).toBe(kept.length + 1);
    expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
    outbox.close();
    db.close();
  });
});
