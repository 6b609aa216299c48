import { duration, keyFields, name, object, oneOf, Type, withDefault, type Static } from '../core/config-kit.js';
import type { Emit, Reading } from '../core/reading.js';
import { check, operator } from './operator.js';
import { hasPoint, keyFunction, numberOf, withoutValue, withValue } from './values.js';

/** The operator's keys, their loaded type and their defaults. */
export const schema = object({
  point: name,
  min: Type.Optional(Type.Number()),
  max: Type.Optional(Type.Number()),
  fill: withDefault(oneOf(['none', 'previous', 'linear']), 'none'),
  max_hold: duration('5m'),
  key: Type.Optional(keyFields),
});
type Params = Static<typeof schema>;

interface KeyState {
  /** The last good value: [ts, value]. */
  good?: [number, number];
  /** Readings held for linear fill, oldest first. */
  held?: Reading[];
}

/**
 * A new key's state with both fields in place (undefined is left out of the saved JSON).
 * Objects built as `{}` plus properties share a hidden class only while V8 has room for one more
 * transition from the empty object's class (at most 1,536 property names); importing the config
 * loader fills it, and then every key's `{}` got a class of its own: the reads of `good` and
 * `held` went megamorphic and missed V8's lookup cache on most readings (chain benchmark -26 %).
 */
const newKeyState = (): KeyState => ({ good: undefined, held: undefined });

/**
 * `threshold: { point, min, max, fill: none | previous | linear, max_hold: 5m }`
 *
 * A value outside [min, max] is an outlier. none: the value is dropped (the reading's other
 * values go on). previous: replaced by the last good value, quality estimated. linear: the
 * reading is held until the next good value, then emitted with its value interpolated in time
 * (quality interpolated), followed by the good one; after max_hold without one it goes out as
 * `previous` would. An outlier with no earlier good value is dropped. While a reading is held,
 * later readings of the same key wait behind it, so the order is kept. A missing value (null,
 * NaN, bad quality) is not judged: it passes as it is and is counted. Held readings stamped
 * further ahead of the agent's clock than agent.max_future (the clock was stepped back since)
 * go out as `previous` would at the next tick, instead of being held until the clock catches up.
 */
export const threshold = operator(schema, (params, context) => {
  const { point, min, max } = params;
  check(min !== undefined || max !== undefined, context, 'needs min, max or both');
  check(min === undefined || max === undefined || min <= max, context, `min (${min}) is greater than max (${max})`, 'min');
  check(params.max_hold > 0, context, 'max_hold must be positive', 'max_hold');
  const fill = params.fill;
  const maxHold = params.max_hold;
  const maxFuture = context.maxFuture ?? 3_600_000;
  const keyOf = keyFunction(params.key, point);
  const { state } = context;
  // held readings are owed downstream: never pruned
  state.retain = (keyState) => ((keyState as KeyState).held?.length ?? 0) > 0;
  /** Keys holding readings; filled from the saved state on the first tick after a start. */
  let holding: Set<string> | undefined;

  const isOutlier = (v: number) => (min !== undefined && v < min) || (max !== undefined && v > max);

  /** Releases held readings with `value(heldTs)` in place of their outliers. */
  function release(key: string, keyState: KeyState, emit: Emit, value: (ts: number) => number, quality: 'interpolated' | 'estimated') {
    const held = keyState.held!;
    keyState.held = undefined;
    holding?.delete(key);
    for (const reading of held) {
      const v = numberOf(reading, point);
      emit(v !== undefined && isOutlier(v) ? withValue(reading, point, value(reading.ts), quality) : reading);
    }
  }

  function holdExpired(key: string, keyState: KeyState, now: number, emit: Emit) {
    if (keyState.held && (now >= keyState.held[0].ts + maxHold || keyState.held[0].ts > context.now() + maxFuture)) {
      const [, previous] = keyState.good!;
      release(key, keyState, emit, () => previous, 'estimated');
      state.set(key, keyState);
    }
  }

  return {
    numeric: [params.point],

    process(reading, emit) {
      if (!hasPoint(reading, point)) return emit(reading);
      const key = keyOf(reading);
      const keyState = state.get<KeyState>(key) ?? newKeyState();
      if (keyState.held) holdExpired(key, keyState, reading.ts, emit);
      const v = numberOf(reading, point);

      if (v === undefined || !isOutlier(v)) {
        if (v === undefined) context.count('missing');
        if (keyState.held && v === undefined) {
          keyState.held.push(reading);
          return state.set(key, keyState);
        }
        if (keyState.held) {
          const [t1, v1] = keyState.good!;
          const t2 = reading.ts;
          release(key, keyState, emit, (ts) => (t2 === t1 ? v! : v1 + ((v! - v1) * (ts - t1)) / (t2 - t1)), 'interpolated');
        }
        emit(reading);
        if (v !== undefined) {
          if (keyState.good) {
            keyState.good[0] = reading.ts;
            keyState.good[1] = v;
          } else keyState.good = [reading.ts, v];
          state.set(key, keyState);
        }
        return;
      }

      context.count('outliers');
      if (!keyState.good || fill === 'none') {
        context.count('dropped');
        const rest = withoutValue(reading, point);
        if (rest) emit(rest);
        return;
      }
      if (fill === 'previous') return emit(withValue(reading, point, keyState.good[1], 'estimated'));
      (keyState.held ??= []).push(reading);
      holding?.add(key);
      state.set(key, keyState);
    },

    tick(now, emit) {
      if (fill !== 'linear') return;
      if (!holding) {
        holding = new Set();
        for (const [key, keyState] of state.entries<KeyState>()) if (keyState.held) holding.add(key);
      }
      for (const key of holding) {
        const keyState = state.get<KeyState>(key);
        if (keyState) holdExpired(key, keyState, now, emit);
        else holding.delete(key);
      }
    },
  };
});
