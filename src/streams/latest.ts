import type { Value } from '../config/types.js';
import type { Quality, Reading } from './reading.js';

/** What a device last reported for a point, bad values included (for the API and status page). */
export interface Sample {
  value: Value | null;
  quality: Quality;
  ts: number;
}

/**
 * The latest value of every point of every device, so that expressions can see a point the
 * current reading does not carry (`power_kw`, or `meter-1.power_kw` across devices), and the
 * latest sample with its quality and time, for the management API.
 */
export class LatestValues {
  private readonly devices = new Map<string, Map<string, Value | null>>();
  private readonly samples = new Map<string, Map<string, Sample>>();

  update(reading: Reading): void {
    let points = this.devices.get(reading.device);
    if (!points) this.devices.set(reading.device, (points = new Map()));
    let samples = this.samples.get(reading.device);
    if (!samples) this.samples.set(reading.device, (samples = new Map()));
    for (const name in reading.values) {
      const value = reading.values[name];
      const quality = (reading.quality && Object.hasOwn(reading.quality, name) ? reading.quality[name] : undefined) ?? 'good';
      // updated in place: no allocation per reading once a point has been seen
      const sample = samples.get(name);
      if (sample) {
        sample.value = value;
        sample.quality = quality;
        sample.ts = reading.ts;
      } else samples.set(name, { value, quality, ts: reading.ts });
      // a bad value is no value: the last good one stays the latest
      if (quality !== 'bad') points.set(name, value);
    }
  }

  get(device: string, point: string): Value | null | undefined {
    return this.devices.get(device)?.get(point);
  }

  /** The latest sample of each point of a device. */
  samplesOf(device: string): ReadonlyMap<string, Sample> {
    return this.samples.get(device) ?? new Map();
  }
}
