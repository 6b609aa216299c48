import { closeSync, mkdtempSync, openSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { OutboxConfig } from '../src/config/types.js';
import type { Reading } from '../src/core/reading.js';
import { Outbox } from '../src/outbox/outbox.js';
import { testLog } from './support/log.js';
import { capturingLog, fillUp, mountExt4, mountTmpfs, openOutbox as openAgentOutbox, sh } from './support/storage.js';

/*
 * h24's attack on h21's deferred deletes (acknowledgements saved as `acked:<upstream>` rows of
 * meta, their records deleted with the next group commit). Tests marked "FAILED on d6cc9c8"
 * showed a defect, fixed in 22d4b7d; the others passed from the start and are kept as evidence
 * of what holds.
 */

const CONFIG: OutboxConfig = { max_size: 64 * 1024 ** 2, max_age: 86_400_000, when_full: 'drop-oldest', durability: 'normal', group_records: 100, group_wait: 5 };

const open: { close(): void }[] = [];
afterEach(() => {
  while (open.length) open.pop()!.close();
});

/** An outbox closed after the test, unless killed. */
function openOutbox(dir: string, config: Partial<OutboxConfig> = {}, log = testLog) {
  const opened = openAgentOutbox(dir, log, { ...CONFIG, ...config }, undefined, 'gw-1');
  const handle = { ...opened, kill: () => (open.splice(open.indexOf(handle), 1), opened.kill()) };
  open.push(handle);
  return handle;
}

const tmp = () => mkdtempSync(join(tmpdir(), 'outbox-attack-'));
const reading = (i: number, pad = ''): Reading => ({ device: 'm1', ts: 1_700_000_000_000 + i, values: { v: i, ...(pad ? { pad } : {}) } });
const seqs = (outbox: Outbox, upstream: string, after = 0, limit = 1_000_000) => outbox.read(upstream, after, limit).map((r) => JSON.parse(r.payload).seq as number);
const ids = (outbox: Outbox, upstream: string) => outbox.read(upstream, 0, 1_000_000).map((r) => r.id);

/** What /api/outbox and edge_outbox_queued say against what an upstream starting over would be sent. */
function expectCountsRight(outbox: Outbox, upstream: string): void {
  expect(outbox.depth(upstream)).toBe(outbox.read(upstream, 0, 1_000_000).length);
}

describe('the saved `acked:` row read back at start', () => {
  // FAILED on d6cc9c8 (fixed). The row's text is split on ' ' and '-' and each part goes through Number():
  // Number('') is 0, so a text that starts with '-' ("-3": a damaged row, or one some other
  // version wrote with a sign or another separator) becomes the range 0-3, and the first group
  // deletes records 1..3 that no upstream ever acknowledged, without a word. Only `<digits>-<digits>`
  // should be taken as a range; anything else deletes nothing (at worst a duplicate).
  it('deletes nothing for a text it cannot read as ranges of ids', () => {
    for (const text of ['-3', '-3 -5', '1-', '-']) {
      const dir = tmp();
      const first = openOutbox(dir);
      for (let i = 0; i < 10; i++) first.outbox.add(['cloud'], 's1', reading(i));
      first.outbox.commit();
      first.db.prepare("INSERT INTO meta (key, value) VALUES ('acked:cloud', ?)").run(text);
      first.kill();

      const again = openOutbox(dir);
      again.outbox.add(['cloud'], 's1', reading(10));
      again.outbox.commit();
      expect({ text, seqs: seqs(again.outbox, 'cloud') }).toEqual({ text, seqs: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11] });
      expectCountsRight(again.outbox, 'cloud');
      again.close();
      open.pop();
    }
  });

  // FAILED on d6cc9c8 (fixed). The code writes disjoint ranges only, but the reader trusts that: each saved
  // range is counted on its own, so overlapping ranges (a damaged row, a hand edit) are
  // subtracted twice from depth: /api/outbox and edge_outbox_depth say 0 (or less) while records
  // wait, until the next restart. Wrong count only; nothing is lost (the deletes are by id).
  it('counts right when the saved ranges overlap', () => {
    const dir = tmp();
    const first = openOutbox(dir);
    for (let i = 0; i < 20; i++) first.outbox.add(['cloud'], 's1', reading(i));
    first.outbox.commit();
    first.db.prepare("INSERT INTO meta (key, value) VALUES ('acked:cloud', '1-10 5-15 1-10')").run();
    first.kill();

    const again = openOutbox(dir);
    expect(seqs(again.outbox, 'cloud')).toEqual([16, 17, 18, 19, 20]);
    expectCountsRight(again.outbox, 'cloud');
    again.outbox.add(['cloud'], 's1', reading(20));
    again.outbox.commit();
    expect(seqs(again.outbox, 'cloud')).toEqual([16, 17, 18, 19, 20, 21]);
    expectCountsRight(again.outbox, 'cloud');
  });

  // Passes: the key scan `key >= 'acked:' AND key < 'acked;'` takes every upstream name, and
  // the name is never part of the text, so spaces, '-', ':' and ';' in names do not matter; a
  // name that is a prefix of another keeps its own row.
  it('keeps each upstream its own ranges, whatever the characters of its name, through a kill', () => {
    const names = ['a', 'a b', 'a-b', 'a:b', 'a;b', 'a:', ';', 'acked:x', 'ä ü-1'];
    const dir = tmp();
    const first = openOutbox(dir);
    for (let i = 0; i < 40; i++) first.outbox.add(names, 's1', reading(i));
    first.outbox.commit();
    // each name acknowledges a different share of its records, interleaved ids
    names.forEach((name, k) => {
      const rows = first.outbox.read(name, 0, 1000);
      first.outbox.ack(name, rows[k].id, rows[k + 10].id);
      first.outbox.ack(name, rows[20 + k].id, rows[21 + k].id);
    });
    first.kill();

    const again = openOutbox(dir);
    names.forEach((name, k) => {
      const expected = Array.from({ length: 40 }, (_, i) => i + 1).filter((seq) => !(seq >= k + 1 && seq <= k + 11) && !(seq >= 21 + k && seq <= 22 + k));
      expect({ name, seqs: seqs(again.outbox, name) }).toEqual({ name, seqs: expected });
      expectCountsRight(again.outbox, name);
    });
    again.outbox.add(names, 's1', reading(40));
    again.outbox.commit();
    names.forEach((name) => {
      expectCountsRight(again.outbox, name);
      expect(again.outbox.depth(name)).toBe(40 - 13 + 1);
    });
    // every row of them deleted with that group: the file holds what the counts say
    const held = again.db.prepare('SELECT upstream, count(*) AS n FROM outbox GROUP BY upstream').all() as { upstream: string; n: number }[];
    expect(Object.fromEntries(held.map((r) => [r.upstream, r.n]))).toEqual(Object.fromEntries(names.map((n) => [n, 28])));
  });
});

