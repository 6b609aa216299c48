import { duration, keyFields, object, text, Type, withDefault, type Static } from '../core/config-kit.js';
import type { Reading } from '../core/reading.js';
import { operator } from './operator.js';
import { stepExpression } from './expression.js';
import { keyFunction } from './values.js';

/** The operator's keys, their loaded type and their defaults. */
export const schema = object({
  when: text,
  before: duration(),
  after: duration(),
  /** readings kept per key for `before`, at most: a full-rate source cannot grow it without end */
  max_readings: withDefault(Type.Integer({ minimum: 1, maximum: 100_000 }), 1000),
  key: Type.Optional(keyFields),
});
type Params = Static<typeof schema>;

interface KeyState {
  /** `when` at the key's last reading that could judge it. */
  truth: boolean;
  /** The trigger of the capture under way, and when it ends. */
  trigger?: number;
  until?: number;
}

/**
 * `capture: { when: "current_a > 400", before: 30s, after: 30s, max_readings: 1000, key: [device] }`
 *
 * Full-rate data around a trigger, per key (default: the device), beside a thin main stream:
 * keeps the readings of the last `before` in a bounded buffer (at most `max_readings`; older
 * ones go first, counted as `dropped`) and, when `when` becomes true, passes that buffer and
 * then every reading until `after` has elapsed, each marked with the trigger's time (`capture`
 * in the record). Nothing else passes. A trigger during a capture starts a new one from there.
 * The capture under way is persisted (it goes on after a restart; one begun on a clock stepped
 * back since ends); the buffer is kept in memory only, so that the SD card is not written at
 * full rate, starts empty after a restart, and is let go once its key has been silent for
 * `before` by the agent's clock.
 */
export const capture = operator(schema, (params, context) => {
  const when = stepExpression(params.when, context, 'when');
  const keyOf = keyFunction(params.key);
  const { state, latest } = context;
  const { before, after } = params;
  const maxFuture = context.maxFuture ?? 3_600_000;
  /** The buffer of each key, oldest first. */
  const buffers = new Map<string, Reading[]>();

  return {
    process(reading, emit) {
      if (reading.untimely) return context.count('untimely');
      const key = keyOf(reading);
      const keyState = state.get<KeyState>(key) ?? { truth: false };
      if (keyState.trigger !== undefined && keyState.trigger > context.now() + maxFuture) {
        // begun on a clock stepped back since: it would pass every reading until the old time came again
        context.count('clock_back');
        delete keyState.trigger;
        delete keyState.until;
        state.set(key, keyState);
      }
      const holds = when.judge({ reading, latest }) ?? keyState.truth;
      const rising = holds && !keyState.truth;
      if (holds !== keyState.truth) {
        keyState.truth = holds;
        state.set(key, keyState);
      }
      if (rising) {
        const buffer = buffers.get(key);
        buffers.delete(key);
        if (buffer) for (const held of buffer) if (held.ts >= reading.ts - before) emit({ ...held, capture: reading.ts });
        keyState.trigger = reading.ts;
        keyState.until = reading.ts + after;
        state.set(key, keyState);
      }
      if (keyState.until !== undefined) {
        if (reading.ts <= keyState.until) return emit({ ...reading, capture: keyState.trigger });
        delete keyState.trigger;
        delete keyState.until;
        state.set(key, keyState);
      }
      if (before <= 0) return;
      let buffer = buffers.get(key);
      if (!buffer) buffers.set(key, (buffer = []));
      buffer.push(reading);
      let old = 0;
      while (old < buffer.length && buffer[old].ts < reading.ts - before) old++;
      if (buffer.length - old > params.max_readings) {
        context.count('dropped', buffer.length - old - params.max_readings);
        old = buffer.length - params.max_readings;
      }
      if (old > 0) buffer.splice(0, old);
    },

    tick(now) {
      // a key silent for longer than `before` holds nothing a trigger could still want
      for (const [key, buffer] of buffers) if (buffer.length === 0 || buffer[buffer.length - 1].ts < now - before) buffers.delete(key);
    },
  };
});
