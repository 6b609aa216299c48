import { keyFields, object, text, Type, withDefault, type Static } from '../core/config-kit.js';
import { operator } from './operator.js';
import { stepExpression } from './expression.js';
import { keyFunction } from './values.js';

/** The operator's keys, their loaded type and their defaults. */
export const schema = object({ emit: text, release: Type.Optional(text), key: Type.Optional(keyFields), on_release: withDefault(Type.Boolean(), false) });
type Params = Static<typeof schema>;

/**
 * `hysteresis: { emit: "rpm > 100", release: "rpm < 80", key: [device], on_release: false }`
 *
 * Per key, ARMED or SUPPRESSED (persisted). ARMED: a reading for which `emit` is true passes
 * as a raising edge and the key becomes SUPPRESSED. SUPPRESSED: readings are dropped; one for
 * which `release` is true re-arms, and passes as a clearing edge when `on_release` is true.
 * Without `release`, every reading for which `emit` is true passes as a raising edge.
 */
export const hysteresis = operator(schema, (params, context) => {
  const raise = stepExpression(params.emit, context, 'emit');
  const release = params.release === undefined ? undefined : stepExpression(params.release, context, 'release');
  const keyOf = keyFunction(params.key);
  const { state, latest } = context;
  const SUPPRESSED = 1;

  return {
    process(reading, emit) {
      const scope = { reading, latest };
      if (!release) {
        if (raise.test(scope)) emit({ ...reading, edge: 'raise' });
        return;
      }
      const key = keyOf(reading);
      if (state.get<number>(key) === SUPPRESSED) {
        if (release.test(scope)) {
          state.delete(key);
          if (params.on_release) emit({ ...reading, edge: 'clear' });
        }
        return;
      }
      if (raise.test(scope)) {
        state.set(key, SUPPRESSED);
        emit({ ...reading, edge: 'raise' });
      }
    },
  };
});
