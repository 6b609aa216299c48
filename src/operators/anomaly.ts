import { keyFields, name, object, oneOf, Type, withDefault, type Static } from '../core/config-kit.js';
import type { Reading } from '../core/reading.js';
import { check, operator } from './operator.js';
import { hasPoint, keyFunction, numberOf, setOwn } from './values.js';

/** The operator's keys, their loaded type and their defaults. */
export const schema = object({
  point: name,
  method: oneOf(['ewma', 'zscore', 'mad', 'rate']),
  /** the score above which a reading is anomalous: 3 (standard deviations), or 1 for `rate` */
  threshold: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
  /** readings that build the statistics before any score: `window`, or 30 for ewma, 1 for rate */
  warmup: Type.Optional(Type.Integer({ minimum: 0, maximum: 1_000_000 })),
  /** the score's name in the reading (default `<point>_score`) */
  output: Type.Optional(name),
  pass: withDefault(oneOf(['anomalies', 'all']), 'anomalies'),
  /** normal readings in a row that clear a raised anomaly */
  clear_after: withDefault(Type.Integer({ minimum: 1, maximum: 1_000_000 }), 3),
  /** ewma: the weight of a new reading */
  alpha: withDefault(Type.Number({ exclusiveMinimum: 0, maximum: 1 }), 0.05),
  /** zscore and mad: the readings the statistics are taken over */
  window: withDefault(Type.Integer({ minimum: 3, maximum: 10_000 }), 100),
  /** rate: the largest normal change, as `5/s`, `300/min` or `10/h` */
  max_rate: Type.Optional(Type.String({ pattern: '^[0-9]+(\\.[0-9]+)?/(s|min|h)$' })),
  key: Type.Optional(keyFields),
});
type Params = Static<typeof schema>;

interface KeyState {
  /** The method the statistics are of: state kept across a config change of `method` starts again. */
  method: string;
  /** Readings scored or learned from. */
  n: number;
  /** ewma: mean and variance; rate: the last value and its time. */
  mean: number;
  variance: number;
  lastTs?: number;
  /** zscore, mad: the last `window` values, oldest first; mad: the same, in order. */
  values?: number[];
  sorted?: number[];
  raised: boolean;
  /** Normal readings in a row since the raise. */
  normals: number;
}

/** A score past this is reported as this: a sensor that never moved, then moved, is as anomalous as it gets. */
const MAX_SCORE = 1e6;
const PER = { s: 1000, min: 60_000, h: 3_600_000 } as const;

/**
 * `anomaly: { point, method: ewma | zscore | mad | rate, threshold, warmup, output, pass, clear_after }`
 *
 * Scores each reading's value of `point` against what the key (default: the device) did before:
 * - `ewma`: |x − mean| / sd, mean and variance exponentially weighted with `alpha`;
 * - `zscore`: |x − mean| / sd over the last `window` values;
 * - `mad`: |x − median| / (1.4826 · MAD) over the last `window` values (median absolute
 *   deviation: the outliers it looks for do not inflate it; when more than half the window
 *   holds one value, the MAD is 0 and 1.2533 · the mean absolute deviation stands in);
 * - `rate`: |Δx / Δt| / `max_rate` between consecutive readings.
 * A reading is scored against the statistics before it, then learned from. The score is added as
 * `output` (default `<point>_score`, rounded to 3 decimals). `pass: anomalies` passes edges like
 * hysteresis: the first reading scoring above `threshold` raises, `clear_after` normal readings in
 * a row clear; `pass: all` passes every reading with its score. No score during the first
 * `warmup` readings; a reading without a usable value is not scored (counted as `missing`;
 * `pass: all` passes it unchanged). The statistics are persisted.
 */
