// Trend rings (src/core/trends.ts), what they cost the agent:
// - memory per point: the heap and ArrayBuffer bytes held by 2,000 series, divided by 2,000;
//   then two hours of readings at 10 a second on each of 100 points, to show it does not grow;
// - the per-reading path: LatestValues.update alone and with the trends it hands each point
//   to (the agent's path), on the same kind of readings (4 points each, made once and reused),
//   interleaved rounds, ns per reading, and the collections seen on each (the trends add none).
import { PerformanceObserver } from 'node:perf_hooks';
import { LatestValues } from '../../src/core/latest.js';
import type { Reading } from '../../src/core/reading.js';
import { Trends } from '../../src/core/trends.js';

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with node --expose-gc (scripts/bench/trends does)');
const held = () => {
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
};

const SERIES = 2000;
const before = held();
const many = new Trends({ maxSeries: SERIES });
for (let i = 0; i < SERIES / 4; i++) many.append({ device: `d${i}`, ts: Date.now(), values: { a: 1, b: 2, c: 3, d: 4 } });
const perSeries = (held() - before) / SERIES;
console.log(`memory: ${many.seriesCount} series, ${Math.round(perSeries)} bytes per point held (${many.bytesPerSeries} in its ring's arrays, ${many.options.spanMs / 60_000} min at ${many.options.stepMs} ms)`);

const trends = new Trends();
const T0 = Date.now();
// as connectors make them: a values object without prototype, doubles, a boolean, an estimated one now and then
const makeReadings = (): Reading[] =>
  Array.from({ length: 25 }, (_, d) => {
    const values: Reading['values'] = Object.create(null);
    values.p = 1.5 + d;
    values.q = 2.25;
    values.on = true;
    values.e = 1000.5;
    return { device: `m${d}`, ts: T0, values, quality: d % 5 === 0 ? { p: 'estimated' } : undefined };
  });
const readings = makeReadings();
const hours = (h: number) => {
  const steps = (h * 3_600_000) / 100;
  for (let s = 0; s < steps; s++) {
    const r = readings[s % readings.length];
    r.ts = T0 + s * 100;
    trends.append(r);
  }
};
hours(0.01);
const start = held();
hours(2);
console.log(`two hours of data time at 10 readings/s on ${trends.seriesCount} points: held ${held() - start} bytes more (of ${start})`);

// the path of a reading: LatestValues.update alone (as before), and with the trends it hands each point to
const alone = new LatestValues();
const withTrends = new LatestValues(undefined, undefined, new Trends());
const readingsAlone = makeReadings();
const readingsWith = makeReadings();
let collections = 0;
new PerformanceObserver((list) => (collections += list.getEntries().length)).observe({ entryTypes: ['gc'] });
const N = 2_000_000;
const time = (latest: LatestValues, rs: Reading[]) => {
  const t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) {
    const r = rs[i % rs.length];
    r.ts = T0 + 7_200_000 + i * 10;
    latest.update(r);
  }
  return Number(process.hrtime.bigint() - t) / N;
};
const results: { alone: number[]; with: number[] } = { alone: [], with: [] };
for (let round = 0; round < 7; round++) {
  results.alone.push(time(alone, readingsAlone));
  results.with.push(time(withTrends, readingsWith));
}
// the observer reports a collection a little later: one path at a time, then a pause to hear of them all
const flush = () => new Promise((r) => setTimeout(r, 200));
const count = async (latest: LatestValues, rs: Reading[]) => {
  await flush();
  const seen = collections;
  for (let round = 0; round < 7; round++) time(latest, rs);
  await flush();
  return collections - seen;
};
const collectionsAlone = await count(alone, readingsAlone);
const collectionsWith = await count(withTrends, readingsWith);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
console.log(`per reading of 4 points, median of 7 interleaved rounds of ${N}: LatestValues.update ${median(results.alone).toFixed(1)} ns, with the trends ${median(results.with).toFixed(1)} ns (ratio ${(median(results.with) / median(results.alone)).toFixed(2)})`);
console.log(`young-generation collections during ${7 * N} readings: LatestValues.update ${collectionsAlone}, with the trends ${collectionsWith}`);
