import type { Logger } from 'pino';
import type { Quality, Reading, Value } from './reading.js';
import type { Trends } from './trends.js';

/** What a device last reported for a point, bad values included (for the API and status page). */
export interface Sample {
  value: Value | null;
  quality: Quality;
  ts: number;
}

/** A device's state as the API shows it and MQTT's `device_state` publishes it. */
export interface DeviceState {
  id: string;
  protocol: string;
  online: boolean;
  read_errors: number | undefined;
  points: Record<string, Sample & { last_good: { value: Sample['value']; ts: number } | null }>;
}

interface DeviceLatest {
  /** The latest usable value of each point, with its ts. */
  values: Map<string, { value: Value | null; ts: number }>;
  samples: Map<string, Sample>;
  /** When the device last moved to the newest end of the map (see `update`). */
  moved: number;
}

export const MAX_LATEST_DEVICES = 10_000;

/** What expressions read: the latest value of a device's point, as seen from a reading stamped `at`. */
export interface LatestLookup {
  get(device: string, point: string, at?: number): Value | null | undefined;
}

/**
 * The latest values as a stream with `max_age` sees them: a value taken more than `maxAge`
 * before the reading being judged counts as missing, so a correlation never uses a stale one.
 */
export class FreshLatest implements LatestLookup {
  constructor(
    private readonly latest: LatestValues,
    private readonly maxAge: number,
  ) {}

  get(device: string, point: string, at?: number): Value | null | undefined {
    return at === undefined ? this.latest.get(device, point) : this.latest.getSince(device, point, at - this.maxAge);
  }
}

/** How long a device stays at its place in the eviction order before an update moves it again. */
const MOVE_AFTER_MS = 60_000;

/**
 * The latest value of every point of every device, so that expressions can see a point the
 * current reading does not carry (`power_kw`, or `meter-1.power_kw` across devices), and the
 * latest sample with its quality and time, for the management API.
 *
 * At most `maxDevices` devices are kept: past it, the device updated least recently is
 * forgotten (counted in `evicted`, logged once per episode), so ids from a topic flood cannot
 * grow it without end.
 */
export class LatestValues {
  private readonly devices = new Map<string, DeviceLatest>();
  /** Devices forgotten to stay within `maxDevices`, since start. */
  evicted = 0;
  private full = false;

  constructor(
    private maxDevices = MAX_LATEST_DEVICES,
    private log?: Logger,
    /** Given each point of each reading in the same pass (the status page's trends), when set. */
    private readonly trends?: Trends,
  ) {}

  /** Sets the cap (agent.max_latest_devices) and where to log that it was reached. */
  limit(maxDevices: number, log?: Logger): void {
    this.maxDevices = maxDevices;
    this.log = log ?? this.log;
  }

  update(reading: Reading): void {
    const now = Date.now();
    let device = this.devices.get(reading.device);
    if (!device) {
      this.makeRoom();
      this.devices.set(reading.device, (device = { values: new Map(), samples: new Map(), moved: now }));
    } else if (now - device.moved > MOVE_AFTER_MS) {
      // least recently updated first, at the cost of one move per device and minute
      this.devices.delete(reading.device);
      this.devices.set(reading.device, device);
      device.moved = now;
    }
    const { values, samples } = device;
    const trend = this.trends?.begin(reading, now);
    for (const name in reading.values) {
      const value = reading.values[name];
      const quality = (reading.quality && Object.hasOwn(reading.quality, name) ? reading.quality[name] : undefined) ?? 'good';
      if (trend) this.trends!.point(trend, name, value, quality);
      // updated in place: no allocation per reading once a point has been seen
      const sample = samples.get(name);
      if (sample) {
        sample.value = value;
        sample.quality = quality;
        sample.ts = reading.ts;
      } else samples.set(name, { value, quality, ts: reading.ts });
      // a bad value is no value: the last good one stays the latest
      if (quality !== 'bad') {
        const latest = values.get(name);
        if (!latest) values.set(name, { value, ts: reading.ts });
        else {
          latest.value = value;
          latest.ts = reading.ts;
        }
      }
    }
  }

  /** The latest usable value of the point; `at` is ignored here (see `FreshLatest`). */
  get(device: string, point: string, _at?: number): Value | null | undefined {
    return this.devices.get(device)?.values.get(point)?.value;
  }

  /** The latest usable value of the point when it was taken at `notBefore` or later. */
  getSince(device: string, point: string, notBefore: number): Value | null | undefined {
    const latest = this.devices.get(device)?.values.get(point);
    return latest && latest.ts >= notBefore ? latest.value : undefined;
  }

  /** The latest usable (not `bad`) value of each point of a device, with its ts: what it held before it failed. */
  goodOf(device: string): ReadonlyMap<string, { value: Value | null; ts: number }> {
    return this.devices.get(device)?.values ?? new Map();
  }

  /** The latest sample of each point of a device. */
  samplesOf(device: string): ReadonlyMap<string, Sample> {
    return this.devices.get(device)?.samples ?? new Map();
  }

  get size(): number {
    return this.devices.size;
  }

  private makeRoom(): void {
    if (this.devices.size < this.maxDevices) {
      // an episode of being full ends when the devices fit again (after a config with a larger cap)
      this.full = false;
      return;
    }
    while (this.devices.size >= this.maxDevices) {
      const oldest = this.devices.keys().next().value!;
      this.devices.delete(oldest);
      this.evicted++;
      if (!this.full) {
        this.full = true;
        this.log?.warn(
          { max_latest_devices: this.maxDevices, forgotten: oldest.slice(0, 200) },
          `latest values: more than ${this.maxDevices} devices (agent.max_latest_devices); the least recently updated ones are forgotten (counted), starting with ${oldest.slice(0, 200)}`,
        );
      }
    }
  }
}
