import { check, type ProcessorFactory } from './processor.js';
import { keyFunction } from './values.js';

interface Params {
  interval: number;
  key?: string[];
  clock?: 'server' | 'data';
}

/**
 * `sampler: { interval: 2m, key: [device], clock: server | data }`
 *
 * Per key, passes the first reading, then drops readings until `interval` has passed since
 * the last one passed, then passes the next. `clock: server` (the default) measures on the
 * agent's clock, `data` on the readings' ts.
 */
export const sampler: ProcessorFactory = (params: Params, context) => {
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
};
