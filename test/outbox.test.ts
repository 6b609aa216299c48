import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { afterEach, describe, expect, it } from 'vitest';
import type { OutboxConfig } from '../src/config/types.js';
import { openDatabase } from '../src/outbox/database.js';
import { Forwarder } from '../src/upstream/forwarder.js';
import { Outbox, type OutboxRow } from '../src/outbox/outbox.js';
import { StateStore } from '../src/streams/state.js';
import type { Upstream } from '../src/upstream/upstream.js';
import { testLog } from './support/log.js';
import { until } from './support/ports.js';

const CONFIG: OutboxConfig = { max_size: 64 * 1024 ** 2, max_age: 86_400_000, when_full: 'drop-oldest', durability: 'normal', group_records: 100, group_wait: 5 };

const open: { close(): void }[] = [];
afterEach(() => {
  while (open.length) open.pop()!.close();
});

function openOutbox(dir: string, config: Partial<OutboxConfig> = {}) {
  const full = { ...CONFIG, ...config };
  const { db, quarantined } = openDatabase(dir, { durability: full.durability, maxSize: full.max_size }, testLog);
  let outbox: Outbox | undefined;
  const state = new StateStore(db, () => outbox?.scheduleCommit());
  outbox = new Outbox(db, full, 'gw-1', state, testLog);
  const handle = { db, state, outbox, quarantined, close: () => (outbox.close(), db.close()) };
  open.push(handle);
  return handle;
}

const reading = (i: number, extra = '') => ({ device: 'm1', ts: 1_700_000_000_000 + i, values: { v: i, ...(extra ? { pad: extra } : {}) } });
const seqs = (rows: OutboxRow[]) => rows.map((r) => JSON.parse(r.payload).seq as number);
const tmp = () => mkdtempSync(join(tmpdir(), 'outbox-'));

