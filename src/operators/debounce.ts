import { duration, keyFields, object, text, Type, type Static } from '../core/config-kit.js';
import type { Emit, Reading } from '../core/reading.js';
import { operator } from './operator.js';
import { stepExpression, verdict } from './expression.js';
import { keyFunction } from './values.js';

/** The operator's keys, their loaded type and their defaults. */
export const schema = object({
  when: text,
  for: duration(),
  clear_for: duration('0s'),
  key: Type.Optional(keyFields),
});
type Params = Static<typeof schema>;

interface KeyState {
  device: string;
  /** Raised: the last edge passed was a raise. */
  raised: boolean;
  /** Since when the condition has disagreed with `raised` (null: it agrees). */
  since: number | null;
  /** The latest reading judged: an older one (late) is not judged. */
  lastTs?: number;
  /** The key's latest reading, for an edge the clock passes. */
  last: Pick<Reading, 'values' | 'quality'>;
}

/**
 * `debounce: { when: "temp > 80", for: 30s, clear_for: 10s, key: [device] }`
 *
 * A PLC's on-delay and off-delay, per key (default: the device). The raising edge passes once
 * `when` has held on every reading for `for`; the clearing edge once it has been false for
 * `clear_for` (0: at the first reading for which it is false). An edge is stamped at the
 * moment its delay ran out (`since + for`) and carries the key's latest reading: it passes at
 * the first reading at or after that moment, or when the agent's clock passes it (replay: the
 * data's), so a condition that stays true with no new reading still raises. A reading older
 * than the key's latest is late and not judged (counted as `late`); one without any good value
 * (a failed read) or that cannot judge `when` changes nothing (`missing`): a broken sensor
 * neither raises nor clears. State is persisted; readings whose time is not believed are
 * dropped (counted as `untimely`).
 */
export const debounce = operator(schema, (params, context) => {
  const when = stepExpression(params.when, context, 'when');
  const keyOf = keyFunction(params.key);
  const { state } = context;
  const maxFuture = context.maxFuture ?? 3_600_000;
  /** Keys waiting for a delay to run out, for the clock. */
  const waiting = new Set<string>();
  for (const [key, keyState] of state.entries<KeyState>()) if (keyState.since !== null) waiting.add(key);
  // a key that waits for a delay holds an edge still owed
  state.retain = (keyState) => (keyState as KeyState).since !== null;

  const delayOf = (keyState: KeyState) => (keyState.raised ? params.clear_for : params.for);

  /** Passes the owed edge when the delay ran out by `time`; returns whether it did. */
  function expire(key: string, keyState: KeyState, time: number, emit: Emit): boolean {
    if (keyState.since === null || time < keyState.since + delayOf(keyState)) return false;
    const ts = keyState.since + delayOf(keyState);
    keyState.raised = !keyState.raised;
    keyState.since = null;
    waiting.delete(key);
    state.set(key, keyState);
    emit({ device: keyState.device, ts, values: keyState.last.values, quality: keyState.last.quality, edge: keyState.raised ? 'raise' : 'clear' });
    return true;
  }

  return {
    process(reading, emit) {
      const holds = verdict(when, reading, context);
      if (holds === undefined) return;
      const key = keyOf(reading);
      let keyState = state.get<KeyState>(key);
      // the reading's time and values alone changing are not worth a write: they go with the next change
      let changed = !keyState;
      keyState ??= { device: reading.device, raised: false, since: null, last: { values: {} } };
      if (keyState.since !== null && keyState.since > context.now() + maxFuture) {
        // the clock that stamped `since` was stepped back since: time starts again from this reading
        context.count('clock_back');
        keyState.since = null;
        keyState.lastTs = undefined;
        changed = true;
      } else if (keyState.lastTs !== undefined && reading.ts < keyState.lastTs) {
        return context.count('late');
      }
      keyState.device = reading.device;
      keyState.lastTs = reading.ts;
      keyState.last = { values: reading.values, quality: reading.quality };
      const since = keyState.since;
      if (holds === keyState.raised) keyState.since = null;
      else if (keyState.since === null) keyState.since = reading.ts;
      if (keyState.since !== since) changed = true;
      if (keyState.since === null) waiting.delete(key);
      else waiting.add(key);
      if (!expire(key, keyState, reading.ts, emit) && changed) state.set(key, keyState);
    },

    tick(now, emit) {
      for (const key of waiting) {
        const keyState = state.get<KeyState>(key);
        if (keyState) expire(key, keyState, now, emit);
        else waiting.delete(key);
      }
    },
  };
});
