import { name, object, Type, withDefault, keyFields, type Static } from '../core/config-kit.js';
import { check, operator } from './operator.js';
import { keyFunction, pointQuality, pointValue } from './values.js';
import type { Value } from '../core/reading.js';

const numberOrPercent = Type.Unsafe<number | string>({ type: ['number', 'string'], minimum: 0, pattern: '^\\d+(\\.\\d+)?%$' });

/** The operator's keys, their loaded type and their defaults. */
export const schema = object({ point: name, deadband: withDefault(numberOrPercent, 0), key: Type.Optional(keyFields) });
type Params = Static<typeof schema>;

/**
 * `change: { point, deadband: 0 | 0.5 | 2%, key: [device] }` (report by exception)
 *
 * Passes a reading when the point differs from the last value passed for its key by more than
 * the deadband (0: any change; a percentage is of the last passed value). The first reading
 * passes. A reading without the point (or with it missing: null, NaN, bad) is dropped and
 * leaves the state alone. Values that are not numbers pass when they differ at all.
 */
export const change = operator(schema, (params, context) => {
  const { point } = params;
  const raw = params.deadband;
  const percent = typeof raw === 'string';
  const deadband = percent ? Number(raw.slice(0, -1)) / 100 : raw;
  check(deadband >= 0, context, 'deadband must not be negative', 'deadband');
  const keyOf = keyFunction(params.key, point);
  const { state } = context;

  return {
    numeric: [params.point],

    process(reading, emit) {
      const value = pointValue(reading, point);
      if (value === undefined || value === null || pointQuality(reading, point) === 'bad' || (typeof value === 'number' && !Number.isFinite(value))) {
        context.count('missing');
        return;
      }
      const key = keyOf(reading);
      const last = state.get<Value>(key);
      if (last !== undefined && !changed(value, last)) {
        context.count('unchanged');
        return;
      }
      state.set(key, value);
      emit(reading);
    },
  };

  function changed(value: Value, last: Value): boolean {
    if (typeof value !== 'number' || typeof last !== 'number') return value !== last;
    const band = percent ? deadband * Math.abs(last) : deadband;
    return band === 0 ? value !== last : Math.abs(value - last) > band;
  }
});