describe('outbox', () => {
  it('commits in groups, then keeps each upstream queue in order with the record format of the contract', () => {
    const { outbox } = openOutbox(tmp());
    for (let i = 0; i < 150; i++) outbox.add(['cloud', 'file'], 's1', reading(i));
    // 100 committed at once (group_records), 50 wait for group_wait
    expect(outbox.depth('cloud')).toBe(100);
    outbox.commit();
    expect(outbox.depth('cloud')).toBe(150);
    expect(outbox.depth('file')).toBe(150);
    const rows = outbox.read('cloud', 0, 1000);
    expect(seqs(rows)).toEqual(Array.from({ length: 150 }, (_, i) => i + 1));
    expect(JSON.parse(rows[0].payload)).toEqual({ agent: 'gw-1', stream: 's1', device: 'm1', ts: 1_700_000_000_000, epoch: outbox.epoch, seq: 1, values: { v: 0 } });
    expect(outbox.epoch).toMatch(/^[0-9a-f]{16}$/);
  });

  it('commits a group after group_wait without further records', async () => {
    const { outbox } = openOutbox(tmp());
    outbox.add(['cloud'], 's1', reading(1));
    expect(outbox.depth('cloud')).toBe(0);
    await until(() => outbox.depth('cloud') === 1, 1000, 'the group commit');
  });

  it('deletes only what was acknowledged, and keeps seq and the queue across a reopen', () => {
    const dir = tmp();
    const first = openOutbox(dir);
    for (let i = 0; i < 10; i++) first.outbox.add(['cloud'], 's1', reading(i));
    first.outbox.commit();
    const rows = first.outbox.read('cloud', 0, 4);
    first.outbox.ack('cloud', rows[0].id, rows[3].id);
    first.close();
    open.pop();

    const second = openOutbox(dir);
    expect(second.outbox.depth('cloud')).toBe(6);
    expect(seqs(second.outbox.read('cloud', 0, 100))).toEqual([5, 6, 7, 8, 9, 10]);
    second.outbox.add(['cloud'], 's1', reading(11));
    second.outbox.commit();
    expect(seqs(second.outbox.read('cloud', 0, 100)).at(-1)).toBe(11);
  });

  it('deletes acknowledged records in the next group commit: never read or counted meanwhile, not even after a crash', () => {
    const dir = tmp();
    const first = openOutbox(dir);
    const rowsInDb = () => first.db.prepare("SELECT count(*) FROM outbox WHERE upstream = 'cloud'").pluck().get();
    for (let i = 0; i < 10; i++) first.outbox.add(['cloud'], 's1', reading(i));
    first.outbox.commit();
    const rows = first.outbox.read('cloud', 0, 10);
    first.outbox.ack('cloud', rows[2].id, rows[5].id);
    first.outbox.ack('cloud', rows[0].id, rows[0].id);
    // saved as acknowledged (a row of meta); the rows themselves wait for the next group
    expect(rowsInDb()).toBe(10);
    expect(first.outbox.depth('cloud')).toBe(5);
    expect(seqs(first.outbox.read('cloud', 0, 100))).toEqual([2, 7, 8, 9, 10]);
    expect(seqs(first.outbox.read('cloud', 0, 2))).toEqual([2, 7]);
    first.outbox.add(['cloud'], 's1', reading(10));
    first.outbox.commit();
    expect(rowsInDb()).toBe(6);
    expect(seqs(first.outbox.read('cloud', 0, 100))).toEqual([2, 7, 8, 9, 10, 11]);

    // acknowledged, then the process dies before any group commit: the next opening deletes them
    const more = first.outbox.read('cloud', 0, 3);
    first.outbox.ack('cloud', more[0].id, more[2].id);
    first.db.close();
    open.pop();
    const second = openOutbox(dir);
    expect(second.outbox.depth('cloud')).toBe(3);
    expect(seqs(second.outbox.read('cloud', 0, 100))).toEqual([9, 10, 11]);
    second.outbox.commit();
    expect(second.db.prepare("SELECT count(*) FROM outbox WHERE upstream = 'cloud'").pluck().get()).toBe(3);
    // all acknowledged: nothing waits, whatever the table still holds
    const rest = second.outbox.read('cloud', 0, 100);
    second.outbox.ack('cloud', rest[0].id, rest[2].id);
    expect(second.outbox.oldestAge('cloud')).toBe(0);
    expect(second.outbox.read('cloud', 0, 100)).toEqual([]);
    expect(second.outbox.depth('cloud')).toBe(0);
  });

  it('deletes acknowledged records on their own when no group commit comes, and at close', async () => {
    const dir = tmp();
    const first = openOutbox(dir);
    const rowsInDb = () => first.db.prepare('SELECT count(*) FROM outbox').pluck().get();
    for (let i = 0; i < 10; i++) first.outbox.add(['cloud'], 's1', reading(i));
    first.outbox.commit();
    const rows = first.outbox.read('cloud', 0, 10);
    first.outbox.ack('cloud', rows[0].id, rows[4].id);
    expect(rowsInDb()).toBe(10);
    // no record follows: a timer deletes them (5 s)
    await until(() => rowsInDb() === 5, 15_000, 'the delete without a group');
    expect(first.outbox.depth('cloud')).toBe(5);
    first.outbox.ack('cloud', rows[5].id, rows[9].id);
    first.close();
    open.pop();
    const second = openOutbox(dir);
    expect(second.db.prepare('SELECT count(*) FROM outbox').pluck().get()).toBe(0);
    expect(second.db.prepare("SELECT value FROM meta WHERE key = 'acked:cloud'").pluck().get()).toBe('');
  });

  it('saves stream state in the same transaction as the records, and only then', () => {
    const dir = tmp();
    const first = openOutbox(dir);
    const scope = first.state.scope('s1/0/energy');
    scope.set('m1/p', { total: 42 });
    first.outbox.add(['cloud'], 's1', reading(1));
    // A crash before the commit loses both the record and the state change.
    first.db.close();
    open.pop();
    const second = openOutbox(dir);
    expect(second.state.scope('s1/0/energy').get('m1/p')).toBeUndefined();
    expect(second.outbox.depth('cloud')).toBe(0);
    second.state.scope('s1/0/energy').set('m1/p', { total: 43 });
    second.outbox.add(['cloud'], 's1', reading(1));
    second.outbox.commit();
    second.close();
    open.pop();
    const third = openOutbox(dir);
    expect(third.state.scope('s1/0/energy').get('m1/p')).toEqual({ total: 43 });
    expect(third.outbox.depth('cloud')).toBe(1);
  });

  /** 3,000 records of 1 KB into a 1 MB outbox under the policy: what stayed, how many were dropped. */
  function overflow(when_full: OutboxConfig['when_full']) {
    const { outbox } = openOutbox(tmp(), { max_size: 1024 * 1024, when_full });
    const pad = 'x'.repeat(1000);
    const total = 3000;
    for (let i = 0; i < total; i++) outbox.add(['cloud'], 's1', reading(i, pad));
    outbox.commit();
    const kept = seqs(outbox.read('cloud', 0, total));
    const dropped = outbox.drops.get('cloud')!.overflow;
    expect(dropped).toBeGreaterThan(0);
    expect(kept.length + dropped).toBe(total);
    return { kept, total };
  }

  it('when full, drop-oldest keeps the newest records and counts every drop', () => {
    const { kept, total } = overflow('drop-oldest');
    // the survivors are the newest, contiguous, in order
    expect(kept).toEqual(Array.from({ length: kept.length }, (_, i) => total - kept.length + i + 1));
  });

  it('when full, reject-new keeps the oldest records and counts every rejection', () => {
    const { kept } = overflow('reject-new');
    expect(kept).toEqual(Array.from({ length: kept.length }, (_, i) => i + 1));
  });

  it('drops records older than max_age and counts them', () => {
    const { outbox } = openOutbox(tmp(), { max_age: 60_000 });
    for (let i = 0; i < 5; i++) outbox.add(['cloud', 'file'], 's1', reading(i));
    outbox.commit();
    outbox.expire(Date.now() + 30_000, performance.now() + 30_000);
    expect(outbox.depth('cloud')).toBe(5);
    outbox.expire(Date.now() + 61_000, performance.now() + 61_000);
    expect(outbox.depth('cloud')).toBe(0);
    expect(outbox.drops.get('cloud')).toEqual({ overflow: 0, expired: 5, refused: 0 });
    expect(outbox.drops.get('file')).toEqual({ overflow: 0, expired: 5, refused: 0 });
  });

  it('moves an unreadable database aside and starts a fresh one', () => {
    for (const damage of ['not a database at all, just text', 'truncated']) {
      const dir = tmp();
      if (damage === 'truncated') {
        const first = openOutbox(dir);
        for (let i = 0; i < 2000; i++) first.outbox.add(['cloud'], 's1', reading(i, 'y'.repeat(200)));
        first.close();
        open.pop();
        const file = join(dir, 'edge-agent.db');
        const bytes = readFileSync(file);
        writeFileSync(file, bytes.subarray(0, Math.floor(bytes.length / 2)));
      } else {
        writeFileSync(join(dir, 'edge-agent.db'), damage.repeat(500));
      }
      const reopened = openOutbox(dir);
      expect(reopened.quarantined).toMatch(/edge-agent\.db\.corrupt-/);
      expect(existsSync(reopened.quarantined!)).toBe(true);
      expect(readdirSync(dir).filter((f) => f.startsWith('edge-agent.db.corrupt-')).length).toBeGreaterThan(0);
      reopened.outbox.add(['cloud'], 's1', reading(1));
      reopened.outbox.commit();
      expect(reopened.outbox.depth('cloud')).toBe(1);
    }
  });
});

