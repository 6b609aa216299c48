import { duration, keyFields, object, text, Type, type Static } from '../core/config-kit.js';
import type { Emit, Reading } from '../core/reading.js';
import { check, operator } from './operator.js';
import { stepExpression, verdict } from './expression.js';
import { keyFunction } from './values.js';

/** The operator's keys, their loaded type and their defaults. */
export const schema = object({
  when: text,
  at_least: Type.Integer({ minimum: 1, maximum: 10_000 }),
  within: duration(),
  key: Type.Optional(keyFields),
});
type Params = Static<typeof schema>;

interface KeyState {
  device: string;
  /** The times of the last `at_least` readings for which `when` was true, oldest first. */
  times: number[];
  raised: boolean;
  /** The latest reading judged: an older one (late) is not judged. */
  lastTs?: number;
  last: Pick<Reading, 'values' | 'quality'>;
}

/**
 * `count: { when: "tripped == 1", at_least: 3, within: 10m, key: [device] }`
 *
 * Per key (default: the device), raises when `when` was true on at least `at_least` readings
 * within the sliding interval `within` (the reading that makes the count passes as the raising
 * edge), and clears when fewer are left in it: at the next reading, or when the agent's clock
 * (replay: the data's) passes the moment the oldest of them leaves the interval, stamped then,
 * with the key's latest reading. Only the last `at_least` times are kept per key. A reading
 * older than the key's latest is late and not counted (counted as `late`); one without any good
 * value (a failed read) or that cannot judge `when` changes nothing (`missing`). State is
 * persisted, so a count survives a restart.
 */
export const count = operator(schema, (params, context) => {
  const when = stepExpression(params.when, context, 'when');
  check(params.within > 0, context, 'within must be more than 0', 'within');
  const keyOf = keyFunction(params.key);
  const { state } = context;
  const { within, at_least: atLeast } = params;
  const maxFuture = context.maxFuture ?? 3_600_000;
  /** Keys raised, for the clock to clear. */
  const raisedKeys = new Set<string>();
  for (const [key, keyState] of state.entries<KeyState>()) if (keyState.raised) raisedKeys.add(key);
  state.retain = (keyState) => (keyState as KeyState).raised;

  function clear(key: string, keyState: KeyState, ts: number, emit: Emit) {
    keyState.raised = false;
    raisedKeys.delete(key);
    state.set(key, keyState);
    emit({ device: keyState.device, ts, values: keyState.last.values, quality: keyState.last.quality, edge: 'clear' });
  }

  /** Clears the key when its count fell below `at_least` by `time`. */
  function expire(key: string, keyState: KeyState, time: number, emit: Emit) {
    if (keyState.raised && (keyState.times.length === 0 || time >= keyState.times[0] + within)) clear(key, keyState, keyState.times.length === 0 ? time : keyState.times[0] + within, emit);
  }

  return {
    process(reading, emit) {
      const holds = verdict(when, reading, context);
      if (holds === undefined) return;
      const key = keyOf(reading);
      let keyState = state.get<KeyState>(key);
      if (!keyState) {
        if (!holds) return;
        keyState = { device: reading.device, times: [], raised: false, last: { values: {} } };
      }
      const newest = keyState.lastTs ?? keyState.times[keyState.times.length - 1];
      if (newest !== undefined && newest > context.now() + maxFuture) {
        // counted on a clock that was stepped back since: the count starts again, and what it raised clears
        context.count('clock_back');
        keyState.times = [];
        keyState.lastTs = undefined;
        if (keyState.raised) clear(key, keyState, reading.ts, emit);
      } else if (newest !== undefined && reading.ts < newest) {
        return context.count('late');
      }
      keyState.device = reading.device;
      keyState.lastTs = reading.ts;
      keyState.last = { values: reading.values, quality: reading.quality };
      expire(key, keyState, reading.ts, emit);
      if (!holds) {
        if (!keyState.raised && (keyState.times.length === 0 || reading.ts >= keyState.times[keyState.times.length - 1] + within)) state.delete(key);
        // a raised key keeps its latest reading for the clearing edge
        else if (keyState.raised) state.set(key, keyState);
        return;
      }
      keyState.times.push(reading.ts);
      // at_least may have been lowered since the state was saved
      if (keyState.times.length > atLeast) keyState.times.splice(0, keyState.times.length - atLeast);
      state.set(key, keyState);
      if (!keyState.raised && keyState.times.length === atLeast && reading.ts - keyState.times[0] < within) {
        keyState.raised = true;
        raisedKeys.add(key);
        emit({ ...reading, edge: 'raise' });
      }
    },

    tick(now, emit) {
      for (const key of raisedKeys) {
        const keyState = state.get<KeyState>(key);
        if (!keyState) raisedKeys.delete(key);
        else expire(key, keyState, now, emit);
      }
    },
  };
});
