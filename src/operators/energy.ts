import { duration, keyFields, name, object, oneOf, Type, withDefault, type Static } from '../core/config-kit.js';
import type { Emit } from '../core/reading.js';
import { check, operator } from './operator.js';
import { hasPoint, keyFunction, numberOf, rounder, roundDigits } from './values.js';
import { checkWindow, Windows } from './window-bounds.js';

/** The operator's keys, their loaded type and their defaults. */
export const schema = object({
  method: oneOf(['meter-reading', 'instant-power', 'average-power']),
  point: name,
  window: duration(),
  output: name,
  scale: withDefault(Type.Number(), 1),
  max_rate: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
  rollover: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
  /** default 15m, 1d for meter-reading */
  max_gap: Type.Optional(duration()),
  key: Type.Optional(keyFields),
  /** decimal places of the kWh (default: as computed) */
  round: roundDigits,
});
type Params = Static<typeof schema>;

interface EnergyWindow {
  start: number;
  end: number;
  kwh: number;
  /** ms of the window that readings covered */
  covered: number;
  /** a gap, a reset or energy that arrived after its own window closed */
  partial?: boolean;
  estimated?: boolean;
  /** average-power: the sum and count of the averages that fell in the window */
  powerSum?: number;
  powers?: number;
}

interface KeyState {
  device: string;
  /** The previous reading: [ts, value]. */
  last?: [number, number];
  open: EnergyWindow[];
  /** The end of the latest window emitted. */
  closedUntil?: number;
}

const HOUR = 3_600_000;
const DAY = 86_400_000;
/** A step spanning more windows than this is a gap, whatever its length: the work per reading stays bounded. */
const MAX_SPREAD_WINDOWS = 1000;

/**
 * `energy: { method, point, window: 15m, output, scale, max_rate, rollover, max_gap }`: energy
 * per wall-clock window, emitted as a reading of its own (ts = window start, value `output` in
 * kWh) when a reading at or after the window's end arrives, or when the agent's clock passes
 * end + window. Readings pass on unchanged, so later steps and the upstream still see them.
 *
 * - meter-reading: each step of a cumulative counter adds (v2 - v1) × scale, split by time
 *   over the windows it spans. A step whose rate is outside [0, max_rate] is rejected (counted;
 *   the baseline moves to v2). A decrease from near `rollover` (top 10%) to near 0 (bottom 10%)
 *   is a rollover: R - v1 + v2. Any other decrease is a meter reset: v2 is counted (the new meter
 *   from zero) and the window is flagged `estimated`. Δt ≤ 0 is dropped.
 *   A step longer than max_gap (for this method default 1d) is a gap: a flat profile over it
 *   would be made up, so its energy is not spread but goes to the window of v2, marked `partial`
 *   (no kWh lost), and the windows in between emit nothing.
 * - instant-power: the trapezoid (P1 + P2)/2 × Δh of a kW point, split at window boundaries with
 *   the power interpolated there. A gap longer than max_gap (default 15m) adds nothing and marks
 *   the windows at its two ends `partial` (those between held no reading: they emit nothing).
 * - Either: a step spanning more than 1,000 windows is a gap too, so that a step of the clock by
 *   a year costs what a short gap costs (not 35,040 windows of 15 minutes).
 * - average-power: each reading is the average power of the window its ts falls in; energy is
 *   the mean of those averages × the window's length in hours.
 *
 * A window whose readings cover under 90% of it is `partial`. Energy for a window that already
 * closed (the device came back after the clock closed it) goes to the next window still open,
 * which is marked `partial`, so that no kWh is lost or counted twice. The previous reading and the
 * open windows are persisted: a restart continues the count where it stopped.
 *
 * Time: a reading marked `untimely` (its ts not believed, see core/clock.ts) passes without
 * touching the state. When a key's state lies further ahead of the agent's clock than
 * max_future + window and an earlier reading comes (the clock was stepped back after it stamped
 * them), the open windows are emitted `partial`, a meter's increase since the previous reading
 * goes to the window of the new one (`partial`), and counting starts again from it (`clock_back`).
 */