describe('a forwarder that starts over while ranges wait', () => {
  // Passes: read() from the oldest skips 20 acknowledged ranges (some larger than the batch,
  // interleaved with another upstream's ids), keeps the limit and the order, live and after a kill.
  it('is sent exactly what is not acknowledged, batch by batch, for any batch size', () => {
    const dir = tmp();
    const first = openOutbox(dir, { group_records: 1000 });
    for (let i = 0; i < 2000; i++) first.outbox.add(i % 3 === 0 ? ['cloud', 'other'] : ['cloud'], 's1', reading(i));
    first.outbox.commit();
    const all = ids(first.outbox, 'cloud');
    const acked = new Set<number>();
    // 12 ranges of 1..150 records with gaps between; ACKED_RANGES is 16 per upstream
    for (let k = 0, at = 3; k < 12; k++) {
      const length = [1, 2, 150, 7, 60, 1, 120, 3, 40, 9, 130, 5][k];
      first.outbox.ack('cloud', all[at], all[at + length - 1]);
      for (let j = at; j < at + length; j++) acked.add(all[j]);
      at += length + 1 + (k % 4);
    }
    const expected = all.filter((id) => !acked.has(id));
    const drain = (outbox: Outbox, batch: number) => {
      const got: number[] = [];
      for (let cursor = 0; ; ) {
        const rows = outbox.read('cloud', cursor, batch);
        expect(rows.length).toBeLessThanOrEqual(batch);
        if (rows.length === 0) return got;
        got.push(...rows.map((r) => r.id));
        cursor = rows.at(-1)!.id;
      }
    };
    for (const batch of [1, 2, 7, 100, 1000]) expect(drain(first.outbox, batch)).toEqual(expected);
    // the status API's oldest_age_ms: the age of the oldest record not acknowledged
    const atOf = (id: number) => first.db.prepare('SELECT at FROM outbox WHERE id = ?').pluck().get(id) as number;
    expect(first.outbox.oldestAge('cloud', 1_800_000_000_000)).toBe(1_800_000_000_000 - atOf(expected[0]));
    expectCountsRight(first.outbox, 'cloud');
    expectCountsRight(first.outbox, 'other');
    first.kill();

    const again = openOutbox(dir);
    for (const batch of [1, 7, 1000]) expect(drain(again.outbox, batch)).toEqual(expected);
    expectCountsRight(again.outbox, 'cloud');
    expect(again.outbox.depth('other')).toBe(667);
  });
});

