import { keyFields, object, text, Type, type Static } from '../core/config-kit.js';
import type { Emit, Quality, Reading } from '../core/reading.js';
import { operator } from './operator.js';
import { stepExpression, verdict } from './expression.js';
import { hasPoint, keyFunction, numberOf, ownEntry, rounder, roundDigits, setOwn } from './values.js';
import { addValue, result, windowFunctions, type PointAcc } from './window.js';

/** The operator's keys, their loaded type and their defaults. */
export const schema = object({
  when: text,
  functions: windowFunctions,
  key: Type.Optional(keyFields),
  /** decimal places of the results (default: as computed) */
  round: roundDigits,
});
type Params = Static<typeof schema>;

interface KeyState {
  /** The latest reading judged: an older one (late) is not judged. */
  lastTs: number;
  open?: Episode;
}

interface Episode {
  device: string;
  start: number;
  lastTs: number;
  readings: number;
  points: Record<string, PointAcc>;
}

/**
 * `episode: { when: "running == 1", functions: { power_kw: [integral, max] }, key: [device] }`
 *
 * A state window per key (default: the device): while `when` holds, the readings' values are
 * aggregated as `window` does (`avg min max sum count first last delta integral`, over good
 * values); at the first reading for which it is false, one reading passes: `ts` = the episode's
 * start, `duration_s` (start to that reading), and `<point>_<fn>`. A reading that cannot judge
 * `when` (a missing value, a failed read) neither extends nor ends an episode (counted as
 * `missing`); a reading older than the key's latest is late and not judged (`late`). An open
 * episode is persisted, so a run that spans a restart is one episode; one begun by a clock
 * stepped back since is passed as it stands, `partial`, and a new one starts.
 */
export const episode = operator(schema, (params, context) => {
  const when = stepExpression(params.when, context, 'when');
  const functions = Object.entries(params.functions);
  const round = rounder(params.round);
  const keyOf = keyFunction(params.key);
  const { state } = context;
  const maxFuture = context.maxFuture ?? 3_600_000;
  // an open episode is owed to the user, however long it runs
  state.retain = (keyState) => (keyState as KeyState).open !== undefined;

  function close(open: Episode, end: number, emit: Emit, partial = false) {
    const values: Reading['values'] = { duration_s: Math.max(0, end - open.start) / 1000 };
    for (const [point, fns] of functions) {
      const p = ownEntry(open.points, point);
      if (p) for (const fn of fns) setOwn(values, `${point}_${fn}`, round(result(p, fn)));
    }
    let quality: Record<string, Quality> | undefined;
    if (partial) {
      quality = {};
      for (const name in values) quality[name] = 'partial';
    }
    emit({ device: open.device, ts: open.start, values, quality });
  }

  return {
    numeric: functions.map(([point]) => point),

    flush(emit) {
      const held = [...state.entries<KeyState>()];
      for (const [key, keyState] of held) {
        if (!keyState.open) continue;
        close(keyState.open, keyState.open.lastTs, emit, true);
        state.set(key, { lastTs: keyState.lastTs });
      }
    },

    process(reading, emit) {
      const holds = verdict(when, reading, context);
      if (holds === undefined) return;
      const key = keyOf(reading);
      const keyState = state.get<KeyState>(key) ?? { lastTs: -Infinity };
      if (keyState.lastTs > context.now() + maxFuture) {
        // begun on a clock stepped back since: passed as it stands, and time starts again
        context.count('clock_back');
        if (keyState.open) close(keyState.open, keyState.open.lastTs, emit, true);
        keyState.open = undefined;
        keyState.lastTs = -Infinity;
      } else if (reading.ts < keyState.lastTs) {
        return context.count('late');
      }
      keyState.lastTs = reading.ts;
      if (!holds) {
        if (keyState.open) {
          close(keyState.open, reading.ts, emit);
          keyState.open = undefined;
          state.set(key, keyState);
        }
        return;
      }
      const open = (keyState.open ??= { device: reading.device, start: reading.ts, lastTs: reading.ts, readings: 0, points: {} });
      for (const [point] of functions) {
        const v = numberOf(reading, point);
        if (v !== undefined) addValue(open, point, v, reading.ts);
        else if (hasPoint(reading, point)) context.count('missing');
      }
      open.readings++;
      if (reading.ts > open.lastTs) open.lastTs = reading.ts;
      state.set(key, keyState);
    },
  };
});
