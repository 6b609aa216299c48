import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase, StorageUnavailableError } from '../src/outbox/database.js';
import { AgentProcess } from './support/agent-process.js';
import { until } from './support/ports.js';
import { capturingLog, mountExt4, openOutbox, seqOf, sh } from './support/storage.js';

/**
 * Storage that fails without being full: immutable files (EPERM), an ext4 that aborts and
 * goes read-only (EROFS), a real I/O error (EIO: a loop device whose backing tmpfs is full).
 * Only SQLITE_FULL takes when_full; these keep every committed record, refuse new ones
 * (counted, logged once per episode with the path and the OS's words) and never throw.
 * They need root (mounts, chattr); CI runs as root, so without it they fail.
 */
const cleanups: (() => void)[] = [];
afterEach(() => {
  while (cleanups.length) cleanups.pop()!();
});

const reading = (i: number) => ({ device: 'm', ts: i, values: { i, pad: 'p'.repeat(200) } });
const dbFiles = (dir: string) => readdirSync(dir).filter((f) => f.startsWith('edge-agent.')).map((f) => join(dir, f));
const faultLines = (lines: { msg: string; [k: string]: unknown }[]) => lines.filter((l) => /the storage fails/.test(l.msg));

/** A store with 1,000 committed records (the first 100 acknowledged), on `dir`. */
function storeWithRecords(dir: string, log: ReturnType<typeof capturingLog>['log']) {
  const store = openOutbox(dir, log, { when_full: 'drop-oldest' });
  for (let i = 0; i < 1000; i++) store.outbox.add(['cloud'], 's', reading(i));
  store.outbox.commit();
  const rows = store.outbox.read('cloud', 0, 100);
  store.outbox.ack('cloud', rows[0].id, rows[99].id);
  return store;
}

/** While the storage fails: every call returns, nothing committed is lost, new records are refused. */
function exerciseWhileFailing(store: ReturnType<typeof storeWithRecords>) {
  const held = store.outbox.read('cloud', 0, 10_000).map((r) => seqOf(r.payload));
  expect(held).toEqual(Array.from({ length: 900 }, (_, i) => i + 101));
  for (let i = 0; i < 500; i++) store.outbox.add(['cloud'], 's', reading(1000 + i));
  store.outbox.commit();
  const rows = store.outbox.read('cloud', 0, 10_000);
  store.outbox.ack('cloud', rows[0].id, rows[99].id);
  store.outbox.ackIds('cloud', [rows[100].id, rows[101].id]);
  store.outbox.deadLetter('cloud', [rows[102].id], 'refused');
  store.outbox.expire(Date.now() + 30 * 86_400_000, performance.now() + 30 * 86_400_000);
  store.outbox.oldestAge('cloud');
  // what the storage still reads: every committed record, none acknowledged or expired meanwhile
  const after = store.outbox.read('cloud', 0, 10_000);
  if (after.length > 0) expect(after.map((r) => seqOf(r.payload))).toEqual(held);
  expect(store.outbox.drops.get('cloud')).toEqual({ overflow: 0, expired: 0, refused: 500 });
  expect(store.outbox.depth('cloud')).toBe(900);
  return held;
}