describe('the storage fails under the acknowledged records', () => {
  // FAILED on d6cc9c8 (fixed) (passes on 0abb571's outbox). A bad sector under records already delivered
  // (the SD card wears: the very case this change is for) makes their delete fail with
  // SQLITE_CORRUPT. Before, that failed the ack alone (the records stayed, a duplicate at worst)
  // and new readings went on being accepted: the insert touches only the newest pages. Now the
  // delete rides in every group commit's transaction: every group fails with it, and every new
  // reading is refused (counted as refused, i.e. lost) for as long as the agent runs; the saved
  // range brings the same delete back after a restart. (ack() itself succeeds: it counts the
  // range through the index, which the damage does not touch.)
  it('accepts new records when the delete of acknowledged ones meets a damaged page', () => {
    const dir = tmp();
    const { log, lines } = capturingLog();
    const handle = openOutbox(dir, {}, log);
    const { db, outbox } = handle;
    for (let i = 0; i < 300; i++) outbox.add(['cloud'], 's1', reading(i, 'x'.repeat(200)));
    outbox.commit();
    const sent = outbox.read('cloud', 0, 1000);
    // the table leaf that holds the oldest records, moved from the WAL into the file
    const leaf = db.prepare("SELECT pageno FROM dbstat WHERE name = 'outbox' AND pagetype = 'leaf' ORDER BY path LIMIT 1").pluck().get() as number;
    const pageSize = db.pragma('page_size', { simple: true }) as number;
    db.pragma('wal_checkpoint(TRUNCATE)');
    // the sector goes bad: the page's type byte is garbage; the page cache lets go of it
    const fd = openSync(join(dir, 'edge-agent.db'), 'r+');
    writeSync(fd, Buffer.from([0x55, 0x55, 0x55, 0x55]), 0, 4, (leaf - 1) * pageSize);
    closeSync(fd);
    db.pragma('shrink_memory');
    expect(() => db.prepare('SELECT payload FROM outbox WHERE id = ?').get(sent[0].id)).toThrow(/malformed/);

    // the upstream acknowledges the first three it was sent before the page went bad
    outbox.ack('cloud', sent[0].id, sent[2].id);
    // the devices go on
    for (let i = 300; i < 310; i++) outbox.add(['cloud'], 's1', reading(i));
    outbox.commit();
    expect(lines.filter((l) => /acknowledged records cannot be deleted/.test(l.msg))).toHaveLength(1);
    expect(outbox.drops.get('cloud')?.refused ?? 0).toBe(0);
    expect(seqs(outbox, 'cloud', sent.at(-1)!.id)).toEqual(Array.from({ length: 10 }, (_, k) => 301 + k));
    handle.kill();
  });
});

describe('more ranges than ACKED_RANGES on a full disk', () => {
  // Passes: 40 acknowledgements with gaps between them on a full 2 MB tmpfs; nothing that was
  // not acknowledged is lost, the counts stay exact and the ranges held stay bounded, live and
  // after a kill.
  it('loses nothing, counts right, holds a bounded number of ranges', () => {
    const mount = mountTmpfs('2m');
    try {
      const dir = join(mount.dir, 'data');
      const first = openOutbox(dir, { group_records: 1000, max_size: 1024 ** 3 });
      for (let i = 0; i < 4000; i++) first.outbox.add(['cloud'], 's1', reading(i, 'y'.repeat(100)));
      first.outbox.commit();
      fillUp(join(mount.dir, 'filler'));
      const before = ids(first.outbox, 'cloud');
      const acked = new Set<number>();
      for (let k = 0; k < 40; k++) {
        const at = k * 50;
        first.outbox.ack('cloud', before[at], before[at + 9]);
        for (let j = at; j < at + 10; j++) acked.add(before[j]);
        expect(((first.outbox as unknown as { acked: Map<string, unknown[]> }).acked.get('cloud') ?? []).length).toBeLessThanOrEqual(33);
      }
      const waiting = ids(first.outbox, 'cloud');
      // whatever could not be deleted stays readable (a duplicate, as before the change), nothing unacknowledged goes
      for (const id of before) if (!acked.has(id)) expect(waiting).toContain(id);
      expectCountsRight(first.outbox, 'cloud');
      first.kill();

      const again = openOutbox(dir, { group_records: 1000, max_size: 1024 ** 3 });
      const after = ids(again.outbox, 'cloud');
      for (const id of before) if (!acked.has(id)) expect(after).toContain(id);
      expectCountsRight(again.outbox, 'cloud');
    } finally {
      while (open.length) open.pop()!.close();
      mount.unmount();
    }
  });
});