/** An upstream whose acknowledgements the test controls: stands in for the broker, not for the forwarder under test. */
class ScriptedUpstream implements Upstream {
  readonly name = 'cloud';
  readonly window = 1;
  connected = true;
  received: number[] = [];
  failNext = 0;
  private listeners: (() => void)[] = [];
  onConnect(listener: () => void) {
    this.listeners.push(listener);
  }
  reconnect() {
    this.connected = true;
    for (const l of this.listeners) l();
  }
  async send(rows: OutboxRow[]) {
    await new Promise((r) => setTimeout(r, 1));
    if (this.failNext > 0) {
      this.failNext--;
      throw new Error('injected failure');
    }
    this.received.push(...seqs(rows));
  }
  async close() {}
}

describe('forwarder', () => {
  it('delivers everything in order, and after a failed send starts again at the oldest unacknowledged record', async () => {
    const { outbox } = openOutbox(tmp());
    const upstream = new ScriptedUpstream();
    const forwarder = new Forwarder(outbox, upstream, testLog, { batch: 50, minBackoff: 5, maxBackoff: 20 });
    outbox.onCommitted(() => forwarder.wake());
    forwarder.start();
    for (let i = 0; i < 500; i++) outbox.add(['cloud'], 's1', reading(i));
    upstream.failNext = 3;
    outbox.commit();
    await until(() => outbox.depth('cloud') === 0, 5000, 'the outbox to drain');
    await forwarder.stop();
    // Every seq arrived; the first copy of each is in order.
    const firstSeen = [...new Set(upstream.received)];
    expect(firstSeen).toEqual(Array.from({ length: 500 }, (_, i) => i + 1));
    expect(forwarder.errors).toBe(3);
  });

  it('waits while the upstream is disconnected and resumes when it connects', async () => {
    const { outbox } = openOutbox(tmp());
    const upstream = new ScriptedUpstream();
    upstream.connected = false;
    const forwarder = new Forwarder(outbox, upstream, testLog);
    outbox.onCommitted(() => forwarder.wake());
    forwarder.start();
    for (let i = 0; i < 20; i++) outbox.add(['cloud'], 's1', reading(i));
    outbox.commit();
    await new Promise((r) => setTimeout(r, 50));
    expect(upstream.received).toEqual([]);
    expect(outbox.depth('cloud')).toBe(20);
    upstream.reconnect();
    await until(() => outbox.depth('cloud') === 0, 5000, 'the outbox to drain');
    expect(upstream.received).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    await forwarder.stop();
  });
});
