import Database from 'better-sqlite3';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { OutboxClocks } from '../src/outbox/outbox.js';
import { AgentProcess } from './support/agent-process.js';
import { freePort } from './support/ports.js';
import { capturingLog, openOutbox } from './support/storage.js';

/**
 * max_age against wall-clock steps, with clocks the test moves: a record expires only when it
 * is older than max_age by the wall clock and this process has held it that long by the
 * monotonic clock.
 */
const DAY = 86_400_000;
const MAX_AGE = 7 * DAY;
const REAL_NOW = Date.parse('2026-11-22T06:00:00Z');

class Clocks implements OutboxClocks {
  constructor(
    public wallNow: number,
    public monoNow = 1000,
  ) {}
  wall = () => this.wallNow;
  mono = () => this.monoNow;
  /** Time passes: both clocks move. */
  pass(ms: number) {
    this.wallNow += ms;
    this.monoNow += ms;
  }
}

const open: { close(): void }[] = [];
afterEach(() => {
  while (open.length) open.pop()!.close();
});

function store(dir: string, clocks: Clocks) {
  const s = openOutbox(dir, capturingLog().log, { max_age: MAX_AGE, group_records: 10 }, clocks);
  open.push(s);
  return s;
}

const reading = (i: number) => ({ device: 'm', ts: i, values: { i } });

describe('outbox max_age and the wall clock', () => {
  it('a forward step of the wall clock expires nothing that this process has held for less than max_age', () => {
    // the gateway booted with its clock 30 days behind; the broker is down
    const clocks = new Clocks(REAL_NOW - 30 * DAY);
    const { outbox } = store(mkdtempSync(join(tmpdir(), 'outbox-clock-')), clocks);
    for (let i = 0; i < 190; i++) {
      outbox.add(['cloud'], 's', reading(i));
      clocks.pass(100); // 19 s in all
    }
    outbox.commit();
    outbox.expire();
    expect(outbox.depth('cloud')).toBe(190);
    // NTP steps the clock to the right time: by the wall clock the records are 30 days old
    clocks.wallNow = REAL_NOW;
    outbox.expire();
    expect(outbox.depth('cloud')).toBe(190);
    expect(outbox.drops.get('cloud')?.expired ?? 0).toBe(0);
    // a week later by both clocks they are old indeed
    clocks.pass(MAX_AGE + 1000);
    outbox.expire();
    expect(outbox.depth('cloud')).toBe(0);
    expect(outbox.drops.get('cloud')!.expired).toBe(190);
  });

  it('records held for max_age by the monotonic clock but young by the wall clock (a backward step) are kept', () => {
    const clocks = new Clocks(REAL_NOW);
    const { outbox } = store(mkdtempSync(join(tmpdir(), 'outbox-clock-')), clocks);
    for (let i = 0; i < 10; i++) outbox.add(['cloud'], 's', reading(i));
    outbox.commit();
    clocks.monoNow += MAX_AGE + 1000; // a week passes, but the wall clock is set back by as much
    outbox.expire();
    expect(outbox.depth('cloud')).toBe(10);
  });

  it('expires by both clocks, group by group, the older ones first', () => {
    const clocks = new Clocks(REAL_NOW);
    const { outbox } = store(mkdtempSync(join(tmpdir(), 'outbox-clock-')), clocks);
    for (let day = 0; day < 10; day++) {
      for (let i = 0; i < 10; i++) outbox.add(['cloud'], 's', reading(day * 10 + i));
      outbox.commit();
      clocks.pass(DAY);
    }
    // now: the groups of days 0..2 are older than 7 days by both clocks
    outbox.expire();
    expect(outbox.drops.get('cloud')!.expired).toBe(30);
    expect(outbox.depth('cloud')).toBe(70);
  });

  it('after a restart, the wall clock is trusted only for records this process has held for max_age', () => {
    const dir = mkdtempSync(join(tmpdir(), 'outbox-clock-'));
    const before = new Clocks(REAL_NOW - 30 * DAY);
    const first = store(dir, before);
    for (let i = 0; i < 50; i++) first.outbox.add(['cloud'], 's', reading(i));
    first.close();
    open.pop();
    // restarted with the right time (and a new monotonic clock): the records look 30 days old
    const clocks = new Clocks(REAL_NOW, 5);
    const second = store(dir, clocks);
    second.outbox.expire();
    expect(second.outbox.depth('cloud')).toBe(50);
    clocks.pass(MAX_AGE - 1000);
    second.outbox.expire();
    expect(second.outbox.depth('cloud')).toBe(50);
    clocks.pass(2000);
    second.outbox.expire();
    expect(second.outbox.depth('cloud')).toBe(0);
  });

  it('keeps a bounded number of monotonic marks however many groups commit', () => {
    const clocks = new Clocks(REAL_NOW);
    const { outbox } = store(mkdtempSync(join(tmpdir(), 'outbox-clock-')), clocks);
    for (let i = 0; i < 20_000; i++) {
      outbox.add(['cloud'], 's', reading(i));
      if (i % 10 === 9) outbox.expire();
      clocks.pass(MAX_AGE / 2000); // 10 max_ages in all
    }
    outbox.commit();
    const held = (outbox as unknown as { held: { id: number; mono: number }[] }).held;
    const marks = held.length;
    expect(marks).toBeLessThanOrEqual(102);
    // what is left is exactly the last max_age of records (give or take a mark's span)
    expect(outbox.depth('cloud')).toBeGreaterThanOrEqual(2000);
    expect(outbox.depth('cloud')).toBeLessThanOrEqual(2000 + 20 + 10);
  });
});

