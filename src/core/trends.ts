import type { Quality, Reading, Value } from './reading.js';

/**
 * Quality as stored in a trend slot: 0 marks a slot that holds nothing. Ordered by how much a
 * person must see it: within one slot the most notable quality of its readings stays, so that a
 * good reading does not hide the bad one a moment before it.
 */
export const QUALITY_CODES = ['', 'good', 'late', 'partial', 'stale', 'estimated', 'interpolated', 'bad'] as const;
const CODE: Record<Quality, number> = { good: 1, late: 2, partial: 3, stale: 4, estimated: 5, interpolated: 6, bad: 7 };

export interface TrendOptions {
  /** How far back the trends reach (the status page shows 15 minutes). */
  spanMs: number;
  /** One slot per step: readings within one step share a slot, the last value wins. */
  stepMs: number;
  /** Series kept at most; points seen past it are not trended (counted in `untracked`). */
  maxSeries: number;
}

export const TREND_DEFAULTS: TrendOptions = { spanMs: 15 * 60_000, stepMs: 1000, maxSeries: 500 };

/** One series as the API serves it: slot times (ms, the start of each step), values (null: none), quality codes. */
export interface TrendData {
  t: number[];
  v: (number | null)[];
  q: number[];
}

/**
 * A ring of fixed size for one point: slot i holds the step `step % slots === i`, with the
 * step number beside it so that a slot left over from a lap ago is told from a current one,
 * and the second it was last written (a window's record comes a minute after its time: the
 * page asks for what was written since it last asked, whatever its time). Memory is fixed when
 * the ring is made (17 bytes a slot) and never grows with time.
 */
export class TrendRing {
  /** The step (ts / stepMs, floored) each slot holds; 0: never written. */
  readonly steps: Uint32Array;
  /** When each slot was last written, in epoch seconds. */
  readonly written: Uint32Array;
  readonly values: Float64Array;
  readonly qualities: Uint8Array;

  constructor(
    readonly slots: number,
    private readonly stepMs: number,
  ) {
    // steps are kept as 32-bit numbers: whole seconds at least (good until 2106)
    if (stepMs < 1000) throw new RangeError(`a trend step of ${stepMs} ms: at least 1000`);
    this.steps = new Uint32Array(slots);
    this.written = new Uint32Array(slots);
    this.values = new Float64Array(slots);
    this.qualities = new Uint8Array(slots);
  }

  /** Bytes held by the ring's arrays. */
  get bytes(): number {
    return this.steps.byteLength + this.written.byteLength + this.values.byteLength + this.qualities.byteLength;
  }

  /** `value` NaN: no value (a gap). `now`: the wall clock (ms). */
  put(ts: number, value: number, quality: number, now = Date.now()): void {
    const step = Math.floor(ts / this.stepMs);
    writeSlot(this, step, step % this.slots, Math.floor(now / 1000), value, quality);
  }

  /**
   * The slots whose time is from `from` to `to` (ms), oldest first, appended to `into`; with
   * `writtenSince` (ms), only those written at that second or later.
   */
  read(from: number, to: number, into: TrendData, writtenSince?: number): TrendData {
    const first = Math.max(Math.floor(from / this.stepMs), Math.floor(to / this.stepMs) - this.slots + 1);
    const last = Math.floor(to / this.stepMs);
    const since = writtenSince === undefined ? 0 : Math.floor(writtenSince / 1000);
    for (let step = first; step <= last; step++) {
      const slot = step % this.slots;
      if (this.steps[slot] !== step || this.written[slot] < since) continue;
      const value = this.values[slot];
      const quality = this.qualities[slot];
      into.t.push(step * this.stepMs);
      // a step with a bad reading in it is a gap, whatever came after in the same step
      into.v.push(Number.isNaN(value) || quality === CODE.bad ? null : value);
      into.q.push(quality);
    }
    return into;
  }
}

/**
 * A few stores into a ring's typed arrays, nothing allocated: a new step takes the slot, the
 * same step again keeps the latest value and the most notable quality.
 */
function writeSlot(ring: TrendRing, step: number, slot: number, second: number, value: number, quality: number): void {
  ring.written[slot] = second;
  if (ring.steps[slot] !== step) {
    ring.steps[slot] = step;
    ring.values[slot] = value;
    ring.qualities[slot] = quality;
    return;
  }
  if (!Number.isNaN(value)) ring.values[slot] = value;
  if (quality > ring.qualities[slot]) ring.qualities[slot] = quality;
}

