import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { StorageUnavailableError } from '../src/outbox/database.js';
import { afterEach, describe, expect, it } from 'vitest';
import type { OutboxConfig } from '../src/config/types.js';
import { AgentProcess } from './support/agent-process.js';
import { freePort, until } from './support/ports.js';
import { capturingLog, fillUp, mountTmpfs, openOutbox, seqOf } from './support/storage.js';

/**
 * A real full disk: a 2 MB tmpfs (mounting needs root, which CI has: without it these fail).
 * The outbox's own cap is 1 GB, so the disk fills long before it: SQLITE_FULL comes from the
 * file system, in the group commit, in the deletes of drop-oldest, in acks and at open.
 */
const cleanups: (() => void)[] = [];
afterEach(() => {
  while (cleanups.length) cleanups.pop()!();
});

function disk(size = '2m') {
  const mount = mountTmpfs(size);
  cleanups.push(mount.unmount);
  return mount.dir;
}

const pad = 'z'.repeat(500);
const reading = (i: number) => ({ device: 'm', ts: i, values: { pad, i } });
const POLICIES: OutboxConfig['when_full'][] = ['drop-oldest', 'reject-new'];
const fullLines = (lines: { msg: string }[]) => lines.filter((l) => / is full /.test(l.msg)).length;

describe('outbox on a full disk', () => {
  it('keeps the WAL within a quarter of the free space, not 4 MB, on a small disk', () => {
    const dir = disk();
    const { log } = capturingLog();
    const store = openOutbox(join(dir, 'data'), log);
    cleanups.push(store.close);
    const limit = store.db.pragma('journal_size_limit', { simple: true }) as number;
    expect(limit).toBeLessThanOrEqual(512 * 1024);
    console.log(`full disk: WAL ceiling ${limit} bytes on a 2 MB tmpfs (cap 1 GB)`);
    for (let i = 0; i < 1500; i++) store.outbox.add(['cloud'], 's', reading(i));
    store.outbox.commit();
    // the WAL is checkpointed near that ceiling (one group of 50 records past it at most)
    expect(statSync(join(dir, 'data', 'edge-agent.db-wal')).size).toBeLessThan(limit + 200 * 1024);
  });

  for (const policy of POLICIES) {
    it(`${policy}: filling during ingest drops exactly what it counts, never throws, logs once, and writes again when space returns`, () => {
      const dir = disk();
      const filler = join(dir, 'filler');
      writeFileSync(filler, Buffer.alloc(1024 * 1024));
      const { log, lines } = capturingLog();
      const store = openOutbox(join(dir, 'data'), log, { when_full: policy });
      cleanups.push(store.close);
      let added = 0;
      while (!store.outbox.drops.get('cloud')?.overflow && added < 20_000) store.outbox.add(['cloud'], 's', reading(added++));
      // keep going well past the first overflow: every group takes the when_full path
      for (let i = 0; i < 2000; i++) store.outbox.add(['cloud'], 's', reading(added++));
      store.outbox.commit();
      const dropped = store.outbox.drops.get('cloud')!.overflow;
      const kept = store.outbox.read('cloud', 0, added).map((r) => seqOf(r.payload));
      expect(dropped).toBeGreaterThan(0);
      expect(kept.length + dropped).toBe(added);
      expect(store.outbox.depth('cloud')).toBe(kept.length);
      expect(kept).toEqual([...kept].sort((a, b) => a - b));
      if (policy === 'reject-new') expect(kept).toEqual(Array.from({ length: kept.length }, (_, i) => i + 1));
      else expect(kept.at(-1)).toBe(added); // the newest is kept
      expect(fullLines(lines)).toBe(1);
      expect(store.outbox.drops.get('cloud')!.refused).toBe(0);

      // 1 MB freed: the next 1,000 records (about 600 kB) all fit, none dropped
      rmSync(filler);
      const from = added;
      for (let i = 0; i < 1000; i++) store.outbox.add(['cloud'], 's', reading(added++));
      store.outbox.commit();
      expect(store.outbox.read('cloud', 0, added).map((r) => seqOf(r.payload)).slice(-1000)).toEqual(Array.from({ length: 1000 }, (_, i) => from + i + 1));
      expect(store.outbox.drops.get('cloud')!.overflow).toBe(dropped);
      expect(store.outbox.depth('cloud')).toBe(kept.length + 1000);
      expect(lines.filter((l) => /writing again/.test(l.msg))).toHaveLength(1);
      expect(store.db.pragma('integrity_check', { simple: true })).toBe('ok');
    });

    it(`${policy}: a disk full to the last byte (even the deletes of drop-oldest fail), then a restart on it, then a drain: never throws, nothing committed lost`, () => {
      const dir = disk();
      const data = join(dir, 'data');
      const { log, lines } = capturingLog();
      let store = openOutbox(data, log, { when_full: policy });
      for (let i = 0; i < 1000; i++) store.outbox.add(['cloud'], 's', reading(i));
      store.outbox.commit();
      const committed = store.outbox.read('cloud', 0, 10_000).map((r) => seqOf(r.payload));
      expect(committed).toHaveLength(1000);

      // during the drop: the disk fills to the last byte under the open database
      const filler = join(dir, 'filler');
      fillUp(filler);
      let added = 1000;
      for (let i = 0; i < 500; i++) store.outbox.add(['cloud'], 's', reading(added++));
      store.outbox.commit();
      const afterFull = store.outbox.read('cloud', 0, 10_000).map((r) => seqOf(r.payload));
      const { overflow } = store.outbox.drops.get('cloud')!;
      // drop-oldest may have made room by deleting old records; whatever is gone is counted
      expect(afterFull.length + overflow).toBe(added);
      store.close();

      // a restart on the full disk (the crash loop of the issue): open, ingest, commit
      store = openOutbox(data, log, { when_full: policy });
      cleanups.push(() => store.close());
      const before = store.outbox.read('cloud', 0, 10_000).map((r) => seqOf(r.payload));
      expect(before).toEqual(afterFull);
      for (let i = 0; i < 500; i++) store.outbox.add(['cloud'], 's', reading(added++));
      store.outbox.commit();
      const onDisk = store.outbox.read('cloud', 0, 10_000).map((r) => seqOf(r.payload));
      expect(onDisk.length + store.outbox.drops.get('cloud')!.overflow).toBe(before.length + 500);

      // the drain on the full disk: acks may not fit; they never throw, and what is not deleted stays
      const delivered = new Set<number>();
      for (let round = 0; round < 3; round++) {
        const rows = store.outbox.read('cloud', 0, 10_000);
        for (const r of rows) delivered.add(seqOf(r.payload));
        for (let i = 0; i < rows.length; i += 100) {
          const part = rows.slice(i, i + 100);
          store.outbox.ack('cloud', part[0].id, part.at(-1)!.id);
        }
      }
      expect([...delivered].sort((a, b) => a - b)).toEqual(onDisk);
      // a refusal for good and an expiry on the full disk: no throw either; what cannot be moved stays
      const first = store.outbox.read('cloud', 0, 1);
      if (first.length) store.outbox.deadLetter('cloud', [first[0].id], 'refused');
      store.outbox.expire(Date.now() + 30 * 86_400_000, performance.now() + 30 * 86_400_000);
      const remaining = store.outbox.read('cloud', 0, 10_000).length;
      expect(store.outbox.depth('cloud')).toBe(remaining);

      // space returns: writes resume by themselves, what is left drains
      rmSync(filler);
      store.outbox.add(['cloud'], 's', reading(added++));
      store.outbox.commit();
      const rest = store.outbox.read('cloud', 0, 10_000);
      expect(seqOf(rest.at(-1)!.payload)).toBe(added);
      expect(rest.length).toBe(remaining + 1);
      store.outbox.ack('cloud', rest[0].id, rest.at(-1)!.id);
      expect(store.outbox.depth('cloud')).toBe(0);
      expect(store.outbox.read('cloud', 0, 10)).toHaveLength(0);
      expect(store.db.pragma('integrity_check', { simple: true })).toBe('ok');
      expect(lines.filter((l) => /storage fails/.test(l.msg))).toHaveLength(0);
      expect(existsSync(join(data, 'edge-agent.db'))).toBe(true);
    });
  }

  it('a new database on a disk full to the last byte cannot be created: StorageUnavailableError (the agent waits), nothing quarantined', () => {
    const dir = disk();
    fillUp(join(dir, 'filler'));
    const { log } = capturingLog();
    expect(() => openOutbox(join(dir, 'data'), log)).toThrow(StorageUnavailableError);
    expect(readdirSync(dir).filter((f) => f !== 'filler' && f !== 'data')).toEqual([]);
    expect(existsSync(join(dir, 'data')) ? readdirSync(join(dir, 'data')).filter((f) => f.includes('corrupt')) : []).toEqual([]);
  });
});

