import { duration, keyFields, object, Type, type Static } from '../core/config-kit.js';
import type { Emit, Quality, Reading } from '../core/reading.js';
import { check, operator } from './operator.js';
import { hasPoint, keyFunction, numberOf, ownEntry, rounder, roundDigits, setOwn } from './values.js';
import { checkWindow, Windows } from './window-bounds.js';

export type Fn = 'avg' | 'min' | 'max' | 'sum' | 'count' | 'first' | 'last' | 'delta' | 'integral';

/** `{ point: [fn, ...] }`: the aggregates of a window (or an episode) per point. */
export const windowFunctions = Type.Unsafe<Record<string, Fn[]>>({
  type: 'object',
  minProperties: 1,
  additionalProperties: { type: 'array', minItems: 1, items: { enum: ['avg', 'min', 'max', 'sum', 'count', 'first', 'last', 'delta', 'integral'] } },
});

/** The operator's keys, their loaded type and their defaults. */
export const schema = object({
  size: duration(),
  /** size when absent (tumbling windows) */
  every: Type.Optional(duration()),
  lateness: duration('0s'),
  key: Type.Optional(keyFields),
  functions: windowFunctions,
  /** decimal places of the results (default: as computed) */
  round: roundDigits,
});
type Params = Static<typeof schema>;

/** One point's running aggregates within one window. */
export interface PointAcc {
  n: number;
  sum: number;
  min: number;
  max: number;
  first: number;
  last: number;
  lastTs: number;
  /** kW·h by the trapezoid rule */
  integral: number;
}

interface WindowAcc {
  start: number;
  end: number;
  firstTs: number;
  lastTs: number;
  readings: number;
  /** By point; a point without a value yet is absent (saved state) or undefined. */
  points: Record<string, PointAcc | undefined>;
}

interface KeyState {
  device: string;
  /** The latest ts seen: windows with end + lateness <= it are closed. */
  watermark: number;
  open: WindowAcc[];
}

const HOUR = 3_600_000;

/**
 * `window: { size: 15m, every: 15m, functions: { power_kw: [avg, min, max] }, lateness: 0s }`
 *
 * Tumbling (every = size, the default) or hopping windows per key (default: the device).
 * A window closes when a reading with ts >= end + lateness arrives for its key, or when the
 * agent's clock passes end + lateness + size. It emits one reading: ts = window start, values
 * `<point>_<fn>`. `delta` is last - first and `integral` the trapezoid area per hour (kW → kWh),
 * both over good values. Quality is `partial` when the readings cover under 90% of the window:
 * coverage is the span from the first to the last reading plus one average reading interval
 * (so a single reading is partial; gaps inside the span are not seen). Missing values are not
 * aggregated (counted); readings later than `lateness` for a closed window are dropped
 * (counted); empty windows emit nothing. Open windows are persisted; one that ended while the
 * agent was down is emitted at the first tick after start-up, as `partial`.
 *
 * Time: a reading marked `untimely` (its ts not believed, see core/clock.ts) is not aggregated
 * and does not move the watermark (counted). When a key's watermark lies further ahead of the
 * agent's clock than max_future + lateness + size and an earlier reading comes (the clock that
 * stamped the readings was stepped back), the open windows are emitted `partial` and the
 * watermark starts again from the reading (`clock_back`), instead of every reading being dropped
 * as late until the clock catches up. Empty windows never emit, so a gap of any length costs
 * nothing.
 */
