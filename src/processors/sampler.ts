import { duration, keyFields, object, oneOf, Type, withDefault, type Static } from '../config/kit.js';
import { check, operator } from './processor.js';
import { keyFunction } from './values.js';

/** The operator's keys, their loaded type and their defaults. */
export const schema = object({ interval: duration(), key: Type.Optional(keyFields), clock: withDefault(oneOf(['server', 'data']), 'server') });
type Params = Static<typeof schema>;

/**
 * `sampler: { interval: 2m, key: [device], clock: server | data }`
 *
 * Per key, passes the first reading, then drops readings until `interval` has passed since
 * the last one passed, then passes the next. `clock: server` (the default) measures on the
 * agent's clock, `data` on the readings' ts.
 */
export const sampler = operator(schema, (params, context) => {
  check(params.interval > 0, context, 'interval must be positive', 'interval');
  const { interval } = params;
  const dataClock = params.clock === 'data';
  const keyOf = keyFunction(params.key);
  const { state } = context;
  return {
    process(reading, emit) {
      const key = keyOf(reading);
      const now = dataClock ? reading.ts : context.now();
      const last = state.get<number>(key);
      if (last !== undefined && now - last < interval) {
        context.count('dropped');
        return;
      }
      state.set(key, now);
      emit(reading);
    },
  };
});