describe('a real agent on a full disk', () => {
  it('drop-oldest on a 2 MB tmpfs with the broker down: runs on, logs once, and starts again on the full disk', async () => {
    const dir = disk();
    const work = mkdtempSync(join(tmpdir(), 'outbox-full-agent-'));
    const downBroker = await freePort();
    const config = join(work, 'agent.yaml');
    writeFileSync(
      config,
      `agent: { id: gw, data_dir: ${dir}/data, http: off }
devices:
  - id: m
    protocol: simulator
    poll: 2ms
    points: [{ name: a, signal: random }, { name: b, signal: random }, { name: c, signal: random }, { name: d, signal: random }]
streams: [{ name: s, from: { device: m }, to: [cloud] }]
upstream: [{ name: cloud, type: mqtt, url: "mqtt://127.0.0.1:${downBroker}", topic: "t/{stream}" }]
outbox: { when_full: drop-oldest }
`,
    );
    const first = AgentProcess.start(config);
    cleanups.push(() => first.kill('SIGKILL'));
    await first.waitForLog(/agent gw running/);
    await until(() => first.exitCode !== null || first.log.some((l) => / is full /.test(l)), 60_000, 'the disk to fill');
    await new Promise((r) => setTimeout(r, 3000));
    expect(first.exitCode, first.log.slice(-3).join('\n')).toBe(null);
    expect(first.log.filter((l) => / is full /.test(l))).toHaveLength(1);
    first.kill('SIGKILL');
    await first.exit();

    // the restart on the full disk (it died here at every restart)
    const second = AgentProcess.start(config);
    cleanups.push(() => second.kill('SIGKILL'));
    await until(() => second.exitCode !== null || second.log.some((l) => / is full /.test(l)), 60_000, 'the full disk');
    await new Promise((r) => setTimeout(r, 3000));
    expect(second.exitCode, second.log.slice(-3).join('\n')).toBe(null);
    expect(second.log.some((l) => /agent gw running/.test(l))).toBe(true);
    second.kill('SIGTERM');
    await second.exit();
    expect(second.exitCode).toBe(0);
  }, 150_000);
});