/**
 * The same with a real agent under libfaketime: its wall clock starts 30 days behind, the
 * broker is down, records accumulate; then the clock steps to the right time and the agent's
 * own expiry (every minute) runs; then it restarts with the right time (expiry at start).
 */
describe('a real agent whose wall clock steps 30 days forward', () => {
  const LIBFAKETIME = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';

  it('keeps every buffered record through the step and through a restart', async () => {
    if (!existsSync(LIBFAKETIME)) throw new Error(`${LIBFAKETIME} is missing: apt-get install faketime (scripts/test installs it)`);
    const dir = mkdtempSync(join(tmpdir(), 'outbox-faketime-'));
    const offset = join(dir, 'faketime');
    writeFileSync(offset, '-30d\n');
    const downBroker = await freePort();
    const config = join(dir, 'agent.yaml');
    writeFileSync(
      config,
      `agent: { id: gw, data_dir: ${dir}/data, http: off }
devices:
  - { id: m, protocol: simulator, poll: 50ms, points: [{ name: x, signal: counter, rate: 1 }] }
streams:
  - { name: s, from: { device: m, points: [x] }, to: [cloud] }
upstream: [{ name: cloud, type: mqtt, url: "mqtt://127.0.0.1:${downBroker}", topic: "t/{stream}" }]
`,
    );
    const env = { LD_PRELOAD: LIBFAKETIME, FAKETIME_TIMESTAMP_FILE: offset, FAKETIME_NO_CACHE: '1', FAKETIME_DONT_FAKE_MONOTONIC: '1' };
    const agent = AgentProcess.start(config, env);
    await agent.waitForLog(/agent gw running/);
    const started = agent.log.find((l) => /agent gw running/.test(l))!;
    expect(Date.now() - JSON.parse(started).time).toBeGreaterThan(29 * DAY); // the agent's clock is behind
    await new Promise((r) => setTimeout(r, 3000));
    writeFileSync(offset, '+0\n'); // NTP steps the clock
    // the agent's expiry runs every 60 s: wait for one run after the step
    await new Promise((r) => setTimeout(r, 62_000));
    agent.kill('SIGTERM');
    await agent.exit();

    const restarted = AgentProcess.start(config); // the right time from the start: expiry runs at once
    await restarted.waitForLog(/agent gw running/);
    await new Promise((r) => setTimeout(r, 1000));
    restarted.kill('SIGTERM');
    await restarted.exit();

    const db = new Database(join(dir, 'data', 'edge-agent.db'), { readonly: true });
    const seqs = (db.prepare("SELECT payload FROM outbox WHERE upstream = 'cloud' ORDER BY id").pluck().all() as string[]).map((p) => JSON.parse(p).seq as number);
    db.close();
    const firstRun = seqs.filter((s) => s <= seqs.length);
    expect(firstRun.length).toBeGreaterThan(60 * 15); // about 20 a second for 65 s
    // nothing expired: every seq from 1 is still there
    expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1));
    expect([...agent.log, ...restarted.log].filter((l) => /older than max_age/.test(l))).toEqual([]);
    console.log(`faketime: ${seqs.length} records buffered through a 30-day forward step and a restart, 0 expired`);
  }, 120_000);
});
