import { duration, keyFields, name, object, oneOf, Type, withDefault, type Static } from '../core/config-kit.js';
import type { Reading } from '../core/reading.js';
import { operator } from './operator.js';
import { hasPoint, keyFunction, numberOf, setOwn } from './values.js';

/** The operator's keys, their loaded type and their defaults. */
export const schema = object({
  point: name,
  for: duration(),
  epsilon: withDefault(Type.Number({ minimum: 0 }), 0),
  pass: withDefault(oneOf(['edges', 'all']), 'edges'),
  key: Type.Optional(keyFields),
});
type Params = Static<typeof schema>;

interface KeyState {
  /** The value the readings since `since` have stayed within `epsilon` of. */
  anchor: number;
  since: number;
  raised: boolean;
}

/**
 * `flatline: { point: flow, for: 10m, epsilon: 0, pass: edges | all, key: [device] }`
 *
 * A stuck sensor, per key (default: the device): raises when the point's value has stayed
 * within `epsilon` of where it was for `for` (the reading that shows it passes as the raising
 * edge), and clears at the first reading that moves further (the clearing edge). While raised,
 * the point's quality is `stale`. `pass: edges` (the default) passes the edges only, for
 * `event` and `action`; `pass: all` passes every reading, stale ones marked. It needs readings
 * to judge: a sensor that stops sending is `absence`'s. Missing values are not judged (counted);
 * state is persisted.
 */
export const flatline = operator(schema, (params, context) => {
  const { point, epsilon } = params;
  const keyOf = keyFunction(params.key, point);
  const { state } = context;
  const maxFuture = context.maxFuture ?? 3_600_000;
  const all = params.pass === 'all';

  const stale = (reading: Reading): Reading => {
    const quality = { ...reading.quality };
    setOwn(quality, point, 'stale');
    return { ...reading, quality };
  };

  return {
    numeric: [point],

    process(reading, emit) {
      const x = numberOf(reading, point);
      if (x === undefined || reading.untimely) {
        if (reading.untimely) context.count('untimely');
        else if (hasPoint(reading, point)) context.count('missing');
        if (all) emit(reading);
        return;
      }
      const key = keyOf(reading);
      let keyState = state.get<KeyState>(key);
      if (!keyState || keyState.since > context.now() + maxFuture) {
        if (keyState) context.count('clock_back');
        keyState = { anchor: x, since: reading.ts, raised: keyState?.raised ?? false };
        state.set(key, keyState);
      }
      if (Math.abs(x - keyState.anchor) > epsilon) {
        const wasRaised = keyState.raised;
        keyState.anchor = x;
        keyState.since = reading.ts;
        keyState.raised = false;
        state.set(key, keyState);
        if (wasRaised) emit({ ...reading, edge: 'clear' });
        else if (all) emit(reading);
        return;
      }
      if (!keyState.raised && reading.ts - keyState.since >= params.for) {
        keyState.raised = true;
        state.set(key, keyState);
        return emit({ ...stale(reading), edge: 'raise' });
      }
      if (all) emit(keyState.raised ? stale(reading) : reading);
    },
  };
});
