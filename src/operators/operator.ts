import { ConfigError, type ConfigIssue } from '../core/config-error.js';
import { fillDefaults, type Static, type TSchema } from '../core/config-kit.js';
import type { LatestLookup } from '../core/latest.js';
import type { Emit, Reading } from '../core/reading.js';

/** What a step sees of its state: its own keys only. */
export interface StepState {
  get<T>(key: string): T | undefined;
  set(key: string, value: unknown): void;
  delete(key: string): void;
  entries<T>(): IterableIterator<[string, T]>;
  /** Set by a step whose state can hold something still owed: a key for which it answers true is never pruned. */
  retain?: (value: unknown) => boolean;
}

/** State that lives in memory only: for validating a config, which builds every step but keeps nothing. */
export function memoryState(): StepState {
  const values = new Map<string, unknown>();
  return {
    get: <T>(key: string) => values.get(key) as T | undefined,
    set: (key, value) => void values.set(key, value),
    delete: (key) => void values.delete(key),
    entries: <T>() => values.entries() as IterableIterator<[string, T]>,
  };
}

/** One step of a stream. `emit` passes a reading on to the next step (zero, one or many times). */
export interface Operator {
  process(reading: Reading, emit: Emit): void;
  /** The agent's clock, about once a second: for steps that emit on time (closing windows). */
  tick?(now: number, emit: Emit): void;
  /** The end of the data (replay --flush): emits what is still open (windows, episodes) as it stands. */
  flush?(emit: Emit): void;
  /** Points this step needs as numbers: replay refuses a row that gives one as text. */
  readonly numeric?: readonly string[];
}

export interface StepContext {
  stream: string;
  /** 0-based position in the stream's steps. */
  index: number;
  /** This step's persisted per-key state. */
  state: StepState;
  /** The agent's clock: wall time live, the data's time in a replay. */
  now(): number;
  /** The latest value of every device's points, for expressions (as the stream's `max_age` allows). */
  latest: LatestLookup;
  /** The configured devices the stream reads (ids, template ids included); none for a timer. */
  devices?: readonly string[];
  /** agent.timezone, for windows of a day or more. */
  timezone: string;
  /**
   * agent.max_future (default 1h): how far ahead of the agent's clock a reading's ts may be.
   * State stamped further ahead than this came from a clock that was then stepped back: the
   * steps that judge time start again from the readings instead of waiting for it.
   */
  maxFuture?: number;
  /** Counts an event of this step (a drop, a missing value) under `name`. */
  count(name: string, n?: number): void;
  /** A config issue located at this step (or at one of its keys). */
  issue(message: string, key?: string): ConfigIssue;
}

/**
 * Builds a step from its parameters; throws ConfigError for bad parameters. `schema` is the
 * operator's keys (see `operator`): the config schema's `steps:` is assembled from them.
 */
export type OperatorFactory = ((params: any, context: StepContext) => Operator) & { schema?: TSchema };

/**
 * An operator: its parameters' schema (whose `Static` type `build` receives, defaults filled)
 * and how it is built. Defaults are filled once, when the stream is built.
 */
export function operator<S extends TSchema>(schema: S, build: (params: Static<S>, context: StepContext) => Operator): OperatorFactory & { schema: S } {
  return Object.assign((params: unknown, context: StepContext) => build(fillDefaults(schema, structuredClone(params)), context), { schema });
}

/** Throws a config error at the step (or its key) unless `ok`. */
export function check(ok: boolean, context: StepContext, message: string, key?: string): void {
  if (!ok) throw new ConfigError([context.issue(message, key)]);
}