export const window = operator(schema, (params, context) => {
  const every = params.every ?? params.size;
  const problem = checkWindow(params.size, every);
  check(!problem, context, problem ?? '', 'size');
  const { lateness } = params;
  const round = rounder(params.round);
  const windows = new Windows(params.size, every, context.timezone);
  const functions = Object.entries(params.functions);
  const points = functions.map(([point]) => point);
  /** The result names, `<point>_<fn>`, built once rather than per window. */
  const outputs = functions.map(([point, fns]) => ({ point, names: fns.map((fn) => [fn, `${point}_${fn}`] as const) }));
  // Each window's points are spread from this template, which holds every point: this step's
  // windows then share one hidden class (see threshold.ts, newKeyState, for why `{}` plus
  // properties may not), and the per-reading read of a window's point stays on V8's fast path.
  const noPoints: Record<string, PointAcc | undefined> = {};
  for (const point of points) setOwn(noPoints, point, undefined);
  // Likewise the results of a window that saw every point, and their qualities when partial.
  const allResults: Reading['values'] = {};
  const allPartial: Record<string, Quality> = {};
  for (const { names } of outputs) {
    for (const [, name] of names) {
      allResults[name] = 0;
      allPartial[name] = 'partial';
    }
  }
  const keyOf = keyFunction(params.key);
  const { state } = context;
  // open windows must close and be emitted, however long their key stays silent
  state.retain = (keyState) => (keyState as KeyState).open.length > 0;
  /** Keys with open windows, for the clock to close them; read row by row, not all at once. */
  const keys = new Set<string>();
  for (const [key, keyState] of state.entries<KeyState>()) if (keyState.open.length > 0) keys.add(key);
  let restored = keys.size > 0;
  const maxFuture = context.maxFuture ?? HOUR;

  function emitWindow(acc: WindowAcc, device: string, emit: Emit, forcePartial: boolean) {
    if (acc.readings === 0) return;
    const complete = points.every((point) => ownEntry(acc.points, point));
    const values: Reading['values'] = complete ? { ...allResults } : {};
    let any = false;
    for (const { point, names } of outputs) {
      const p = ownEntry(acc.points, point);
      if (!p) continue;
      for (const [fn, name] of names) {
        values[name] = round(result(p, fn));
        any = true;
      }
    }
    if (!any) return;
    const span = acc.lastTs - acc.firstTs;
    const step = acc.readings > 1 ? span / (acc.readings - 1) : 0;
    const partial = forcePartial || (span + step) / (acc.end - acc.start) < 0.9;
    let quality: Record<string, Quality> | undefined;
    if (partial && complete) quality = { ...allPartial };
    else if (partial) {
      quality = {};
      for (const name in values) quality[name] = 'partial';
    }
    emit({ device, ts: acc.start, values, quality });
  }

  /** Emits and removes the key's windows that are over at `time`; returns whether any were. */
  function close(key: string, keyState: KeyState, time: number, emit: Emit, forcePartial = false) {
    let closed = false;
    while (keyState.open.length > 0 && keyState.open[0].end <= time) {
      emitWindow(keyState.open.shift()!, keyState.device, emit, forcePartial);
      closed = true;
    }
    if (closed) state.set(key, keyState);
  }

  return {
    process(reading, emit) {
      if (reading.untimely) {
        context.count('untimely');
        return;
      }
      const key = keyOf(reading);
      let keyState = state.get<KeyState>(key);
      if (!keyState) keyState = { device: reading.device, watermark: -Infinity, open: [] };
      const { ts } = reading;
      if (ts < keyState.watermark && keyState.watermark > context.now() + maxFuture + lateness + params.size) {
        context.count('clock_back');
        close(key, keyState, Infinity, emit, true);
        keyState.watermark = ts;
        state.set(key, keyState);
      }
      if (ts > keyState.watermark) keyState.watermark = ts;
      close(key, keyState, keyState.watermark - lateness, emit);

      let added = false;
      for (const start of windows.startsOf(ts)) {
        const end = windows.end(start);
        if (end + lateness <= keyState.watermark) {
          context.count('late');
          continue;
        }
        let acc: WindowAcc | undefined;
        for (const open of keyState.open) if (open.start === start) acc = open;
        if (!acc) {
          acc = { start, end, firstTs: ts, lastTs: ts, readings: 0, points: { ...noPoints } };
          keyState.open.push(acc);
          keyState.open.sort((a, b) => a.start - b.start);
          // the clock closes what is open (tick drops a key once nothing is)
          keys.add(key);
        }
        for (const point of points) {
          const v = numberOf(reading, point);
          if (v === undefined) {
            if (hasPoint(reading, point)) context.count('missing');
            continue;
          }
          addValue(acc, point, v, ts);
          added = true;
        }
        acc.readings++;
        if (ts < acc.firstTs) acc.firstTs = ts;
        if (ts > acc.lastTs) acc.lastTs = ts;
      }
      if (added || keyState.open.length > 0) state.set(key, keyState);
    },

    numeric: points,

    flush(emit) {
      for (const key of keys) {
        const keyState = state.get<KeyState>(key);
        if (keyState) close(key, keyState, Infinity, emit);
      }
      keys.clear();
    },

    tick(now, emit) {
      const forcePartial = restored;
      restored = false;
      for (const key of keys) {
        const keyState = state.get<KeyState>(key);
        if (!keyState) {
          keys.delete(key);
          continue;
        }
        // After a restart: what ended while the agent was down goes out now, as partial.
        if (forcePartial) close(key, keyState, now, emit, true);
        close(key, keyState, now - lateness - params.size, emit);
        // nothing left to close: the key comes back with its next reading
        if (keyState.open.length === 0) keys.delete(key);
      }
    },
  };
});

export function addValue(acc: { points: Record<string, PointAcc | undefined> }, point: string, v: number, ts: number) {
  const p = ownEntry(acc.points, point);
  if (!p) {
    setOwn(acc.points, point, { n: 1, sum: v, min: v, max: v, first: v, last: v, lastTs: ts, integral: 0 });
    return;
  }
  if (ts > p.lastTs) {
    p.integral += ((p.last + v) / 2) * ((ts - p.lastTs) / HOUR);
    p.last = v;
    p.lastTs = ts;
  }
  p.n++;
  p.sum += v;
  if (v < p.min) p.min = v;
  if (v > p.max) p.max = v;
}

export function result(p: PointAcc, fn: Fn): number {
  switch (fn) {
    case 'avg':
      return p.sum / p.n;
    case 'min':
      return p.min;
    case 'max':
      return p.max;
    case 'sum':
      return p.sum;
    case 'count':
      return p.n;
    case 'first':
      return p.first;
    case 'last':
      return p.last;
    case 'delta':
      return p.last - p.first;
    case 'integral':
      return p.integral;
  }
}
