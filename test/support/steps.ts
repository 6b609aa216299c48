import Database from 'better-sqlite3';
import { operators } from '../../src/operators/index.js';
import type { Operator } from '../../src/operators/operator.js';
import { LatestValues } from '../../src/core/latest.js';
import type { Reading } from '../../src/core/reading.js';
import { StateStore } from '../../src/streams/state.js';
import { ConfigError } from '../../src/core/config-error.js';

/**
 * One operator, built as the agent builds it, over a state store that can be saved and
 * reopened (a restart), with a clock the test sets.
 */
export class StepHarness {
  readonly out: Reading[] = [];
  readonly counters = new Map<string, number>();
  readonly latest = new LatestValues();
  /** The agent's clock (context.now()); unset, it is never behind a reading, so steps judge nothing against it. */
  clock = Number.POSITIVE_INFINITY;
  private processor!: Operator;
  private db: Database.Database;
  private state!: StateStore;

  constructor(
    private readonly operator: string,
    private readonly params: unknown,
    private readonly timezone = 'UTC',
    file = ':memory:',
  ) {
    this.db = new Database(file);
    this.build();
  }

  private build() {
    this.state = new StateStore(this.db);
    this.processor = operators[this.operator](this.params, {
      stream: 'test',
      index: 0,
      state: this.state.scope('test/0'),
      now: () => this.clock,
      latest: this.latest,
      timezone: this.timezone,
      count: (name, n = 1) => this.counters.set(name, (this.counters.get(name) ?? 0) + n),
      issue: (message, key) => ({ file: 'test', path: key ?? '', message }),
    });
  }

  push(...readings: Reading[]): Reading[] {
    const before = this.out.length;
    for (const reading of readings) {
      this.latest.update(reading);
      this.processor.process(reading, (r) => this.out.push(r));
    }
    return this.out.slice(before);
  }

  tick(now: number): Reading[] {
    const before = this.out.length;
    this.processor.tick?.(now, (r) => this.out.push(r));
    return this.out.slice(before);
  }

  /** Saves the state as a group commit would, and builds the operator again from it. */
  restart(): void {
    this.state.save();
    this.state.saved();
    this.build();
  }

  count(name: string): number {
    return this.counters.get(name) ?? 0;
  }
}

/** The config error an operator raises for these parameters, or undefined. */
export function paramError(operator: string, params: unknown): string | undefined {
  try {
    new StepHarness(operator, params);
    return undefined;
  } catch (err) {
    if (err instanceof ConfigError) return err.issues.map((i) => `${i.path}: ${i.message}`).join('\n');
    throw err;
  }
}

const MIN = 60_000;
/** epoch ms of 2026-01-05 at hh:mm (UTC) */
export const at = (hhmm: string, day = 5) => {
  const [h, m, s = '0'] = hhmm.split(':');
  return Date.UTC(2026, 0, day, Number(h), Number(m), Number(s));
};
export const minutes = (n: number) => n * MIN;
export const reading = (ts: number, values: Reading['values'], device = 'm1', extra: Partial<Reading> = {}): Reading => ({ device, ts, values, ...extra });
