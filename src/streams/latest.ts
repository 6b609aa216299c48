import type { Value } from '../config/types.js';
import type { Reading } from './reading.js';

/**
 * The latest value of every point of every device, so that expressions can see a point the
 * current reading does not carry (`power_kw`, or `meter-1.power_kw` across devices).
 */
export class LatestValues {
  private readonly devices = new Map<string, Map<string, Value | null>>();

  update(reading: Reading): void {
    let points = this.devices.get(reading.device);
    if (!points) this.devices.set(reading.device, (points = new Map()));
    for (const name in reading.values) {
      // a bad value is no value: the last good one stays the latest
      if (reading.quality?.[name] === 'bad') continue;
      points.set(name, reading.values[name]);
    }
  }

  get(device: string, point: string): Value | null | undefined {
    return this.devices.get(device)?.get(point);
  }
}
