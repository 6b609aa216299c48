import { copyFileSync, existsSync, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { OutboxConfig } from '../src/config/types.js';
import type { Reading } from '../src/core/reading.js';
import { openDatabase } from '../src/outbox/database.js';
import { Outbox } from '../src/outbox/outbox.js';
import { recordJson } from '../src/outbox/record.js';
import { StateStore } from '../src/streams/state.js';
import { Outbox as OutboxV1 } from './fixtures/outbox-v1/outbox.js';
import { testLog } from './support/log.js';
import { mountTmpfs } from './support/storage.js';

/*
 * The outbox's database format against the code that wrote every database users have now (the
 * outbox of eeb5352, test/fixtures/outbox-v1): an upgrade keeps a backlog byte for byte, and a
 * rollback to that code does not turn records into something an upstream cannot use. Written by
 * h20 against h19's first design (branch wip/outbox-wear-attack), whose new record format and
 * tables failed four of these; the stored format is unchanged now, and these guard it.
 */

const CONFIG: OutboxConfig = { max_size: 64 * 1024 ** 2, max_age: 86_400_000, when_full: 'drop-oldest', durability: 'normal', group_records: 100, group_wait: 5 };

type Kind = typeof Outbox | typeof OutboxV1;
const open: { close(): void }[] = [];
afterEach(() => {
  while (open.length) open.pop()!.close();
});

/** The outbox of `kind` on `dir`, opened as the agent opens it. `kill()` closes the file without the outbox's close (a kill -9). */
function openWith(kind: Kind, dir: string, config: Partial<OutboxConfig> = {}) {
  const full = { ...CONFIG, ...config };
  const { db } = openDatabase(dir, { durability: full.durability, maxSize: full.max_size }, testLog);
  let outbox: { scheduleCommit(): void } | undefined;
  const state = new StateStore(db, () => outbox?.scheduleCommit());
  let made: Outbox | OutboxV1;
  try {
    made = kind === Outbox ? new Outbox(db, full, 'gw-1', state, testLog) : new OutboxV1(db, full, 'gw-1', state, testLog);
  } catch (err) {
    db.close();
    throw err;
  }
  outbox = made;
  const handle = {
    db,
    outbox: made,
    close: () => (made.close(), db.close()),
    kill: () => {
      open.splice(open.indexOf(handle), 1);
      db.close();
    },
  };
  open.push(handle);
  return handle;
}

const tmp = () => mkdtempSync(join(tmpdir(), 'outbox-formats-'));

/** Readings of every shape the record format has: events, quality, capture, non-ASCII, a fractional and a NaN ts, a large value. */
function reading(i: number): Reading {
  switch (i % 6) {
    case 0:
      return { device: 'm1', ts: 1_700_000_000_000 + i, values: { v: i, name: 'Pumpe "Süd" \u00e9\n\u2028' } };
    case 1:
      return { device: 'plug-küche', ts: 1_700_000_000_000.5 + i, values: { v: null }, quality: { v: 'bad' } };
    case 2:
      return { device: 'm1', ts: 1_700_000_000_000 + i, values: {}, event: { code: 'E1', severity: 'major', description: 'Überdruck\t"x"', state: 'raised' } };
    case 3:
      return { device: 'm1', ts: 1_700_000_000_000 + i, values: { v: -0, big: 'x'.repeat(20_000) }, capture: 1_700_000_000_001 };
    case 4:
      return { device: 'm1', ts: Number.NaN, values: { v: i } };
    default:
      return { device: '日本', ts: 1_700_000_000_000 + i, values: { v: 1e21, w: 5e-324 } };
  }
}

const allRows = (outbox: Outbox | OutboxV1, upstream: string) => outbox.read(upstream, 0, 100_000);

describe('an upgrade from a database of the earlier format', () => {
  it('keeps the backlog byte for byte, next to new records, through acks, a dead letter and restarts', () => {
    const dir = tmp();
    const old = openWith(OutboxV1, dir);
    for (let i = 0; i < 250; i++) old.outbox.add(i % 2 ? ['cloud', 'file'] : ['cloud'], 's1', reading(i));
    old.outbox.commit();
    const first = old.outbox.read('cloud', 0, 40);
    old.outbox.ack('cloud', first[0].id, first.at(-1)!.id);
    old.outbox.deadLetter('cloud', [old.outbox.read('cloud', first.at(-1)!.id, 1)[0].id], 'refused');
    const cloud = allRows(old.outbox, 'cloud');
    const file = allRows(old.outbox, 'file');
    const lastOldSeq = old.outbox.lastSeq;
    old.close();
    open.pop();

    const upgraded = openWith(Outbox, dir);
    expect(upgraded.outbox.depth('cloud')).toBe(cloud.length);
    expect(upgraded.outbox.depth('file')).toBe(file.length);
    expect(allRows(upgraded.outbox, 'cloud')).toEqual(cloud);
    expect(allRows(upgraded.outbox, 'file')).toEqual(file);
    expect(upgraded.outbox.deadLetters('cloud')).toHaveLength(1);
    for (let i = 0; i < 30; i++) upgraded.outbox.add(['cloud'], 's1', reading(i));
    upgraded.outbox.commit();
    const mixed = allRows(upgraded.outbox, 'cloud');
    expect(mixed.slice(0, cloud.length)).toEqual(cloud);
    expect(mixed.slice(cloud.length).map((r) => r.payload)).toEqual(Array.from({ length: 30 }, (_, i) => recordJson('gw-1', 's1', reading(i), lastOldSeq + 1 + i, upgraded.outbox.epoch)));
    // one acknowledgement across the old rows and the new ones, then a kill before its delete
    upgraded.outbox.ack('cloud', mixed[0].id, mixed[cloud.length + 4].id);
    upgraded.kill();

    const again = openWith(Outbox, dir);
    const rest = allRows(again.outbox, 'cloud');
    expect(rest).toEqual(mixed.slice(cloud.length + 5));
    expect(again.outbox.depth('cloud')).toBe(rest.length);
    expect(allRows(again.outbox, 'file')).toEqual(file);
    again.outbox.ack('cloud', rest[0].id, rest.at(-1)!.id);
    again.outbox.ack('file', file[0].id, file.at(-1)!.id);
    again.outbox.commit();
    expect(again.outbox.depth('cloud')).toBe(0);
    expect(again.db.prepare('SELECT count(*) FROM outbox').pluck().get()).toBe(0);
  });

  it('opens the image a kill -9 of the code before leaves (records only in the WAL) with every committed record', () => {
    const dir = tmp();
    const old = openWith(OutboxV1, dir);
    for (let i = 0; i < 300; i++) old.outbox.add(['cloud'], 's1', reading(i));
    old.outbox.commit();
    const rows = allRows(old.outbox, 'cloud');
    old.outbox.ack('cloud', rows[0].id, rows[49].id);
    old.outbox.add(['cloud'], 's1', reading(300)); // not committed: never accepted
    // the files as the kill leaves them: the WAL not checkpointed (the copy is taken while the database is open)
    const crashed = join(tmp(), 'data');
    mkdirSync(crashed);
    for (const suffix of ['', '-wal']) if (existsSync(join(dir, `edge-agent.db${suffix}`))) copyFileSync(join(dir, `edge-agent.db${suffix}`), join(crashed, `edge-agent.db${suffix}`));
    expect(existsSync(join(crashed, 'edge-agent.db-wal'))).toBe(true);

    const upgraded = openWith(Outbox, crashed);
    expect(allRows(upgraded.outbox, 'cloud')).toEqual(rows.slice(50));
    expect(upgraded.outbox.lastSeq).toBe(300);
  });

  // h19's design failed this: its new tables (acked, openings) and view needed pages the
  // database does not have at its cap, so the upgraded agent could not open its outbox: at
  // start it waited for the storage forever (openStoreWhenPossible), reading nothing. The code
  // before opens the same file and goes on dropping the oldest records (when_full).
  it('opens a database that reached its cap (drop-oldest at work, no free page) and goes on accepting records', () => {
    const dir = tmp();
    const capped = { max_size: 512 * 1024 };
    const old = openWith(OutboxV1, dir, capped);
    const pad = 'x'.repeat(100);
    let i = 0;
    const add = () => old.outbox.add(['cloud'], 's1', { device: 'm1', ts: 1_700_000_000_000 + i, values: { v: i++, pad } });
    while ((old.outbox.drops.get('cloud')?.overflow ?? 0) === 0) {
      for (let k = 0; k < 100; k++) add();
      old.outbox.commit();
    }
    // a record at a time until the file has all its pages and the pages dropOldest freed are used
    // up: the moment before the next drop (a stop then is as likely as at any other moment)
    const full = () => old.db.pragma('freelist_count', { simple: true }) === 0 && old.db.pragma('page_count', { simple: true }) === old.db.pragma('max_page_count', { simple: true });
    for (let tries = 0; tries < 20_000 && !full(); tries++) {
      add();
      old.outbox.commit();
    }
    expect(full()).toBe(true);
    const backlog = allRows(old.outbox, 'cloud');
    old.close();
    open.pop();

    const upgraded = openWith(Outbox, dir, capped);
    expect(allRows(upgraded.outbox, 'cloud')).toEqual(backlog);
    upgraded.outbox.add(['cloud'], 's1', { device: 'm1', ts: 1_700_000_000_000 + i, values: { v: i, pad } });
    upgraded.outbox.commit();
    expect(allRows(upgraded.outbox, 'cloud').at(-1)!.payload).toContain(`"v":${i}`);
  });

  // h19's design failed this, as above on a disk that filled up (a 2 MB tmpfs, max_size
  // 1 GB): raising max_size does not help there, only freeing disk space by hand does.
  it('opens a database of the earlier format on a full disk and goes on accepting records', () => {
    const mount = mountTmpfs('2m');
    try {
      const dir = join(mount.dir, 'data');
      const old = openWith(OutboxV1, dir, { max_size: 1024 ** 3 });
      let i = 0;
      const add = () => old.outbox.add(['cloud'], 's1', { device: 'm1', ts: 1_700_000_000_000 + i, values: { v: i++, pad: 'z'.repeat(300) } });
      while ((old.outbox.drops.get('cloud')?.overflow ?? 0) === 0 && i < 50_000) {
        for (let k = 0; k < 50; k++) add();
        old.outbox.commit();
      }
      const full = () => old.db.pragma('freelist_count', { simple: true }) === 0 && old.db.pragma('page_count', { simple: true }) === old.db.pragma('max_page_count', { simple: true });
      for (let tries = 0; tries < 20_000 && !full(); tries++) {
        add();
        old.outbox.commit();
      }
      expect(full()).toBe(true);
      const backlog = allRows(old.outbox, 'cloud');
      old.close();
      open.pop();

      const upgraded = openWith(Outbox, dir, { max_size: 1024 ** 3 });
      expect(allRows(upgraded.outbox, 'cloud')).toEqual(backlog);
      upgraded.outbox.add(['cloud'], 's1', { device: 'm1', ts: 1_700_000_000_000 + i, values: { v: i } });
      upgraded.outbox.commit();
      expect(allRows(upgraded.outbox, 'cloud').at(-1)!.payload).toContain(`"v":${i}`);
    } finally {
      while (open.length) open.pop()!.close();
      mount.unmount();
    }
  });
});

describe('a rollback to the code before', () => {
  // h19's design failed this: the code before sends `payload` as it is, and a row of h19's
  // format held only the body: upstream got {"values":{"v":0}} with no agent, stream, device,
  // ts, epoch or seq. A rollback is not promised to work, but this one delivers records nobody
  // can place in time or dedupe, and deletes them from the outbox once acknowledged: the data
  // is lost without a word. (It also sends again what was acknowledged and not yet deleted
  // before a crash: a duplicate the consumer could drop only if the record were whole.)
  it('does not turn the records of the new format into bodies without agent, device, ts or seq', () => {
    const dir = tmp();
    const now = openWith(Outbox, dir);
    for (let i = 0; i < 12; i++) now.outbox.add(['cloud'], 's1', reading(i));
    now.outbox.commit();
    const expected = allRows(now.outbox, 'cloud');
    now.close();
    open.pop();

    const rolledBack = openWith(OutboxV1, dir);
    const sent = allRows(rolledBack.outbox, 'cloud');
    for (const row of sent) expect(Object.keys(JSON.parse(row.payload))).toEqual(expect.arrayContaining(['agent', 'stream', 'device', 'ts', 'epoch', 'seq']));
    expect(sent).toEqual(expected);
  });

  it('then an upgrade again: every record byte for byte, what was acknowledged before the rollback not again', () => {
    const dir = tmp();
    const now = openWith(Outbox, dir);
    for (let i = 0; i < 12; i++) now.outbox.add(['cloud'], 's1', reading(i));
    now.outbox.commit();
    const expected = allRows(now.outbox, 'cloud');
    now.outbox.ack('cloud', expected[0].id, expected[2].id);
    now.kill();

    const rolledBack = openWith(OutboxV1, dir);
    for (let i = 12; i < 17; i++) rolledBack.outbox.add(['cloud'], 's1', reading(i));
    rolledBack.outbox.commit();
    const written = allRows(rolledBack.outbox, 'cloud').slice(12);
    rolledBack.close();
    open.pop();

    const again = openWith(Outbox, dir);
    expect(allRows(again.outbox, 'cloud')).toEqual([...expected.slice(3), ...written]);
    expect(again.outbox.depth('cloud')).toBe(14);
  });

  // h19's design failed this: a database it created had no AUTOINCREMENT,
  // and its table `acked` kept the last saved ranges after their records were deleted. The code
  // before, rolled back onto it, takes max(id) + 1 for its records: 1 again once the queue was
  // empty. Upgraded again, the stale ranges name those records (never sent: the upstream was
  // away), and they are deleted as acknowledged at the first group, without a word.
  it('then an upgrade again keeps the records the code before wrote in between (ids it handed out again)', () => {
    const dir = tmp();
    const now = openWith(Outbox, dir);
    for (let i = 0; i < 10; i++) now.outbox.add(['cloud'], 's1', reading(i));
    now.outbox.commit();
    const sent = allRows(now.outbox, 'cloud');
    now.outbox.ack('cloud', sent[0].id, sent.at(-1)!.id);
    now.close();
    open.pop();

    // rolled back, the upstream away: 10 records wait
    const rolledBack = openWith(OutboxV1, dir);
    for (let i = 10; i < 20; i++) rolledBack.outbox.add(['cloud'], 's1', reading(i));
    rolledBack.outbox.commit();
    const waiting = allRows(rolledBack.outbox, 'cloud');
    expect(waiting).toHaveLength(10);
    rolledBack.close();
    open.pop();

    const again = openWith(Outbox, dir);
    expect(again.outbox.depth('cloud')).toBe(10);
    again.outbox.commit();
    expect(allRows(again.outbox, 'cloud')).toEqual(waiting);
  });
});
