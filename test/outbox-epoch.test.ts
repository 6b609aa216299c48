import { copyFileSync, existsSync, mkdtempSync, openSync, readFileSync, closeSync, writeSync, truncateSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AgentProcess } from './support/agent-process.js';
import { until } from './support/ports.js';
import { capturingLog, openOutbox } from './support/storage.js';

/**
 * Dedupe keys that never lie: every record carries (agent, epoch, seq); the epoch is new at
 * each opening of the outbox, so no (agent, epoch, seq) names two different records, whatever
 * happens to the database between runs (a lost WAL tail, a quarantine, a new data_dir, a
 * restored backup). A lost tail is detected at start from the seq side file.
 */
const open: { close(): void }[] = [];
afterEach(() => {
  while (open.length) open.pop()!.close();
});

const tmp = () => mkdtempSync(join(tmpdir(), 'outbox-epoch-'));
const reading = (i: number) => ({ device: 'm', ts: i, values: { i } });
type Rec = { agent: string; epoch: string; seq: number; values: { i: number } };

function store(dir: string) {
  const s = openOutbox(dir, capturingLog().log);
  open.push(s);
  return s;
}

function addCommitted(s: ReturnType<typeof store>, from: number, n: number): void {
  for (let i = from; i < from + n; i++) s.outbox.add(['cloud'], 's', reading(i));
  s.outbox.commit();
}

const records = (s: ReturnType<typeof store>): Rec[] => s.outbox.read('cloud', 0, 100_000).map((r) => JSON.parse(r.payload));

/** Every record ever seen downstream, by key: a key seen twice must carry the same record. */
function expectKeysNeverLie(all: Rec[]): void {
  const byKey = new Map<string, number>();
  for (const r of all) {
    const key = `${r.agent}/${r.epoch}/${r.seq}`;
    const seen = byKey.get(key);
    if (seen !== undefined) expect(seen, `key ${key}`).toBe(r.values.i);
    byKey.set(key, r.values.i);
  }
}

/** The files a crash (SIGKILL, power cut) would leave, copied while the database is open. */
function crashImage(from: string): string {
  const to = tmp();
  for (const f of ['edge-agent.db', 'edge-agent.db-wal', 'edge-agent.seq']) if (existsSync(join(from, f))) copyFileSync(join(from, f), join(to, f));
  return to;
}

