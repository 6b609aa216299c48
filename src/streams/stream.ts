import type { StreamConfig } from '../config/types.js';
import type { Operator } from '../operators/operator.js';
import { pointQuality, setOwn } from '../operators/values.js';
import type { Logger } from 'pino';
import type { Emit, Reading } from '../core/reading.js';
import { deviceMatcher } from './source.js';

/** One source, an ordered list of steps (operators), and what to do with what comes out. */
export class Stream {
  readonly name: string;
  /** Whether the stream reads the configured device `id` (an id, a glob, a list: see source.ts). */
  readonly reads: (id: string) => boolean;
  private readonly points: ReadonlySet<string> | undefined;
  private readonly head: Emit;
  private readonly tickers: { step: Operator; next: Emit }[] = [];
  private readonly flushers: { step: Operator; next: Emit }[] = [];
  /** Points some step needs as numbers (see Operator.numeric). */
  readonly numeric: ReadonlySet<string>;
  readingsIn = 0;
  readingsOut = 0;
  /** Readings (and ticks) a step threw on: dropped, counted, logged once per spell. */
  errors = 0;
  private failing = false;
  /** Readings that reached each step (for the API's instances). */
  readonly stepReadings: number[];
  /**
   * When each step last took a reading, to the second: set at the tick after its count moved,
   * so that the path of a reading reads no clock. 0 while it took none.
   */
  readonly stepActiveAt: number[];
  private readonly stepSeen: number[];

  constructor(
    readonly config: StreamConfig,
    steps: Operator[],
    deliver: Emit,
    /** What its steps counted (drops, missing values, late readings), by `<step>.<operator>.<name>`. */
    readonly counters: ReadonlyMap<string, number> = new Map(),
    /**
     * Where a step that throws is reported. With it, the reading is dropped and the stream goes
     * on (a live agent must not die of one step); without it (replay, tests), the error goes on.
     */
    private readonly log?: Logger,
  ) {
    this.name = config.name;
    this.reads = deviceMatcher(config.from);
    this.points = config.from.points ? new Set(config.from.points) : undefined;
    // The chain is built once: each step's emit is the next step's process.
    let next: Emit = (reading) => {
      this.readingsOut++;
      deliver(reading);
    };
    const counts = (this.stepReadings = steps.map(() => 0));
    this.stepActiveAt = steps.map(() => 0);
    this.stepSeen = steps.map(() => 0);
    for (let i = steps.length - 1; i >= 0; i--) {
      const step = steps[i];
      const emit = next;
      if (step.tick) this.tickers.push({ step, next: emit });
      if (step.flush) this.flushers.unshift({ step, next: emit });
      next = (reading) => {
        counts[i]++;
        step.process(reading, emit);
      };
    }
    this.head = next;
    this.numeric = new Set(steps.flatMap((step) => step.numeric ?? []));
  }

  push(reading: Reading): void {
    const input = this.points ? project(reading, this.points) : reading;
    if (!input) return;
    this.readingsIn++;
    if (!this.log) return this.head(input);
    try {
      this.head(input);
    } catch (err) {
      return this.failed(err, input);
    }
    if (this.failing) this.recovered();
  }

  tick(now: number): void {
    for (let i = 0; i < this.stepReadings.length; i++) {
      if (this.stepReadings[i] !== this.stepSeen[i]) {
        this.stepSeen[i] = this.stepReadings[i];
        this.stepActiveAt[i] = now;
      }
    }
    for (const { step, next } of this.tickers) {
      if (!this.log) {
        step.tick!(now, next);
        continue;
      }
      try {
        step.tick!(now, next);
      } catch (err) {
        this.failed(err);
      }
    }
  }

  private failed(err: unknown, reading?: Reading): void {
    this.errors++;
    if (this.failing) return;
    this.failing = true;
    const message = err instanceof Error ? err.message : String(err);
    this.log!.error(
      { stream: this.name, err: message, stack: err instanceof Error ? err.stack : undefined, device: reading?.device, ts: reading?.ts },
      `stream ${this.name}: a step failed (${message}); the reading is dropped and the stream goes on (counted as errors; logged again when this ends)`,
    );
  }

  private recovered(): void {
    this.failing = false;
    this.log!.info({ stream: this.name, errors: this.errors }, `stream ${this.name}: steps run again (${this.errors} failed readings so far)`);
  }

  /** Emits what the steps hold open, first step first, so that a window flushed feeds the next step's. */
  flush(): void {
    for (const { step, next } of this.flushers) step.flush!(next);
  }
}

/** The reading cut down to the stream's points, or undefined when it carries none of them. */
function project(reading: Reading, points: ReadonlySet<string>): Reading | undefined {
  // Most streams that see a reading carry none of its points (a stream per point of an MQTT
  // device): one own-key test per stream point says so
  let found = 0;
  let point = '';
  for (const name of points) {
    if (!Object.hasOwn(reading.values, name)) continue;
    found++;
    point = name;
  }
  if (found === 0) return undefined;
  // A reading of that single value goes on as it is instead of as a copy: readings are never
  // changed in place, and every stream that reads it may see the same one
  if (found === 1 && singleKey(reading.values) && (reading.quality === undefined || (pointQuality(reading, point) !== undefined && singleKey(reading.quality)))) return reading;
  let values: Reading['values'] | undefined;
  let quality: Reading['quality'];
  for (const name of points) {
    // own keys only: a point named `constructor` is not Object.prototype.constructor
    if (!Object.hasOwn(reading.values, name)) continue;
    setOwn((values ??= {}), name, reading.values[name]);
    const q = pointQuality(reading, name);
    if (q) setOwn((quality ??= {}), name, q);
  }
  if (!values) return undefined;
  return { ...reading, values, quality };
}

/** Whether the object has exactly one own enumerable key. */
function singleKey(object: object): boolean {
  let n = 0;
  for (const _ in object) if (++n > 1) return false;
  return n === 1;
}
