import Database from 'better-sqlite3';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import { energy } from '../src/operators/energy.js';
import type { StepContext } from '../src/operators/operator.js';
import { window } from '../src/operators/window.js';
import { LatestValues } from '../src/core/latest.js';
import type { Reading } from '../src/core/reading.js';
import { StateStore } from '../src/streams/state.js';

const DAY = 86_400_000;
const dbFile = () => join(mkdtempSync(join(tmpdir(), 'state-bounds-')), 'state.db');

function logged() {
  const lines: string[] = [];
  return { lines, log: pino({ level: 'info' }, { write: (l: string) => void lines.push(l) }) };
}

/** Writes `n` keys to a scope in one commit, as the outbox does. */
function fill(store: StateStore, db: Database.Database, scope: string, n: number, value = (i: number) => ({ i, pad: 'x'.repeat(100) })) {
  const s = store.scope(scope);
  for (let i = 0; i < n; i++) s.set(`dev-${i}`, value(i));
  db.transaction(() => store.save())();
  store.saved();
}

function stepContext(store: StateStore, scope: string, now: () => number): StepContext {
  return { stream: 's', index: 0, state: store.scope(scope), now, latest: new LatestValues(), timezone: 'UTC', count: () => {}, issue: (message) => ({ message, path: [], line: 0, col: 0 }) as never };
}

describe('per-key state in bounded memory', () => {
  it('loads nothing at start, reads a key from SQLite on first use and keeps at most state_cache keys in memory', () => {
    const file = dbFile();
    const db = new Database(file);
    fill(new StateStore(db, () => {}, { cacheKeys: 100 }), db, 'st/0/change', 20_000);
    db.close();

    const reopened = new Database(file);
    const store = new StateStore(reopened, () => {}, { cacheKeys: 100 });
    const scope = store.scope('st/0/change');
    expect(scope.cache.size).toBe(0);
    expect(scope.get<{ i: number }>('dev-12345')?.i).toBe(12345);
    for (let i = 0; i < 20_000; i += 7) expect(scope.get<{ i: number }>(`dev-${i}`)?.i).toBe(i);
    expect(scope.cache.size).toBeLessThanOrEqual(100);
    // a key changed and not yet saved stays, whatever the cap; after the commit it may go
    for (let i = 0; i < 300; i++) scope.set(`dev-${i}`, { i: -i - 1 });
    expect(scope.dirty.size).toBe(300);
    reopened.transaction(() => store.save())();
    store.saved();
    expect(scope.cache.size).toBeLessThanOrEqual(100);
    expect(scope.get<{ i: number }>('dev-0')?.i).toBe(-1);
    expect(scope.get<{ i: number }>('dev-299')?.i).toBe(-300);
    // all the keys of a step, page by page, unsaved changes included
    scope.set('new', { i: 1 });
    scope.delete('dev-1');
    const keys = new Set(Array.from(scope.entries(), ([key]) => key));
    expect(keys.size).toBe(20_000);
    expect(keys.has('new') && !keys.has('dev-1')).toBe(true);
  });

  it('prunes keys unused for state_ttl, keeps those read lately, and logs what it pruned', async () => {
    const db = new Database(dbFile());
    let now = 1_000 * DAY;
    const { lines, log } = logged();
    const store = new StateStore(db, () => {}, { ttl: 7 * DAY, cacheKeys: 1000, log, now: () => now });
    fill(store, db, 'st/0/change', 500);
    now += 3 * DAY;
    // read only (a change step whose value did not change): its use is recorded with the next commit
    expect(store.scope('st/0/change').get('dev-7')).toBeDefined();
    db.transaction(() => store.save())();
    store.saved();
    now += 5 * DAY;
    expect(await store.prune()).toEqual({ pruned: 499, kept: 0 });
    expect(db.prepare('SELECT key FROM state').pluck().all()).toEqual(['dev-7']);
    expect(store.scope('st/0/change').get('dev-8')).toBeUndefined();
    expect(lines.filter((l) => l.includes('pruned 499 keys unused for 7d'))).toHaveLength(1);
  });

  it('never prunes what is still owed: an energy counter baseline or an open window; counts it and logs it once', async () => {
    const db = new Database(dbFile());
    let now = Date.UTC(2026, 0, 1);
    const { lines, log } = logged();
    const store = new StateStore(db, () => {}, { ttl: 7 * DAY, log, now: () => now });
    const meter = energy({ method: 'meter-reading', point: 'kwh', window: 30 * DAY, output: 'e' }, stepContext(store, 'st/0/energy', () => now));
    const avg = window({ size: 30 * DAY, functions: { p: ['avg'] } }, stepContext(store, 'st/1/window', () => now));
    const out: Reading[] = [];
    const emit = (r: Reading) => void out.push(r);
    meter.process({ device: 'meter-1', ts: now, values: { kwh: 1000 } }, emit);
    avg.process({ device: 'meter-1', ts: now, values: { p: 5 } }, emit);
    store.scope('st/2/change').set('meter-1', 1);
    db.transaction(() => store.save())();
    store.saved();

    now += 10 * DAY;
    expect(await store.prune()).toEqual({ pruned: 1, kept: 2 });
    now += 10 * DAY;
    expect(await store.prune()).toEqual({ pruned: 0, kept: 2 });
    expect(lines.filter((l) => l.includes('are kept'))).toHaveLength(1);

    // the meter comes back after 20 days: the energy of the silence is counted, not lost
    meter.process({ device: 'meter-1', ts: now, values: { kwh: 1480 } }, emit);
    meter.tick!(now + 90 * DAY, emit);
    expect(out.filter((r) => 'e' in r.values).reduce((sum, r) => sum + (r.values.e as number), 0)).toBeCloseTo(480);
  });

  it('with the outbox: state is saved in the group commit and read back lazily after a reopen', async () => {
    const { Outbox } = await import('../src/outbox/outbox.js');
    const file = dbFile();
    const config = { max_size: 64 * 1024 * 1024, max_age: DAY, when_full: 'drop-oldest' as const, durability: 'normal' as const, group_records: 1000, group_wait: 10 };
    const db = new Database(file);
    let outbox: InstanceType<typeof Outbox> | undefined;
    const store = new StateStore(db, () => outbox?.scheduleCommit(), { cacheKeys: 100 });
    outbox = new Outbox(db, config, 'gw', store, pino({ level: 'silent' }));
    store.scope('s/0/x').set('k', { n: 1 });
    outbox.add(['up'], 's', { device: 'd', ts: 1, values: { n: 1 } });
    outbox.commit();
    db.close();
    const again = new StateStore(new Database(file));
    expect(again.scope('s/0/x').get('k')).toEqual({ n: 1 });
  });
});