describe('outbox on failing storage', () => {
  it('immutable database files (EPERM): refused and counted, committed kept, logged once with the OS words, resumes when writable', () => {
    const fs = mountExt4();
    cleanups.push(fs.unmount);
    const data = join(fs.dir, 'data');
    const { log, lines } = capturingLog();
    const store = storeWithRecords(data, log);
    cleanups.push(() => {
      sh('chattr', '-i', ...dbFiles(data));
      store.close();
    });
    sh('chattr', '+i', ...dbFiles(data));
    exerciseWhileFailing(store);
    expect(lines.filter((l) => / is full /.test(l.msg))).toHaveLength(0);
    const fault = faultLines(lines);
    expect(fault).toHaveLength(1);
    expect(fault[0].msg).toContain(join(data, 'edge-agent.db'));
    expect(fault[0].msg).toMatch(/EPERM: operation not permitted/);

    sh('chattr', '-i', ...dbFiles(data));
    for (let i = 0; i < 10; i++) store.outbox.add(['cloud'], 's', reading(2000 + i));
    store.outbox.commit();
    const seqs = store.outbox.read('cloud', 0, 10_000).map((r) => seqOf(r.payload));
    expect(seqs.slice(0, 900)).toEqual(Array.from({ length: 900 }, (_, i) => i + 101));
    expect(seqs).toHaveLength(910);
    expect(lines.filter((l) => /writing again/.test(l.msg))).toHaveLength(1);
    const rows = store.outbox.read('cloud', 0, 10_000);
    store.outbox.ack('cloud', rows[0].id, rows.at(-1)!.id);
    expect(store.outbox.depth('cloud')).toBe(0);
    expect(faultLines(lines)).toHaveLength(1);
  });

  it('an ext4 that aborts and turns read-only under the outbox (EROFS): never throws, committed kept; a restart on it is not quarantined', () => {
    const fs = mountExt4();
    cleanups.push(fs.unmount);
    const data = join(fs.dir, 'data');
    const { log, lines } = capturingLog();
    const store = storeWithRecords(data, log);
    fs.remount('abort');
    exerciseWhileFailing(store);
    const fault = faultLines(lines);
    expect(fault).toHaveLength(1);
    expect(fault[0].msg).toMatch(/EROFS: read-only file system/);

    // a restart on the read-only file system: the database is sound, so it is left alone
    store.db.close();
    expect(() => openDatabase(data, { durability: 'normal', maxSize: 1024 ** 3 }, log)).toThrow(StorageUnavailableError);
    expect(readdirSync(data).filter((f) => f.includes('corrupt'))).toEqual([]);
  });

  it('a real I/O error (EIO: the loop device behind the ext4 runs out of backing store): never throws, committed kept, logged once', () => {
    const fs = mountExt4({ backingSize: '3m' });
    cleanups.push(fs.unmount);
    const data = join(fs.dir, 'data');
    const { log, lines } = capturingLog();
    const store = openOutbox(data, log, { durability: 'full', when_full: 'drop-oldest' });
    cleanups.push(() => store.db.close());
    // each commit is fsynced: the first that meets the full backing store fails, in the loop device
    const committed: number[] = [];
    let i = 0;
    while (!store.outbox.drops.get('cloud')?.refused && i < 40_000) {
      for (let k = 0; k < 50; k++) store.outbox.add(['cloud'], 's', reading(i++));
      store.outbox.commit();
      if (!store.outbox.drops.get('cloud')?.refused) committed.push(...Array.from({ length: 50 }, (_, k) => i - 50 + k + 1));
    }
    const refused = store.outbox.drops.get('cloud')!.refused;
    expect(refused).toBe(50);
    for (let k = 0; k < 200; k++) store.outbox.add(['cloud'], 's', reading(i++));
    store.outbox.commit();
    const rows = store.outbox.read('cloud', 0, 100_000);
    store.outbox.ack('cloud', rows[0].id, rows[99].id);
    expect(store.outbox.drops.get('cloud')).toEqual({ overflow: 0, expired: 0, refused: 250 });
    // every record whose commit returned is still there (none dropped as "full")
    expect(store.outbox.read('cloud', 0, 100_000).map((r) => seqOf(r.payload))).toEqual(committed);
    expect(lines.filter((l) => / is full /.test(l.msg))).toHaveLength(0);
    const fault = faultLines(lines);
    expect(fault).toHaveLength(1);
    expect(fault[0].msg).toMatch(/disk I\/O error|Input\/output error|No space left/);
    console.log(`EIO: ${committed.length} committed records kept, ${store.outbox.drops.get('cloud')!.refused} refused; logged: ${fault[0].err}`);
    expect(fault[0].msg).toContain(data);
  });

  it('the disk vanishes under the outbox (backing image truncated, caches dropped): reads fail with EIO, nothing throws, nothing counted as dropped', () => {
    const fs = mountExt4({ backingSize: '80m' });
    cleanups.push(fs.unmount);
    const data = join(fs.dir, 'data');
    const { log, lines } = capturingLog();
    const store = storeWithRecords(data, log);
    cleanups.push(() => store.db.close());
    // a small SQLite page cache, so that reads reach the file system
    store.db.pragma('cache_size = 1');
    sh('sync');
    sh('truncate', '-s', '0', join(fs.backing, 'image'));
    for (const file of dbFiles(data)) sh('dd', `if=${file}`, 'iflag=nocache', 'count=0', 'status=none');
    expect(store.outbox.read('cloud', 0, 10_000)).toEqual([]);
    expect(store.outbox.failing).toBe(true);
    store.outbox.ack('cloud', 1, 1000);
    for (let i = 0; i < 100; i++) store.outbox.add(['cloud'], 's', reading(5000 + i));
    store.outbox.commit();
    store.outbox.expire(Date.now() + 30 * 86_400_000, performance.now() + 30 * 86_400_000);
    store.outbox.oldestAge('cloud');
    expect(store.outbox.depth('cloud')).toBe(900);
    expect(store.outbox.drops.get('cloud')).toMatchObject({ overflow: 0, expired: 0 });
    const fault = faultLines(lines);
    expect(fault).toHaveLength(1);
    expect(fault[0].msg).toMatch(/EIO|i\/o error|I\/O error/);
    console.log(`vanished disk: logged once: ${fault[0].err}`);
  });

  it('an agent whose database cannot be opened for writing at start waits (no crash, nothing sent), then delivers what it held, once', async () => {
    const fs = mountExt4();
    cleanups.push(fs.unmount);
    const data = join(fs.dir, 'data');
    const dir = mkdtempSync(join(tmpdir(), 'outbox-readonly-agent-'));
    const out = join(dir, 'out.jsonl');
    // 300 records held for the file upstream by a previous run
    const { log } = capturingLog();
    const before = openOutbox(data, log);
    for (let i = 0; i < 300; i++) before.outbox.add(['file'], 's', reading(i));
    before.close();
    sh('chattr', '+i', ...dbFiles(data));
    cleanups.push(() => sh('chattr', '-i', ...dbFiles(data)));

    const config = join(dir, 'agent.yaml');
    writeFileSync(
      config,
      `agent: { id: gw, data_dir: ${data}, http: off }
devices:
  - { id: m, protocol: simulator, poll: 100ms, points: [{ name: x, signal: counter, rate: 1 }] }
streams:
  - { name: s, from: { device: m, points: [x] }, to: [file] }
upstream: [{ name: file, type: file, path: ${out} }]
`,
    );
    const agent = AgentProcess.start(config);
    cleanups.push(() => agent.kill('SIGKILL'));
    await agent.waitForLog(/cannot be opened for writing/);
    await new Promise((r) => setTimeout(r, 3000));
    expect(agent.exitCode).toBe(null);
    expect(existsSync(out) ? readFileSync(out, 'utf8') : '').toBe('');
    expect(agent.log.filter((l) => /cannot be opened for writing/.test(l))).toHaveLength(1);
    expect(readdirSync(data).filter((f) => f.includes('corrupt'))).toEqual([]);

    sh('chattr', '-i', ...dbFiles(data));
    await agent.waitForLog(/outbox database opened after/, 40_000);
    await until(() => existsSync(out) && readFileSync(out, 'utf8').split('\n').filter((l) => JSON.parse(l || '{}').stream === 's').length > 3, 20_000, 'live records after the held ones');
    agent.kill('SIGTERM');
    await agent.exit();
    const records = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const held = records.filter((r) => r.seq <= 300).map((r) => r.seq);
    expect(held).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));

    // stopped (systemctl stop) while it waits: it exits at once, cleanly
    sh('chattr', '+i', ...dbFiles(data));
    const waiting = AgentProcess.start(config);
    cleanups.push(() => waiting.kill('SIGKILL'));
    await waiting.waitForLog(/cannot be opened for writing/);
    waiting.kill('SIGTERM');
    expect(await waiting.exit()).toBeLessThan(5000);
    expect(waiting.exitCode).toBe(0);
  }, 90_000);
});