describe('acknowledgements meeting other ways out of the queue', () => {
  // Passes: an ack that arrives for records expired (max_age) while they were in flight counts
  // only what is still there (drop-oldest around acks: outbox-acked.test.ts); a late refusal (dead letter) of
  // records acknowledged meanwhile moves nothing and counts nothing; live and after a kill.
  it('counts each record once whether expired, dead-lettered or acknowledged first', () => {
    const dir = tmp();
    let wall = 1_700_000_000_000;
    let mono = 0;
    const clocks = { wall: () => wall, mono: () => mono };
    const full = { ...CONFIG, max_age: 60_000 };
    const { db, outbox } = openAgentOutbox(dir, testLog, full, clocks, 'gw-1');
    open.push({ close: () => db.close() });
    for (let i = 0; i < 30; i++) outbox.add(['cloud'], 's1', reading(i));
    outbox.commit();
    const inFlight = outbox.read('cloud', 0, 30);
    // the 30 are sent; meanwhile they pass max_age, then 20 more arrive
    wall += 120_000;
    mono += 120_000;
    outbox.expire();
    expect(outbox.drops.get('cloud')?.expired).toBe(30);
    for (let i = 30; i < 50; i++) outbox.add(['cloud'], 's1', reading(i));
    outbox.commit();
    // the send settles: acknowledged, all 30 (nothing left of them to count)
    outbox.ack('cloud', inFlight[0].id, inFlight.at(-1)!.id);
    expectCountsRight(outbox, 'cloud');
    expect(outbox.depth('cloud')).toBe(20);
    // the next 20: 10 acknowledged, then a predecessor's send refuses 5 of those and 5 others
    const next = outbox.read('cloud', inFlight.at(-1)!.id, 20);
    outbox.ack('cloud', next[0].id, next[9].id);
    outbox.deadLetter('cloud', next.slice(5, 15).map((r) => r.id), 'refused');
    expect(outbox.deadLettered.get('cloud')).toBe(5);
    expect(outbox.deadLetters('cloud').map((r) => JSON.parse(r.payload).seq)).toEqual([41, 42, 43, 44, 45]);
    expect(seqs(outbox, 'cloud')).toEqual([46, 47, 48, 49, 50]);
    expectCountsRight(outbox, 'cloud');
    db.close();
    open.pop();

    const again = openOutbox(dir);
    expect(seqs(again.outbox, 'cloud')).toEqual([46, 47, 48, 49, 50]);
    expectCountsRight(again.outbox, 'cloud');
  });

  // Passes: an upstream removed from the config while its acknowledged ranges wait is no
  // orphan for them (nothing of it is queued), and its records are still deleted, live and
  // after a kill; one with records left is an orphan counting only those.
  it('deletes the acknowledged records of an upstream no longer configured and reports orphans right', () => {
    const dir = tmp();
    const first = openOutbox(dir);
    for (let i = 0; i < 10; i++) first.outbox.add(['gone', 'half', 'kept'], 's1', reading(i));
    first.outbox.commit();
    const gone = first.outbox.read('gone', 0, 100);
    first.outbox.ack('gone', gone[0].id, gone.at(-1)!.id);
    const half = first.outbox.read('half', 0, 100);
    first.outbox.ack('half', half[0].id, half[4].id);
    expect(first.outbox.orphans(['kept'])).toEqual(['half']);
    first.kill();

    const again = openOutbox(dir);
    expect(again.outbox.orphans(['kept'])).toEqual(['half']);
    expect(again.outbox.depth('half')).toBe(5);
    again.outbox.add(['kept'], 's1', reading(10));
    again.outbox.commit();
    const held = again.db.prepare('SELECT upstream, count(*) AS n FROM outbox GROUP BY upstream ORDER BY upstream').all();
    expect(held).toEqual([
      { upstream: 'half', n: 5 },
      { upstream: 'kept', n: 11 },
    ]);
  });
});

