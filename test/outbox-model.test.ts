import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { performance } from 'node:perf_hooks';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { OutboxConfig } from '../src/config/types.js';
import { openDatabase } from '../src/outbox/database.js';
import { Outbox } from '../src/outbox/outbox.js';
import { StateStore } from '../src/streams/state.js';
import { testLog } from './support/log.js';

/**
 * Model-based test of the outbox: random sequences of enqueue, commit, send-and-ack, send
 * without ack (a nack: the records are sent again later), a refusal for good (dead letter),
 * crash (close without commit), reopen and expiry, each step checked against a plain
 * in-memory model; and random overflows of a small cap under either when_full policy. 10,000 sequences in
 * the suite; FAULTS_LONG=1 runs 100,000.
 */
const UPSTREAMS = ['a', 'b'] as const;
type Up = (typeof UPSTREAMS)[number];

type Action =
  | { kind: 'add'; to: Up[] }
  | { kind: 'commit' }
  | { kind: 'ack'; up: Up; n: number }
  | { kind: 'nack'; up: Up; n: number }
  | { kind: 'reject'; up: Up; n: number }
  | { kind: 'crash' }
  | { kind: 'reopen' }
  | { kind: 'expire' };

const action: fc.Arbitrary<Action> = fc.oneof(
  { weight: 5, arbitrary: fc.subarray([...UPSTREAMS], { minLength: 1 }).map((to) => ({ kind: 'add' as const, to })) },
  { weight: 2, arbitrary: fc.constant({ kind: 'commit' as const }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('ack' as const), up: fc.constantFrom(...UPSTREAMS), n: fc.integer({ min: 1, max: 4 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('nack' as const), up: fc.constantFrom(...UPSTREAMS), n: fc.integer({ min: 1, max: 4 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('reject' as const), up: fc.constantFrom(...UPSTREAMS), n: fc.integer({ min: 1, max: 3 }) }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'crash' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'reopen' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'expire' as const }) },
);

const CONFIG: OutboxConfig = { max_size: 64 * 1024 ** 2, max_age: 60_000, when_full: 'drop-oldest', durability: 'normal', group_records: 1_000_000, group_wait: 1_000_000 };
const seqOf = (payload: string) => JSON.parse(payload).seq as number;

function open(dir: string) {
  const { db } = openDatabase(dir, { durability: 'normal', maxSize: CONFIG.max_size }, testLog);
  const state = new StateStore(db);
  return { db, outbox: new Outbox(db, CONFIG, 'gw', state, testLog) };
}

function runSequence(actions: Action[]) {
  const dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'outbox-model-'));
  let real: ReturnType<typeof open> | undefined = open(dir);
  // the model: what is committed per upstream, what waits in the open group, the seqs
  const model = {
    queue: { a: [] as number[], b: [] as number[] },
    dead: { a: [] as number[], b: [] as number[] },
    pending: [] as { seq: number; to: Up[] }[],
    committedSeq: 0,
    nextSeq: 1,
    expired: { a: 0, b: 0 },
  };
  const delivered = { a: [] as number[], b: [] as number[] };
  // every record ever handed out (committed or lost in a crash), by (epoch, seq): its own number
  const byKey = new Map<string, number>();
  let added = 0;
  const keyOf = (payload: string) => {
    const r = JSON.parse(payload);
    return { key: `${r.epoch}/${r.seq}`, n: r.values.n as number };
  };
  try {
    for (const step of actions) {
      if (!real && step.kind !== 'reopen') continue;
      switch (step.kind) {
        case 'add':
          real!.outbox.add(step.to, 's', { device: 'd', ts: 0, values: { n: ++added } });
          model.pending.push({ seq: model.nextSeq++, to: step.to });
          // (epoch, seq) names this record and no other, even when a crash hands its seq out again
          expect(byKey.has(`${real!.outbox.epoch}/${real!.outbox.lastSeq}`)).toBe(false);
          byKey.set(`${real!.outbox.epoch}/${real!.outbox.lastSeq}`, added);
          break;
        case 'commit':
          real!.outbox.commit();
          for (const { seq, to } of model.pending) for (const up of to) model.queue[up].push(seq);
          if (model.pending.length) model.committedSeq = model.pending.at(-1)!.seq;
          model.pending = [];
          break;
        case 'ack':
        case 'nack': {
          const rows = real!.outbox.read(step.up, 0, step.n);
          delivered[step.up].push(...rows.map((r) => seqOf(r.payload)));
          if (step.kind === 'ack' && rows.length) {
            real!.outbox.ack(step.up, rows[0].id, rows.at(-1)!.id);
            model.queue[step.up].splice(0, rows.length);
          }
          break;
        }
        case 'reject': {
          // the broker refuses the first n for good, acknowledges nothing else of this send
          const rows = real!.outbox.read(step.up, 0, step.n);
          delivered[step.up].push(...rows.map((r) => seqOf(r.payload)));
          if (rows.length) {
            real!.outbox.deadLetter(step.up, rows.map((r) => r.id), 'refused');
            model.dead[step.up].push(...model.queue[step.up].splice(0, rows.length));
          }
          break;
        }
        case 'crash':
          // the process dies: the open group was never accepted, its seqs are handed out again
          real!.db.close();
          real = undefined;
          model.pending = [];
          model.expired = { a: 0, b: 0 }; // drop counters belong to a process
          model.nextSeq = model.committedSeq + 1;
          break;
        case 'reopen':
          if (real) {
            real.outbox.close();
            real.db.close();
            for (const { seq, to } of model.pending) for (const up of to) model.queue[up].push(seq);
            if (model.pending.length) model.committedSeq = model.pending.at(-1)!.seq;
            model.pending = [];
          }
          real = open(dir);
          model.expired = { a: 0, b: 0 };
          break;
        case 'expire':
          // both clocks past max_age: a wall-clock step alone expires nothing (see outbox-clock.test.ts)
          real!.outbox.expire(Date.now() + 120_000, performance.now() + 120_000);
          for (const up of UPSTREAMS) {
            model.expired[up] += model.queue[up].length;
            model.queue[up] = [];
          }
          break;
      }
      if (!real) continue;
      for (const up of UPSTREAMS) {
        // exactly the model's queue, in order: nothing accepted lost, nothing acknowledged back
        const rows = real.outbox.read(up, 0, 1_000_000);
        expect(rows.map((r) => seqOf(r.payload))).toEqual(model.queue[up]);
        for (const { key, n } of rows.map((r) => keyOf(r.payload))) expect(byKey.get(key)).toBe(n);
        expect(real.outbox.depth(up)).toBe(model.queue[up].length);
        expect(real.outbox.drops.get(up)?.expired ?? 0).toBe(model.expired[up]);
        // what was refused is kept aside, never sent again
        const dead = real.db.prepare('SELECT payload FROM dead_letter WHERE upstream = ? ORDER BY id').pluck().all(up) as string[];
        expect(dead.map(seqOf)).toEqual(model.dead[up]);
      }
    }
    // order per upstream: the first delivery of each seq comes in increasing order
    for (const up of UPSTREAMS) {
      const first = [...new Set(delivered[up])];
      expect(first).toEqual([...first].sort((x, y) => x - y));
    }
  } finally {
    if (real) {
      real.outbox.close();
      real.db.close();
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('outbox against a model', () => {
  const numRuns = process.env.FAULTS_LONG ? 100_000 : 10_000;
  it(`keeps every accepted record, in order, until acknowledged (${numRuns} random sequences)`, { timeout: numRuns * 20 }, () => {
    const started = Date.now();
    fc.assert(fc.property(fc.array(action, { maxLength: 25 }), runSequence), { numRuns });
    console.log(`outbox model: ${numRuns} sequences in ${((Date.now() - started) / 1000).toFixed(1)} s, no divergence`);
  });
});

describe('outbox overflow', () => {
  it('drops exactly what the policy says, whatever the sizes and counts (50 random runs)', { timeout: 120_000 }, () => {
    fc.assert(
      fc.property(fc.constantFrom('drop-oldest', 'reject-new'), fc.integer({ min: 200, max: 4000 }), fc.integer({ min: 100, max: 2000 }), (policy, size, total) => {
        const dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'outbox-cap-'));
        const { db } = openDatabase(dir, { durability: 'normal', maxSize: 512 * 1024 }, testLog);
        const outbox = new Outbox(db, { ...CONFIG, max_size: 512 * 1024, when_full: policy as OutboxConfig['when_full'], group_records: 100 }, 'gw', new StateStore(db), testLog);
        try {
          const pad = 'x'.repeat(size);
          for (let i = 0; i < total; i++) outbox.add(['a'], 's', { device: 'd', ts: i, values: { pad } });
          outbox.commit();
          const kept = outbox.read('a', 0, total).map((r) => seqOf(r.payload));
          const dropped = outbox.drops.get('a')?.overflow ?? 0;
          expect(kept.length + dropped).toBe(total);
          const expected = policy === 'drop-oldest' ? Array.from({ length: kept.length }, (_, i) => total - kept.length + i + 1) : Array.from({ length: kept.length }, (_, i) => i + 1);
          expect(kept).toEqual(expected);
        } finally {
          outbox.close();
          db.close();
          rmSync(dir, { recursive: true, force: true });
        }
      }),
      { numRuns: 50 },
    );
  });
});
