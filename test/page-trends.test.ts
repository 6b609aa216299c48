import { describe, expect, it } from 'vitest';
import { OutboxHistory, QUALITY_CODES, TrendRing, Trends } from '../src/core/trends.js';

const T0 = Date.UTC(2026, 0, 1);
const codes = (q: number[]) => q.map((c) => QUALITY_CODES[c]);

describe('trend rings', () => {
  it('keep the last span of a point, one slot a step, and never grow', () => {
    const trends = new Trends({ spanMs: 60_000, stepMs: 1000 });
    // two hours of readings at 4 a second
    for (let ts = T0; ts < T0 + 7_200_000; ts += 250) trends.append({ device: 'd', ts, values: { p: ts - T0 } });
    const end = T0 + 7_200_000 - 250;
    const [device] = trends.readDevices(end - 60_000, end);
    const { t, v } = device.points[0].data;
    expect(t.length).toBe(61);
    expect(t[0]).toBe(end - 60_000 - ((end - 60_000) % 1000));
    expect(t.slice(1).every((x, i) => x - t[i] === 1000)).toBe(true);
    // the latest value of each step wins
    expect(v[v.length - 1]).toBe(end - T0);
    expect(trends.seriesCount).toBe(1);
    expect(trends.bytesPerSeries).toBe(61 * 17);
  });

  it('read only what was asked: slots from `since` on, none from a lap ago', () => {
    const ring = new TrendRing(10, 1000);
    for (let s = 0; s < 25; s++) ring.put(T0 + s * 1000, s, 1);
    expect(ring.read(T0 + 20_000, T0 + 24_000, { t: [], v: [], q: [] }).v).toEqual([20, 21, 22, 23, 24]);
    // asked for more than the ring holds: the last lap only
    expect(ring.read(T0, T0 + 24_000, { t: [], v: [], q: [] }).v).toEqual([15, 16, 17, 18, 19, 20, 21, 22, 23, 24]);
    // a silence longer than the ring: nothing left over from before it
    ring.put(T0 + 100_000, 100, 1);
    expect(ring.read(T0 + 90_000, T0 + 100_000, { t: [], v: [], q: [] }).v).toEqual([100]);
  });

  it('give what was written since a time, whatever the time of the slot: a window closes after its minute', () => {
    const ring = new TrendRing(120, 1000);
    for (let s = 0; s < 60; s++) ring.put(T0 + s * 1000, s, 1, T0 + s * 1000);
    // at T0 + 61 s a window's record for T0 comes
    ring.put(T0, 100, 1, T0 + 61_000);
    expect(ring.read(T0, T0 + 61_000, { t: [], v: [], q: [] }, T0 + 60_000)).toEqual({ t: [T0], v: [100], q: [1] });
    expect(ring.read(T0, T0 + 61_000, { t: [], v: [], q: [] }, T0 + 59_000)).toEqual({ t: [T0, T0 + 59_000], v: [100, 59], q: [1, 1] });
  });

  it('keep quality: bad is a gap, estimated and interpolated are marked, a good value does not hide a bad one in its step', () => {
    const trends = new Trends({ spanMs: 60_000 });
    trends.append({ device: 'd', ts: T0, values: { p: 1, s: 'text', on: true } });
    trends.append({ device: 'd', ts: T0 + 1000, values: { p: null, on: false }, quality: { p: 'bad' } });
    trends.append({ device: 'd', ts: T0 + 2000, values: { p: 3 }, quality: { p: 'interpolated' } });
    trends.append({ device: 'd', ts: T0 + 3000, values: { p: 4 }, quality: { p: 'estimated' } });
    trends.append({ device: 'd', ts: T0 + 4000, values: { p: 99 }, quality: { p: 'bad' } });
    trends.append({ device: 'd', ts: T0 + 4500, values: { p: 5 } });
    // a reading whose time is not believed is not plotted
    trends.append({ device: 'd', ts: T0 + 5000, values: { p: 6 }, untimely: 'future' });
    const [{ points }] = trends.readDevices(T0, T0 + 10_000);
    const p = points.find((x) => x.name === 'p')!.data;
    expect(p.v).toEqual([1, null, 3, 4, null]);
    expect(codes(p.q)).toEqual(['good', 'bad', 'interpolated', 'estimated', 'bad']);
    // booleans as 0 and 1; a text is not plotted
    expect(points.map((x) => x.name)).toEqual(['p', 'on']);
    expect(points[1].data.v).toEqual([1, 0]);
  });

  it('stream outputs by stream and device, events left to the timeline; a removed stream is forgotten', () => {
    const trends = new Trends({ spanMs: 60_000 });
    trends.appendOutput('w', { device: 'd', ts: T0, values: { p_avg: 2 } });
    trends.appendOutput('w', { device: 'd', ts: T0, values: { p: 2 }, event: { code: 'X', severity: 'info', description: '', state: 'raised' } });
    expect(trends.readStreams(T0, T0 + 1000)).toEqual([{ name: 'w', devices: [{ id: 'd', points: [{ name: 'p_avg', data: { t: [T0], v: [2], q: [1] } }] }] }]);
    trends.keepStreams(new Set());
    expect(trends.readStreams(T0, T0 + 1000)).toEqual([]);
    expect(trends.seriesCount).toBe(0);
  });

  it('hold at most maxSeries points, counting the others', () => {
    const trends = new Trends({ spanMs: 60_000, maxSeries: 3 });
    for (let i = 0; i < 10; i++) trends.append({ device: `d${i}`, ts: T0, values: { a: 1, b: 2 } });
    expect(trends.seriesCount).toBe(3);
    expect(trends.untracked).toBe(17);
  });

  it('sample the outbox per upstream', () => {
    const history = new OutboxHistory({ spanMs: 10_000, stepMs: 1000, maxSeries: 10 });
    history.sample(T0, 'u', 5, 100, 0, 0);
    history.sample(T0 + 1000, 'u', 3, 110, 1, 0);
    expect(history.read(T0, T0 + 1000)).toEqual([{ name: 'u', t: [T0, T0 + 1000], depth: [5, 3], sent: [100, 110], dropped: [0, 1], dead: [0, 0] }]);
  });
});
