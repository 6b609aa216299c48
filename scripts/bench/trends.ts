// Trend rings (src/core/trends.ts), what they cost the agent:
// - memory per point: the heap and ArrayBuffer bytes held by 2,000 series, divided by 2,000;
//   then two hours of readings at 10 a second on each of 100 points, to show it does not grow;
// - the per-reading path: Trends.append beside LatestValues.update on the same readings
//   (4 points each, made once and reused), interleaved rounds, ns per reading, and the
//   garbage collections seen while appending (none: nothing is allocated per reading).
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
const latest = new LatestValues();
const T0 = Date.now();
const readings: Reading[] = Array.from({ length: 25 }, (_, d) => ({ device: `m${d}`, ts: T0, values: { p: 1.5, q: 2, on: true, e: 1000 }, quality: d % 5 === 0 ? { p: 'estimated' } : undefined }));
const hours = (h: number) => {
  const steps = h * 3_600_000 / 100;
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

let collections = 0;
new PerformanceObserver((list) => (collections += list.getEntries().length)).observe({ entryTypes: ['gc'] });
const N = 2_000_000;
const time = (run: (r: Reading) => void) => {
  const t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) {
    const r = readings[i % readings.length];
    r.ts = T0 + 7_200_000 + i * 10;
    run(r);
  }
  return Number(process.hrtime.bigint() - t) / N;
};
const results: { trends: number[]; latest: number[] } = { trends: [], latest: [] };
for (let round = 0; round < 7; round++) {
  results.trends.push(time((r) => trends.append(r)));
  results.latest.push(time((r) => latest.update(r)));
}
// the observer reports a collection a little later: appends alone, then a pause to hear of them all
const flush = () => new Promise((r) => setTimeout(r, 200));
const count = async (run: (r: Reading) => void) => {
  await flush();
  const seen = collections;
  for (let round = 0; round < 7; round++) time(run);
  await flush();
  return collections - seen;
};
const trendCollections = await count((r) => trends.append(r));
const latestCollections = await count((r) => latest.update(r));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
console.log(`per reading of 4 points, median of 7 rounds of ${N}: Trends.append ${median(results.trends).toFixed(1)} ns, LatestValues.update ${median(results.latest).toFixed(1)} ns (ratio ${(median(results.trends) / median(results.latest)).toFixed(2)})`);
console.log(`garbage collections during ${7 * N} readings: Trends.append ${trendCollections}, LatestValues.update ${latestCollections}`);