describe('outbox epoch and lost tails', () => {
  it('a new epoch at each opening, seq going on from the last', () => {
    const dir = tmp();
    const first = store(dir);
    addCommitted(first, 0, 10);
    const before = records(first);
    first.close();
    open.pop();
    const second = store(dir);
    addCommitted(second, 10, 10);
    const after = records(second);
    expect(second.outbox.loss).toBeUndefined();
    expect(new Set(after.slice(0, 10).map((r) => r.epoch))).toEqual(new Set([before[0].epoch]));
    expect(after[10].epoch).not.toBe(before[0].epoch);
    expect(after.map((r) => r.seq)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
  });

  for (const damage of ['truncated', 'corrupt header'] as const) {
    it(`a WAL ${damage} between runs: the loss is reported with the seqs, and no key names two records`, () => {
      const dir = tmp();
      const s = store(dir);
      addCommitted(s, 0, 100);
      const crashed = crashImage(dir); // the WAL holds the records: no checkpoint yet
      expect(statSync(join(crashed, 'edge-agent.db-wal')).size).toBeGreaterThan(0);
      const delivered = records(s);
      const wal = join(crashed, 'edge-agent.db-wal');
      if (damage === 'truncated') truncateSync(wal, 0);
      else {
        const fd = openSync(wal, 'r+');
        writeSync(fd, Buffer.alloc(32, 0xa5), 0, 32, 0);
        closeSync(fd);
      }
      const again = store(crashed);
      expect(again.outbox.loss).toEqual({ epoch: delivered[0].epoch, savedSeq: 0, seenSeq: 100 });
      addCommitted(again, 1000, 100);
      const later = records(again);
      expect(later.every((r) => r.epoch === again.outbox.epoch && r.seq > 100)).toBe(true);
      expectKeysNeverLie([...delivered, ...later]);
    });
  }

  it('a quarantined database: seq goes on past the one it held, under a new epoch', () => {
    const dir = tmp();
    const s = store(dir);
    addCommitted(s, 0, 50);
    const delivered = records(s);
    s.close();
    open.pop();
    writeFileSync(join(dir, 'edge-agent.db'), 'not a database at all, just text, long enough to be read as a header by SQLite......');
    const again = store(dir);
    expect(again.quarantined).toBeDefined();
    expect(again.outbox.loss).toMatchObject({ savedSeq: 0, seenSeq: 50 });
    addCommitted(again, 1000, 50);
    const later = records(again);
    expect(later[0].seq).toBe(51);
    expectKeysNeverLie([...delivered, ...later]);
  });

  it('a new data_dir: seq starts at 1 again, but under a new epoch', () => {
    const first = store(tmp());
    addCommitted(first, 0, 50);
    const second = store(tmp());
    addCommitted(second, 1000, 50);
    expect(records(second)[0].seq).toBe(1);
    expectKeysNeverLie([...records(first), ...records(second)]);
  });

  it('a database restored from a backup: the lost seqs are reported; records of the backup keep their keys, new ones get new keys', () => {
    const dir = tmp();
    const s = store(dir);
    addCommitted(s, 0, 100);
    const backupDelivered = records(s);
    s.close();
    open.pop();
    const backup = join(tmp(), 'backup.db');
    copyFileSync(join(dir, 'edge-agent.db'), backup);
    const s2 = store(dir);
    addCommitted(s2, 100, 200);
    const delivered = records(s2);
    s2.close();
    open.pop();
    copyFileSync(backup, join(dir, 'edge-agent.db'));
    const restored = store(dir);
    expect(restored.outbox.loss).toMatchObject({ savedSeq: 100, seenSeq: 300 });
    expect(records(restored)).toEqual(backupDelivered);
    addCommitted(restored, 5000, 100);
    expect(records(restored).at(-1)!.seq).toBe(400);
    expectKeysNeverLie([...delivered, ...records(restored)]);
  });

  it('the agent sends OUTBOX_LOSS upstream after a SIGKILL and a WAL lost before the restart', async () => {
    const dir = tmp();
    const out = join(dir, 'out.jsonl');
    const config = join(dir, 'agent.yaml');
    writeFileSync(
      config,
      `agent: { id: gw, data_dir: ${dir}/data, http: off }
devices:
  - { id: m, protocol: simulator, poll: 20ms, points: [{ name: x, signal: counter, rate: 1 }] }
streams:
  - { name: s, from: { device: m, points: [x] }, to: [file] }
upstream: [{ name: file, type: file, path: ${out} }]
`,
    );
    const first = AgentProcess.start(config);
    await first.waitForLog(/agent gw running/);
    await until(() => existsSync(out) && readFileSync(out, 'utf8').split('\n').length > 50, 20_000, '50 records');
    first.kill('SIGKILL');
    await first.exit();
    truncateSync(join(dir, 'data', 'edge-agent.db-wal'), 0);
    const lines = () => readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const before = lines();

    const second = AgentProcess.start(config);
    await second.waitForLog(/agent gw running/);
    await until(() => lines().some((r) => r.event?.code === 'OUTBOX_LOSS'), 20_000, 'the OUTBOX_LOSS event');
    await new Promise((r) => setTimeout(r, 500));
    second.kill('SIGTERM');
    await second.exit();
    const loss = lines().find((r) => r.event?.code === 'OUTBOX_LOSS');
    expect(loss.values.last_seq_seen).toBeGreaterThan(loss.values.last_seq_saved);
    expect(loss.values.lost_epoch).toBe(before.at(-1).epoch);
    expect(second.log.filter((l) => /OUTBOX_LOSS|records are lost/.test(l)).length).toBe(1);
    expectKeysNeverLie(lines().filter((r) => r.values?.x !== undefined).map((r) => ({ ...r, values: { i: r.values.x } })));
  }, 60_000);
});