export const energy = operator(schema, (params, context) => {
  const problem = checkWindow(params.window, params.window);
  check(!problem, context, problem ?? '', 'window');
  check(params.max_gap === undefined || params.max_gap > 0, context, 'max_gap must be positive', 'max_gap');
  const { method, point, output } = params;
  const { scale } = params;
  // a meter's counter may be read rarely (a monthly read is a read): its gaps default to a day
  const round = rounder(params.round);
  const maxGap = params.max_gap ?? (method === 'meter-reading' ? DAY : 900_000);
  const maxSpread = Math.min(maxGap, MAX_SPREAD_WINDOWS * params.window);
  const maxFuture = context.maxFuture ?? HOUR;
  const windows = new Windows(params.window, params.window, context.timezone);
  const keyOf = keyFunction(params.key, point);
  const { state } = context;
  // open windows hold kWh not yet emitted, and a meter's baseline the energy since: never pruned
  state.retain = (keyState) => (keyState as KeyState).open.length > 0 || (method === 'meter-reading' && (keyState as KeyState).last !== undefined);
  /** Keys with open windows, for the clock to close them; read row by row, not all at once. */
  const keys = new Set<string>();
  for (const [key, keyState] of state.entries<KeyState>()) if (keyState.open.length > 0) keys.add(key);

  function windowAt(keyState: KeyState, start: number): EnergyWindow {
    const { open } = keyState;
    // from the latest: time mostly moves forward, so the window is the last one or a new last one
    let i = open.length - 1;
    while (i >= 0 && open[i].start > start) i--;
    if (i >= 0 && open[i].start === start) return open[i];
    const w: EnergyWindow = { start, end: windows.end(start), kwh: 0, covered: 0 };
    open.splice(i + 1, 0, w);
    return w;
  }

  /** Marks the (still open) window of `ts` partial, adding `kwh`; a closed one takes nothing more. */
  function markPartial(keyState: KeyState, ts: number, kwh = 0) {
    const start = windows.startOf(ts);
    if (isClosed(keyState, windows.end(start))) return;
    const w = windowAt(keyState, start);
    w.partial = true;
    w.kwh += kwh;
  }

  const isClosed = (keyState: KeyState, end: number) => keyState.closedUntil !== undefined && end <= keyState.closedUntil;

  /**
   * Splits [t1, t2] at window boundaries; `energyOf(a, b)` gives the kWh of a piece. Pieces
   * whose window is already out are carried into the next piece's window, marked partial.
   */
  function distribute(keyState: KeyState, t1: number, t2: number, energyOf: (a: number, b: number) => number, mark?: 'partial' | 'estimated') {
    let carried = 0;
    let late = false;
    for (let a = t1; a < t2; ) {
      const start = windows.startOf(a);
      const end = windows.end(start);
      const b = Math.min(t2, end);
      const kwh = energyOf(a, b);
      if (isClosed(keyState, end) && b < t2) {
        carried += kwh;
        late = true;
        context.count('late');
      } else {
        const w = windowAt(keyState, start);
        w.kwh += kwh + carried;
        if (mark !== 'partial') w.covered += b - a;
        if (mark === 'partial' || late) w.partial = true;
        if (mark === 'estimated') w.estimated = true;
        carried = 0;
        late = false;
      }
      a = b;
    }
  }

  function emitWindow(w: EnergyWindow, device: string, emit: Emit) {
    let kwh = w.kwh;
    if (method === 'average-power') {
      if (!w.powers) return;
      kwh = (w.powerSum! / w.powers) * ((w.end - w.start) / HOUR);
    } else if (w.covered === 0 && kwh === 0) return;
    const partial = w.partial || (method !== 'average-power' && w.covered < 0.9 * (w.end - w.start));
    const quality = partial ? 'partial' : w.estimated ? 'estimated' : undefined;
    emit({ device, ts: w.start, values: { [output]: round(kwh) }, quality: quality ? { [output]: quality } : undefined });
  }

  function close(key: string, keyState: KeyState, time: number, emit: Emit) {
    let closed = false;
    while (keyState.open.length > 0 && keyState.open[0].end <= time) {
      const w = keyState.open.shift()!;
      keyState.closedUntil = Math.max(keyState.closedUntil ?? -Infinity, w.end);
      emitWindow(w, keyState.device, emit);
      closed = true;
    }
    if (closed) state.set(key, keyState);
  }

  function step(keyState: KeyState, t2: number, v2: number) {
    if (method === 'average-power') {
      const w = windowAt(keyState, windows.startOf(t2));
      if (isClosed(keyState, w.end)) w.partial = true;
      w.powerSum = (w.powerSum ?? 0) + v2;
      w.powers = (w.powers ?? 0) + 1;
      return;
    }
    const last = keyState.last;
    keyState.last = [t2, v2];
    if (!last) return;
    const [t1, v1] = last;
    if (t2 <= t1) {
      keyState.last = last;
      context.count('dropped');
      return;
    }
    const hours = (t2 - t1) / HOUR;
    const gap = t2 - t1 > maxSpread;
    if (method === 'instant-power') {
      if (gap) {
        context.count('gaps');
        markPartial(keyState, t1);
        markPartial(keyState, t2);
        return;
      }
      const power = (t: number) => v1 + ((v2 - v1) * (t - t1)) / (t2 - t1);
      distribute(keyState, t1, t2, (a, b) => ((power(a) + power(b)) / 2) * ((b - a) / HOUR));
      return;
    }
    // meter-reading
    let delta = v2 - v1;
    let mark: 'estimated' | undefined;
    if (delta < 0) {
      const r = params.rollover;
      if (r !== undefined && v1 >= 0.9 * r && v2 <= 0.1 * r) {
        delta = r - v1 + v2;
        context.count('rollovers');
      } else {
        delta = v2;
        mark = 'estimated';
        context.count('resets');
      }
    }
    const kwh = delta * scale;
    const rate = kwh / hours;
    if (rate < 0 || (params.max_rate !== undefined && rate > params.max_rate)) {
      context.count('rejected');
      return;
    }
    if (gap) {
      context.count('gaps');
      markPartial(keyState, t1);
      markPartial(keyState, t2, kwh);
      return;
    }
    distribute(keyState, t1, t2, (a, b) => (kwh * (b - a)) / (t2 - t1), mark);
  }

  /** The latest instant the key's state has seen. */
  const latestOf = (keyState: KeyState) => Math.max(keyState.last?.[0] ?? -Infinity, keyState.closedUntil ?? -Infinity, keyState.open.at(-1)?.start ?? -Infinity);

  /** The clock that stamped the key's state was stepped back: close what is open and count again from `reading`. */
  function startAgain(key: string, keyState: KeyState, t2: number, v2: number, emit: Emit) {
    context.count('clock_back');
    for (const w of keyState.open) w.partial = true;
    close(key, keyState, Infinity, emit);
    keyState.closedUntil = undefined;
    const last = keyState.last;
    keyState.last = undefined;
    if (method === 'meter-reading' && last && v2 >= last[1]) markPartial(keyState, t2, (v2 - last[1]) * scale);
  }

  return {
    process(reading, emit) {
      if (!hasPoint(reading, point) || reading.untimely) return emit(reading);
      const v = numberOf(reading, point);
      if (v === undefined) {
        context.count('missing');
        return emit(reading);
      }
      const key = keyOf(reading);
      let keyState = state.get<KeyState>(key);
      if (!keyState) keyState = { device: reading.device, open: [] };
      keys.add(key);
      const latest = latestOf(keyState);
      if (reading.ts < latest && latest > context.now() + maxFuture + params.window) startAgain(key, keyState, reading.ts, v, emit);
      step(keyState, reading.ts, v);
      state.set(key, keyState);
      close(key, keyState, reading.ts, emit);
      emit(reading);
    },

    numeric: [point],

    flush(emit) {
      for (const key of keys) {
        const keyState = state.get<KeyState>(key);
        if (keyState) close(key, keyState, Infinity, emit);
      }
      keys.clear();
    },

    tick(now, emit) {
      for (const key of keys) {
        const keyState = state.get<KeyState>(key);
        if (keyState) close(key, keyState, now - params.window, emit);
        // nothing left to close: the key comes back with its next reading
        if (!keyState || keyState.open.length === 0) keys.delete(key);
      }
    },
  };
});
