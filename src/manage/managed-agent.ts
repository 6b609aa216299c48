import type { LoadedConfig } from '../config/load.js';
import type { AgentConfig, StreamConfig } from '../config/types.js';
import type { Reading } from '../core/reading.js';
import type { DeviceState } from '../core/latest.js';
import type { Trends } from '../core/trends.js';

/** What an apply restarted, added or removed, by name. */
export interface ConfigChange {
  upstreams: string[];
  devices: string[];
  streams: string[];
}

/** A config that passed validation but failed to start: the previous one runs again. */
export class RolledBack extends Error {
  constructor(message: string, cause: Error) {
    super(message, { cause });
    this.name = 'RolledBack';
  }
}

export interface StreamStatus {
  name: string;
  from: StreamConfig['from'];
  steps: string[];
  to: string[];
  deployed: boolean;
  readings_in: number;
  /** Readings a step threw on (dropped). */
  errors: number;
  readings_out: number;
  /** What its steps counted, by `<step>.<operator>.<name>`. */
  counters: Record<string, number>;
}

/** One step of a running stream, as a data flow server lists an app's instances. */
export interface StepInstance {
  /** 1-based, as in the counters' names. */
  step: number;
  operator: string;
  /** Readings that reached the step since the stream started. */
  readings_in: number;
  /** What the step counted, by name (`dropped`, `missing`, ...). */
  counters: Record<string, number>;
  /** Keys of its state (per device, or per its `key` fields). */
  state_keys: number;
  /** When it last took a reading (epoch ms, to the second), null while none. */
  last_active: number | null;
}

/** A device's state (see core/latest.ts). */
export type DeviceStatus = DeviceState;

export interface UpstreamStatus {
  name: string;
  type: string;
  connected: boolean;
  retrying: boolean;
  depth: number;
  oldest_age_ms: number;
  drops: Record<string, number>;
  dead_lettered: number;
  sent: number;
  errors: number;
}

export interface OutboxStatus {
  upstreams: UpstreamStatus[];
  last_seq: number;
}

export interface ClockStatus {
  /** Readings whose ts was too far ahead (agent.max_future) or before agent.min_time. */
  untimely: number;
  /** Readings marked estimated because the system clock was not synchronized. */
  estimated: number;
  /** Steps of the system clock seen. */
  steps: number;
  /** Whether the system clock is synchronized; undefined when it cannot be told. */
  synchronized: boolean | undefined;
}

export interface ConfigStatus {
  agent: string;
  version: string | number | null;
  file: string;
  applied_at: number;
}

/**
 * The agent as management sees it: what the API, metrics and status page read, and the few
 * commands they send. Management depends on this, never on the agent's parts.
 */
export interface ManagedAgent {
  readonly config: AgentConfig;
  /** The config file and its text as running. */
  readonly file: string;
  readonly text: string;
  streamStatus(): StreamStatus[];
  /** Each step of a running stream; undefined when there is no such stream. */
  streamInstances(name: string): StepInstance[] | undefined;
  deviceStatus(): DeviceStatus[];
  outboxStatus(): OutboxStatus;
  configStatus(): ConfigStatus;
  clockStatus(): ClockStatus;
  /** Events that went upstream lately, newest last. */
  events(): readonly Reading[];
  /** The recent history of each point and stream output (the status page's trends). */
  readonly trends: Trends;
  /** A config text as if it were the config file; throws ConfigError. */
  parse(text: string): LoadedConfig;
  /** Checks what the schema cannot (streams, references), as `apply` does first; throws ConfigError. */
  validate(loaded: LoadedConfig): void;
  /** Validates and applies a config (one apply at a time); throws ConfigError or RolledBack. */
  apply(loaded: LoadedConfig, source: string): Promise<ConfigChange>;
  /** Runs `step` in the apply queue: what it checks against the running config holds until it applies. */
  oneAtATime<T>(step: () => Promise<T>): Promise<T>;
  /** `apply` from inside a `oneAtATime` step. */
  applyInQueue(loaded: LoadedConfig, source: string): Promise<ConfigChange>;
  /** Deploys or undeploys a stream; undefined when there is no such stream. */
  setDeployed(name: string, deployed: boolean): { deployed: boolean } | undefined;
}