/** The rings of the points of one source (a device, or one device's records out of a stream). */
export type Rings = Map<string, TrendRing>;

/**
 * The recent history of every point, for the status page: device readings as they enter the
 * agent, and the records streams send upstream. Appending is the only work on a reading's
 * path, and it allocates nothing once a point has been seen: a map lookup per point and a few
 * stores into typed arrays (see TrendRing). Memory is bounded: `maxSeries` rings at most, each
 * of a fixed size.
 */
export class Trends {
  readonly options: TrendOptions;
  private readonly slots: number;
  /** device → point → ring */
  private readonly devices = new Map<string, Rings>();
  /** stream → device → point → ring */
  private readonly streams = new Map<string, Map<string, Rings>>();
  private series = 0;
  /** Points not trended because `maxSeries` was reached. */
  untracked = 0;
  /** The outbox per upstream over the same span (sampled by the management API while it runs). */
  readonly outbox: OutboxHistory;

  constructor(options: Partial<TrendOptions> = {}) {
    this.options = { ...TREND_DEFAULTS, ...options };
    this.slots = Math.ceil(this.options.spanMs / this.options.stepMs) + 1;
    this.outbox = new OutboxHistory(this.options);
  }

  /** Bytes one point's ring holds (fixed, whatever the time it runs). */
  get bytesPerSeries(): number {
    return this.slots * (4 + 4 + 8 + 1);
  }

  get seriesCount(): number {
    return this.series;
  }

  /**
   * A device's reading, as it enters the agent. The agent does not call this: LatestValues.update
   * goes over the reading's points already and hands each one here (`begin`, then `point`), so
   * that the reading is gone over once.
   */
  append(reading: Reading): void {
    const rings = this.begin(reading);
    if (!rings) return;
    const { values, quality } = reading;
    for (const name in values) this.point(rings, name, values[name], (quality && Object.hasOwn(quality, name) ? quality[name] : undefined) ?? 'good');
  }

  /** A record a stream sends upstream (events are on the timeline, not trended). */
  appendOutput(stream: string, reading: Reading): void {
    if (reading.event || reading.untimely) return;
    let devices = this.streams.get(stream);
    if (!devices) this.streams.set(stream, (devices = new Map()));
    let rings = devices.get(reading.device);
    if (!rings) devices.set(reading.device, (rings = new Map()));
    this.at(reading.ts, Date.now());
    const { values, quality } = reading;
    for (const name in values) this.point(rings, name, values[name], (quality && Object.hasOwn(quality, name) ? quality[name] : undefined) ?? 'good');
  }

  /**
   * Starts a device's reading: its time's step and slot are worked out once for all its
   * points; the device's rings, or undefined when its time is not believed (not plotted).
   * `now`: the wall clock, when the caller has read it already (a Date.now() more per reading
   * is a boxed number more).
   */
  begin(reading: Reading, now = Date.now()): Rings | undefined {
    if (reading.untimely) return undefined;
    let rings = this.devices.get(reading.device);
    if (!rings) this.devices.set(reading.device, (rings = new Map()));
    this.at(reading.ts, now);
    return rings;
  }

  /** Where the points of a reading at `ts` go (fields, not arguments: a number beyond a small integer passed on would be boxed). */
  private step = 0;
  private slot = 0;
  private second = 0;
  private at(ts: number, now: number): void {
    this.step = Math.floor(ts / this.options.stepMs);
    this.slot = this.step % this.slots;
    this.second = Math.floor(now / 1000);
  }

