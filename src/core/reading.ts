/** What a point holds: a number, a boolean or a text. */
export type Value = number | boolean | string;

export type Quality = 'good' | 'interpolated' | 'estimated' | 'partial' | 'late' | 'bad' | 'stale';

export interface EventInfo {
  code: string;
  severity: 'info' | 'minor' | 'major' | 'critical';
  description: string;
  state: 'raised' | 'cleared';
  [field: string]: unknown;
}

/**
 * What flows through a stream: one device at one time. `quality` names only the values that
 * are not `good`, so the common case carries no quality object at all.
 */
export interface Reading {
  device: string;
  /** epoch ms */
  ts: number;
  values: Record<string, Value | null>;
  quality?: Record<string, Quality>;
  /** Set by edge-detecting operators (hysteresis); events and actions follow it. */
  edge?: 'raise' | 'clear';
  event?: EventInfo;
  /**
   * The ts is not believed (set where readings enter the streams, see core/clock.ts): too far
   * ahead of the agent's clock, or before agent.min_time. Steps that judge time (window, energy,
   * sampler) pass such a reading on without letting its ts move their state.
   */
  untimely?: 'future' | 'past';
  /** Set by `capture`: the time of the trigger whose capture this reading belongs to. */
  capture?: number;
}

export type Emit = (reading: Reading) => void;
