import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { startAgent } from '../src/start.js';
import { operators } from '../src/operators/index.js';
import { pass } from '../src/operators/pass.js';
import type { OperatorFactory } from '../src/operators/operator.js';
import type { Reading } from '../src/core/reading.js';
import { StateStore } from '../src/streams/state.js';
import { Stream } from '../src/streams/stream.js';
import { testLog } from './support/log.js';
import { until } from './support/ports.js';

describe('stream', () => {
  it('runs readings through the steps in order and projects them to the stream points', () => {
    const out: Reading[] = [];
    const tag = (label: string) => ({
      process(reading: Reading, emit: (r: Reading) => void) {
        emit({ ...reading, values: { ...reading.values, trail: `${reading.values.trail ?? ''}${label}` } });
      },
    });
    const stream = new Stream(
      { name: 's', from: { device: 'm', points: ['a', 'b'] }, steps: [], to: ['x'] },
      [tag('1'), pass({}, undefined as never), tag('2')],
      (r) => out.push(r),
    );
    stream.push({ device: 'm', ts: 1, values: { a: 1, c: 3 }, quality: { a: 'bad', c: 'bad' } });
    stream.push({ device: 'm', ts: 2, values: { c: 3 } });
    expect(out).toEqual([{ device: 'm', ts: 1, values: { a: 1, trail: '12' }, quality: { a: 'bad' } }]);
    expect([stream.readingsIn, stream.readingsOut]).toEqual([1, 1]);
  });

  it('ticks the steps that keep time', () => {
    const ticks: number[] = [];
    const stream = new Stream({ name: 's', from: { device: 'm' }, steps: [], to: ['x'] }, [{ process() {}, tick: (now) => ticks.push(now) }], () => {});
    stream.tick(5);
    expect(ticks).toEqual([5]);
  });
});

describe('per-key state', () => {
  it('is scoped per step and survives a reopen of the database', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'state-')), 'state.db');
    const first = new StateStore(new Database(file));
    first.scope('s/0/x').set('m/p', 1);
    first.scope('s/1/y').set('m/p', { n: 2 });
    first.save();
    first.saved();
    const second = new StateStore(new Database(file));
    expect(second.scope('s/0/x').get('m/p')).toBe(1);
    expect(second.scope('s/1/y').get('m/p')).toEqual({ n: 2 });
    second.clearScope('s/0/x');
    second.save();
    expect(new StateStore(new Database(file)).scope('s/0/x').get('m/p')).toBeUndefined();
  });

  it('carries a processor over an agent restart', async () => {
    // A step that numbers the readings it passes, keeping its count in the state store.
    const counter: OperatorFactory = (_params, { state }) => ({
      process(reading, emit) {
        const n = (state.get<number>(reading.device) ?? 0) + 1;
        state.set(reading.device, n);
        emit({ ...reading, values: { ...reading.values, n } });
      },
    });
    // Stands in for `pass` for this test, so the config needs no operator of its own.
    operators.pass = counter;
    try {
      const dir = mkdtempSync(join(tmpdir(), 'restart-'));
      const config = join(dir, 'agent.yaml');
      writeFileSync(
        config,
        `agent: { id: gw, data_dir: ${dir}, log_level: warn }
devices: [{ id: sim, protocol: simulator, poll: 10ms, points: [{ name: p, signal: sine }] }]
streams: [{ name: s, from: { device: sim }, steps: [{ pass: {} }], to: [file] }]
upstream: [{ name: file, type: file, path: out.jsonl }]
`,
      );
      const agent = await startAgent(config, testLog);
      await until(() => agent.outbox.lastSeq >= 5, 5000, 'five readings');
      await agent.stop();
      const lastBefore = Math.max(...readFileSync(join(dir, 'out.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).values.n));

      const again = await startAgent(config, testLog);
      await until(() => again.outbox.lastSeq >= lastBefore + 3, 5000, 'readings after the restart');
      await again.stop();
      const ns = readFileSync(join(dir, 'out.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).values.n as number);
      expect(ns).toEqual(Array.from({ length: ns.length }, (_, i) => i + 1));
    } finally {
      operators.pass = pass;
    }
  });
});
