import { describe, expect, it } from 'vitest';
import { describeDevice } from '../src/agent/status.js';
import type { RunningDevice } from '../src/agent/reconcile.js';
import { LatestValues } from '../src/core/latest.js';

describe('device state in /api/devices', () => {
  it('keeps the latest good value of each point with its time beside the current sample, when the device goes offline', () => {
    const latest = new LatestValues();
    let online = true;
    const device = { config: { id: 'm', protocol: 'modbus-tcp', points: [] }, connector: { get online() { return online; }, readErrors: 0 } } as unknown as RunningDevice;
    latest.update({ device: 'm', ts: 1000, values: { p: 12.5, q: 1 } });
    latest.update({ device: 'm', ts: 2000, values: { p: 13, q: 2 }, quality: { q: 'estimated' } });
    expect(describeDevice(device, latest).points).toEqual({
      p: { value: 13, quality: 'good', ts: 2000, last_good: { value: 13, ts: 2000 } },
      q: { value: 2, quality: 'estimated', ts: 2000, last_good: { value: 2, ts: 2000 } },
    });
    // the connection fails: the connector says offline and its points are bad
    online = false;
    latest.update({ device: 'm', ts: 3000, values: { p: null, q: null }, quality: { p: 'bad', q: 'bad' } });
    const offline = describeDevice(device, latest);
    expect(offline.online).toBe(false);
    expect(offline.points).toEqual({
      p: { value: null, quality: 'bad', ts: 3000, last_good: { value: 13, ts: 2000 } },
      q: { value: null, quality: 'bad', ts: 3000, last_good: { value: 2, ts: 2000 } },
    });
    // a point that was never good has no last_good
    latest.update({ device: 'm', ts: 4000, values: { r: null }, quality: { r: 'bad' } });
    expect(describeDevice(device, latest).points.r).toEqual({ value: null, quality: 'bad', ts: 4000, last_good: null });
  });
});