describe('latest values in bounded memory', () => {
  it('keeps at most max_latest_devices devices, forgets the least recently updated, counts it and logs once', () => {
    const { lines, log } = logged();
    const latest = new LatestValues(100, log);
    for (let i = 0; i < 10_000; i++) latest.update({ device: `plug-${i}`, ts: i, values: { p: i } });
    expect(latest.size).toBe(100);
    expect(latest.evicted).toBe(9_900);
    expect(latest.get('plug-9999', 'p')).toBe(9999);
    expect(latest.get('plug-0', 'p')).toBeUndefined();
    expect(lines.filter((l) => l.includes('max_latest_devices'))).toHaveLength(1);
  });
});

describe('config of the bounds', () => {
  it('reads agent.state_ttl, state_cache, max_latest_devices and an MQTT device\'s max_devices, with their defaults', () => {
    const base = 'agent: { id: gw }\ndevices:\n  - { id: "p-{1}", protocol: mqtt, broker: "mqtt://127.0.0.1:1", points: [{ name: v, topic: "a/+" }] }\n';
    const defaults = parseConfig(base, 'test.yaml', {}).config;
    expect([defaults.agent.state_ttl, defaults.agent.state_cache, defaults.agent.max_latest_devices]).toEqual([7 * DAY, 10_000, 10_000]);
    const set = parseConfig(base.replace('{ id: gw }', '{ id: gw, state_ttl: 1d, state_cache: 500, max_latest_devices: 50 }').replace('protocol: mqtt,', 'protocol: mqtt, max_devices: 20,'), 'test.yaml', {}).config;
    expect([set.agent.state_ttl, set.agent.state_cache, set.agent.max_latest_devices, set.devices[0].max_devices]).toEqual([DAY, 500, 50, 20]);
  });
});