export const anomaly = operator(schema, (params, context) => {
  const { method, point, window } = params;
  const output = params.output ?? `${point}_score`;
  const threshold = params.threshold ?? (method === 'rate' ? 1 : 3);
  const warmup = params.warmup ?? (method === 'ewma' ? 30 : method === 'rate' ? 1 : window);
  check(method !== 'rate' || params.max_rate !== undefined, context, 'method rate needs max_rate (as 5/s, 300/min or 10/h)', 'max_rate');
  let maxRate = 0;
  if (params.max_rate !== undefined) {
    const [amount, unit] = params.max_rate.split('/');
    maxRate = Number(amount) / PER[unit as keyof typeof PER];
    check(maxRate > 0, context, 'max_rate must be more than 0', 'max_rate');
  }
  check(method === 'ewma' || method === 'rate' || warmup <= window, context, `warmup (${warmup}) cannot be more than the window (${window})`, 'warmup');
  const keyOf = keyFunction(params.key, point);
  const { state } = context;
  const all = params.pass === 'all';

  /** The score of `x` against the key's statistics, or undefined while they are not ready. */
  function score(keyState: KeyState, x: number, ts: number): number | undefined {
    if (method === 'rate') {
      if (keyState.lastTs === undefined || ts <= keyState.lastTs || keyState.n < warmup) return undefined;
      return Math.abs((x - keyState.mean) / (ts - keyState.lastTs)) / maxRate;
    }
    if (keyState.n < warmup) return undefined;
    if (method === 'ewma') return deviation(x - keyState.mean, Math.sqrt(keyState.variance));
    const values = keyState.values!;
    if (values.length < 2) return undefined;
    if (method === 'zscore') {
      let sum = 0;
      for (const v of values) sum += v;
      const mean = sum / values.length;
      let squares = 0;
      for (const v of values) squares += (v - mean) * (v - mean);
      return deviation(x - mean, Math.sqrt(squares / (values.length - 1)));
    }
    // mad: the median and the median absolute deviation from the window kept sorted, in O(window)
    const ordered = keyState.sorted!;
    const count = ordered.length;
    const mid = count >> 1;
    const median = count % 2 ? ordered[mid] : (ordered[mid - 1] + ordered[mid]) / 2;
    const mad = medianDeviation(ordered, median);
    if (mad > 0) return deviation(x - median, 1.4826 * mad);
    // more than half the window on one value (a quantized sensor) makes the MAD 0: the mean absolute deviation stands in
    let absolute = 0;
    for (const v of ordered) absolute += Math.abs(v - median);
    return deviation(x - median, 1.2533 * (absolute / count));
  }

  function learn(keyState: KeyState, x: number, ts: number) {
    if (method === 'rate') {
      keyState.n++;
      keyState.mean = x;
      keyState.lastTs = ts;
      return;
    }
    // a value whose square overflows (a float64 register read as garbage) would make the
    // statistics infinite for good: it is scored, not learned from
    if (!Number.isFinite(x * x * window)) return context.count('not_learned');
    keyState.n++;
    if (method === 'ewma') {
      if (keyState.n === 1) keyState.mean = x;
      const d = x - keyState.mean;
      keyState.mean += params.alpha * d;
      keyState.variance = (1 - params.alpha) * (keyState.variance + params.alpha * d * d);
      return;
    }
    const values = (keyState.values ??= []);
    values.push(x);
    const leaving = values.length > window ? values.shift() : undefined;
    if (method !== 'mad') {
      // a window made smaller since the state was saved
      if (values.length > window) values.splice(0, values.length - window);
      return;
    }
    const ordered = (keyState.sorted ??= []);
    if (leaving !== undefined) ordered.splice(lowerBound(ordered, leaving), 1);
    ordered.splice(lowerBound(ordered, x), 0, x);
    if (values.length > window || ordered.length !== values.length) {
      values.splice(0, values.length - window);
      keyState.sorted = [...values].sort((a, b) => a - b);
    }
  }

  return {
    numeric: [point],

    process(reading, emit) {
      const x = numberOf(reading, point);
      if (x === undefined) {
        if (hasPoint(reading, point)) context.count('missing');
        if (all) emit(reading);
        return;
      }
      const key = keyOf(reading);
      let keyState = state.get<KeyState>(key);
      if (keyState?.method !== method) keyState = { method, n: 0, mean: 0, variance: 0, raised: false, normals: 0 };
      const computed = score(keyState, x, reading.ts);
      // statistics that overflowed give no number: as unusual as a score gets
      const s = computed === undefined || Number.isFinite(computed) ? computed : MAX_SCORE;
      learn(keyState, x, reading.ts);
      state.set(key, keyState);
      if (s === undefined) {
        if (all) emit(reading);
        return;
      }
      const scored: Reading = { ...reading, values: { ...reading.values } };
      setOwn(scored.values, output, Math.round(Math.min(s, MAX_SCORE) * 1000) / 1000);
      const anomalous = !(s <= threshold);
      if (anomalous) context.count('anomalous');
      if (all) return emit(scored);
      if (anomalous) {
        keyState.normals = 0;
        if (keyState.raised) return;
        keyState.raised = true;
        return emit({ ...scored, edge: 'raise' });
      }
      if (keyState.raised && ++keyState.normals >= params.clear_after) {
        keyState.raised = false;
        keyState.normals = 0;
        emit({ ...scored, edge: 'clear' });
      }
    },
  };
});

/** |d| / sd, where a deviation from a value that never varied is as large as a score gets. */
function deviation(d: number, sd: number): number {
  if (d === 0) return 0;
  return sd > 0 ? Math.abs(d) / sd : MAX_SCORE;
}

/** The first index of `sorted` whose value is not below `x`. */
function lowerBound(sorted: number[], x: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * The median of |v − median| over a sorted array, without sorting the deviations: walking out
 * from the median, the deviations on each side grow, so the smallest ones are merged in order.
 */
function medianDeviation(sorted: number[], median: number): number {
  const n = sorted.length;
  let right = lowerBound(sorted, median);
  let left = right - 1;
  let previous = 0;
  // the deviations in ascending order up to the middle one(s)
  for (let taken = 0; taken <= n >> 1; taken++) {
    const fromLeft = left >= 0 ? median - sorted[left] : Infinity;
    const fromRight = right < n ? sorted[right] - median : Infinity;
    const next = fromLeft <= fromRight ? fromLeft : fromRight;
    if (fromLeft <= fromRight) left--;
    else right++;
    if (taken === (n >> 1) - 1) previous = next;
    if (taken === n >> 1) return n % 2 ? next : (previous + next) / 2;
  }
  return 0;
}
