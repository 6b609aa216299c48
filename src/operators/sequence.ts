import { duration, keyFields, object, oneOf, text, Type, withDefault, type Static } from '../core/config-kit.js';
import type { Emit, Reading } from '../core/reading.js';
import type { Expression } from '../expr/expression.js';
import { operator } from './operator.js';
import { isNews, stepExpression } from './expression.js';
import { keyFunction } from './values.js';

/** The operator's keys, their loaded type and their defaults. */
export const schema = object({
  steps: Type.Array(text, { minItems: 2, maxItems: 32 }),
  within: duration(),
  emit: withDefault(oneOf(['matched', 'timeout']), 'matched'),
  key: Type.Optional(keyFields),
});
type Params = Static<typeof schema>;

interface KeyState {
  device: string;
  /** The step awaited next: 0 while no sequence is under way. */
  at: number;
  /** When the first step became true. */
  started: number;
  /** Each step's condition at the key's last reading: a step matches when it becomes true. */
  truth: boolean[];
  /** `emit: timeout`: a timeout passed and has not been cleared yet. */
  raised: boolean;
  /** The latest reading judged: an older one (late) is not judged. */
  lastTs?: number;
  last: Pick<Reading, 'values' | 'quality'>;
}

/**
 * `sequence: { steps: ["running == 1", "flow >= 1"], within: 30s, emit: timeout, key: [device] }`
 *
 * Per key (default: the device), the steps' conditions must become true (change from false to
 * true, on the key's readings) in order, all within `within` of the first. `emit: matched`
 * (the default) passes the reading that completes a sequence, as a raising edge. `emit:
 * timeout` raises when the first step matched and the rest did not follow in time ("valve
 * commanded open, no flow within 30 s"), stamped `start + within`, with the key's latest
 * reading; it clears when the first step's condition turns false or the last one becomes true.
 * A step may match on the same reading as the one before it. A reading older than the key's
 * latest is late and not judged (`late`); one without any good value (a failed read) changes
 * nothing (`missing`), and a step that cannot be judged keeps its last state. Driven by the
 * agent's clock (replay: the data's); state is persisted, so a sequence under way survives a
 * restart.
 */
export const sequence = operator(schema, (params, context) => {
  const steps: Expression[] = params.steps.map((source) => stepExpression(source, context, 'steps'));
  const keyOf = keyFunction(params.key);
  const { state, latest } = context;
  const { within } = params;
  const maxFuture = context.maxFuture ?? 3_600_000;
  const onTimeout = params.emit === 'timeout';
  /** Keys with a sequence under way, for the clock. */
  const underWay = new Set<string>();
  for (const [key, keyState] of state.entries<KeyState>()) if (keyState.at > 0) underWay.add(key);
  state.retain = (keyState) => (keyState as KeyState).at > 0 || (keyState as KeyState).raised;
  /** Which steps became true at the reading being judged (one array, reused). */
  const rose = steps.map(() => false);

  function timeOut(key: string, keyState: KeyState, emit: Emit) {
    const ts = keyState.started + within;
    keyState.at = 0;
    underWay.delete(key);
    state.set(key, keyState);
    if (!onTimeout) return context.count('timeout');
    keyState.raised = true;
    emit({ device: keyState.device, ts, values: keyState.last.values, quality: keyState.last.quality, edge: 'raise' });
  }

  return {
    process(reading, emit) {
      if (!isNews(reading, context)) return;
      const key = keyOf(reading);
      let keyState = state.get<KeyState>(key);
      // `last` alone changing is not worth a write: it is saved with the next change
      let changed = !keyState;
      keyState ??= { device: reading.device, at: 0, started: 0, truth: steps.map(() => false), raised: false, last: reading };
      keyState.device = reading.device;
      keyState.last = { values: reading.values, quality: reading.quality };
      if (keyState.at > 0 && keyState.started > context.now() + maxFuture) {
        // begun by a clock that was stepped back since: it cannot time out right, so it ends here
        context.count('clock_back');
        keyState.at = 0;
        keyState.lastTs = undefined;
        underWay.delete(key);
        changed = true;
      } else if (keyState.lastTs !== undefined && reading.ts < keyState.lastTs) {
        return context.count('late');
      }
      keyState.lastTs = reading.ts;
      if (keyState.at > 0 && reading.ts >= keyState.started + within) timeOut(key, keyState, emit);

      const scope = { reading, latest };
      for (let i = 0; i < steps.length; i++) {
        // a step that cannot be judged (a missing value) keeps its last state
        const holds = steps[i].judge(scope) ?? keyState.truth[i];
        rose[i] = holds && !keyState.truth[i];
        if (holds !== keyState.truth[i]) {
          keyState.truth[i] = holds;
          changed = true;
        }
      }
      if (keyState.at === 0 && rose[0]) {
        keyState.at = 1;
        keyState.started = reading.ts;
        underWay.add(key);
      }
      while (keyState.at > 0 && keyState.at < steps.length && rose[keyState.at]) keyState.at++;
      if (keyState.at === steps.length) {
        keyState.at = 0;
        underWay.delete(key);
        if (!onTimeout) emit({ ...reading, edge: 'raise' });
      }
      if (keyState.raised && (!keyState.truth[0] || rose[steps.length - 1])) {
        keyState.raised = false;
        changed = true;
        emit({ ...reading, edge: 'clear' });
      }
      if (changed) state.set(key, keyState);
    },

    tick(now, emit) {
      for (const key of underWay) {
        const keyState = state.get<KeyState>(key);
        if (!keyState || keyState.at === 0) underWay.delete(key);
        else if (now >= keyState.started + within) timeOut(key, keyState, emit);
      }
    },
  };
});
