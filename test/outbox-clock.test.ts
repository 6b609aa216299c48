import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { OutboxClocks } from '../src/outbox/outbox.js';
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