  /**
   * One point of the reading `begin` started: a map lookup and a few stores into typed arrays,
   * nothing allocated once the point has been seen.
   */
  point(rings: Rings, name: string, raw: Value | null, quality: Quality): void {
    let value: number;
    if (typeof raw === 'number') value = raw;
    else if (typeof raw === 'boolean') value = raw ? 1 : 0;
    else if (raw === null) value = NaN;
    else return; // a text is not plotted
    let ring = rings.get(name);
    if (!ring) {
      if (this.series >= this.options.maxSeries) {
        this.untracked++;
        return;
      }
      rings.set(name, (ring = new TrendRing(this.slots, this.options.stepMs)));
      this.series++;
    }
    const code = CODE[quality] ?? CODE.good;
    const { step, slot } = this;
    // writeSlot written out: a call that takes the step (beyond a small integer) and the value
    // (a double) would box them
    ring.written[slot] = this.second;
    if (ring.steps[slot] !== step) {
      ring.steps[slot] = step;
      ring.values[slot] = value;
      ring.qualities[slot] = code;
    } else {
      if (!Number.isNaN(value)) ring.values[slot] = value;
      if (code > ring.qualities[slot]) ring.qualities[slot] = code;
    }
  }

  /** Devices with their points' slots from `from` to `to` (ms); with `writtenSince`, those written since then only. */
  readDevices(from: number, to: number, writtenSince?: number): { id: string; points: { name: string; data: TrendData }[] }[] {
    return [...this.devices].map(([id, rings]) => ({ id, points: readRings(rings, from, to, writtenSince) }));
  }

  /** Streams with the points of each device they sent (see readDevices). */
  readStreams(from: number, to: number, writtenSince?: number): { name: string; devices: { id: string; points: { name: string; data: TrendData }[] }[] }[] {
    return [...this.streams].map(([name, devices]) => ({ name, devices: [...devices].map(([id, rings]) => ({ id, points: readRings(rings, from, to, writtenSince) })) }));
  }

  /** Forgets the streams not in `running` (renamed or removed by a config change), and their rings. */
  keepStreams(running: ReadonlySet<string>): void {
    for (const [name, devices] of this.streams) {
      if (running.has(name)) continue;
      for (const rings of devices.values()) this.series -= rings.size;
      this.streams.delete(name);
    }
  }

  /** Forgets the devices not in `running` (a template's ids are kept while their device runs). */
  keepDevices(keep: (id: string) => boolean): void {
    for (const [id, rings] of this.devices) {
      if (keep(id)) continue;
      this.series -= rings.size;
      this.devices.delete(id);
    }
  }
}

function readRings(rings: Rings, from: number, to: number, writtenSince?: number): { name: string; data: TrendData }[] {
  return [...rings].map(([name, ring]) => ({ name, data: ring.read(from, to, { t: [], v: [], q: [] }, writtenSince) }));
}

/**
 * The outbox over time, per upstream: its depth and its cumulative sent, dropped and
 * dead-lettered counts, sampled once a step (the page draws the send rate from the counts).
 */
export class OutboxHistory {
  private readonly slots: number;
  private readonly upstreams = new Map<string, { depth: TrendRing; sent: TrendRing; dropped: TrendRing; dead: TrendRing }>();

  constructor(private readonly options: TrendOptions = TREND_DEFAULTS) {
    this.slots = Math.ceil(options.spanMs / options.stepMs) + 1;
  }

  sample(now: number, upstream: string, depth: number, sent: number, dropped: number, dead: number): void {
    let rings = this.upstreams.get(upstream);
    if (!rings) {
      const ring = () => new TrendRing(this.slots, this.options.stepMs);
      this.upstreams.set(upstream, (rings = { depth: ring(), sent: ring(), dropped: ring(), dead: ring() }));
    }
    rings.depth.put(now, depth, 1, now);
    rings.sent.put(now, sent, 1, now);
    rings.dropped.put(now, dropped, 1, now);
    rings.dead.put(now, dead, 1, now);
  }

  /** Forgets upstreams no longer configured. */
  keep(names: ReadonlySet<string>): void {
    for (const name of this.upstreams.keys()) if (!names.has(name)) this.upstreams.delete(name);
  }

  read(from: number, to: number, writtenSince?: number): { name: string; t: number[]; depth: (number | null)[]; sent: (number | null)[]; dropped: (number | null)[]; dead: (number | null)[] }[] {
    return [...this.upstreams].map(([name, rings]) => {
      const read = (ring: TrendRing) => ring.read(from, to, { t: [], v: [], q: [] }, writtenSince);
      const depth = read(rings.depth);
      return {
        name,
        t: depth.t,
        depth: depth.v,
        sent: read(rings.sent).v,
        dropped: read(rings.dropped).v,
        dead: read(rings.dead).v,
      };
    });
  }
}