describe('more than ACKED_RANGES on a failing disk (EPERM)', () => {
  // Passes: acks while the files are immutable fail (the records stay: a duplicate, as before
  // the change), new records are refused and counted; once writable, the repeated acks go past
  // 16 ranges, the deletes run, and nothing unacknowledged is lost; counts exact, live and after a kill.
  it('loses nothing and counts right through the fault', () => {
    const fs = mountExt4();
    const data = join(fs.dir, 'data');
    const files = () => ['edge-agent.db', 'edge-agent.db-wal', 'edge-agent.seq'].map((f) => join(data, f));
    try {
      const first = openOutbox(data, { group_records: 1000 });
      for (let i = 0; i < 2000; i++) first.outbox.add(['cloud'], 's1', reading(i));
      first.outbox.commit();
      const all = ids(first.outbox, 'cloud');
      const range = (k: number) => [all[k * 50], all[k * 50 + 19]] as const;
      for (let k = 0; k < 10; k++) first.outbox.ack('cloud', ...range(k));
      sh('chattr', '+i', ...files());
      for (let k = 10; k < 20; k++) first.outbox.ack('cloud', ...range(k));
      for (let i = 2000; i < 2100; i++) first.outbox.add(['cloud'], 's1', reading(i));
      first.outbox.commit();
      expect(first.outbox.drops.get('cloud')?.refused).toBe(100);
      expect(first.outbox.depth('cloud')).toBe(2000 - 200);
      expectCountsRight(first.outbox, 'cloud');
      sh('chattr', '-i', ...files());
      // the forwarder sends the unacknowledged ones again and they are acknowledged now
      for (let k = 10; k < 20; k++) first.outbox.ack('cloud', ...range(k));
      for (let i = 2100; i < 2200; i++) first.outbox.add(['cloud'], 's1', reading(i));
      first.outbox.commit();
      const acked = new Set(Array.from({ length: 20 }, (_, k) => Array.from({ length: 20 }, (_, j) => k * 50 + j + 1)).flat());
      const expected = [...Array.from({ length: 2000 }, (_, i) => i + 1).filter((seq) => !acked.has(seq)), ...Array.from({ length: 100 }, (_, i) => 2101 + i)];
      expect(seqs(first.outbox, 'cloud')).toEqual(expected);
      expectCountsRight(first.outbox, 'cloud');
      first.kill();

      const again = openOutbox(data, { group_records: 1000 });
      expect(seqs(again.outbox, 'cloud')).toEqual(expected);
      expectCountsRight(again.outbox, 'cloud');
      again.close();
      open.pop();
    } finally {
      try {
        sh('chattr', '-i', ...files());
      } catch {
        // not there
      }
      while (open.length) open.pop()!.close();
      fs.unmount();
    }
  });
});

describe('an acknowledgement after close', () => {
  // FAILED on d6cc9c8 (fixed) (cosmetic: a timer and the closed outbox kept alive). close() could not
  // delete the acknowledged records (the files were immutable, EPERM): their 16 ranges stay
  // saved for the next start, as they should. A send still in flight settles after close (the
  // agent waits 2 s for sends, then closes; on a reload that reopens the store the agent goes on
  // running): its ack finds 16 ranges, tries flushAcked on the closed database, fails, and
  // schedules the flush timer again, which fails and schedules itself every 5 s for as long as
  // the process runs: the old outbox is never collected, and an error line says the storage
  // fails in ack.
  it('leaves no timer behind', () => {
    const fs = mountExt4();
    const data = join(fs.dir, 'data');
    const files = () => ['edge-agent.db', 'edge-agent.db-wal', 'edge-agent.seq'].map((f) => join(data, f));
    try {
      const { log } = capturingLog();
      const { db, outbox } = openAgentOutbox(data, log, CONFIG, undefined, 'gw-1');
      for (let i = 0; i < 100; i++) outbox.add(['cloud'], 's1', reading(i));
      outbox.commit();
      const all = ids(outbox, 'cloud');
      for (let k = 0; k < 16; k++) outbox.ack('cloud', all[k * 4], all[k * 4 + 1]);
      sh('chattr', '+i', ...files());
      outbox.close();
      try {
        db.close();
      } catch {
        // the WAL cannot be removed: closed anyway
      }
      sh('chattr', '-i', ...files());
      // the send in flight settles
      outbox.ack('cloud', all[80], all[85]);
      const timer = (outbox as unknown as { ackedTimer?: NodeJS.Timeout }).ackedTimer;
      clearTimeout(timer);
      expect(timer).toBeUndefined();
    } finally {
      try {
        sh('chattr', '-i', ...files());
      } catch {
        // not there
      }
      fs.unmount();
    }
  });
});
