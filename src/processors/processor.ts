import type { ConfigIssue } from '../config/errors.js';
import type { Emit, Reading } from '../streams/reading.js';
import type { ScopedState } from '../streams/state.js';

/** One step of a stream. `emit` passes a reading on to the next step (zero, one or many times). */
export interface Processor {
  process(reading: Reading, emit: Emit): void;
  /** The agent's clock, about once a second: for steps that emit on time (closing windows). */
  tick?(now: number, emit: Emit): void;
}

export interface StepContext {
  stream: string;
  /** 0-based position in the stream's steps. */
  index: number;
  /** This step's persisted per-key state. */
  state: ScopedState;
  /** A config issue located at this step (or at one of its keys). */
  issue(message: string, key?: string): ConfigIssue;
}

/** Builds a step from its parameters; throws ConfigError for bad parameters. */
export type ProcessorFactory = (params: any, context: StepContext) => Processor;
