import { duration, keyFields, object, oneOf, Type, withDefault, type Static } from '../core/config-kit.js';
import { check, operator } from './operator.js';
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
 *
 * Time: when the reference lies ahead of the clock in use (the agent's clock was stepped back
 * since; for `data`, by more than agent.max_future), the next reading passes and becomes the
 * reference, instead of everything being dropped until the clock catches up. With `data`, a
 * reading marked `untimely` (its ts not believed, see core/clock.ts) is sampled on the agent's
 * clock under a reference of its own, so its ts never becomes the reference.
 */
export const sampler = operator(schema, (params, context) => {
  check(params.interval > 0, context, 'interval must be positive', 'interval');
  const { interval } = params;
  const dataClock = params.clock === 'data';
  const keyOf = keyFunction(params.key);
  const { state } = context;
  const maxFuture = context.maxFuture ?? 3_600_000;
  return {
    process(reading, emit) {
      const untimely = dataClock && reading.untimely !== undefined;
      const key = untimely ? `${keyOf(reading)}\u0000untimely` : keyOf(reading);
      const now = dataClock && !untimely ? reading.ts : context.now();
      const last = state.get<number>(key);
      const steppedBack = last !== undefined && (dataClock && !untimely ? last > context.now() + maxFuture : now < last);
      if (last !== undefined && !steppedBack && now - last < interval) {
        context.count('dropped');
        return;
      }
      state.set(key, now);
      emit(reading);
    },
  };
});
