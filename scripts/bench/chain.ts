// Chain benchmark: one stream, in process, on one core (Node runs it on one thread):
//   threshold → change → hysteresis → window (avg/min/max) → energy (instant-power)
// over 1,000 keys (100 devices × 10 channels, keyed by [device, channel]), one value per
// reading, one reading per key per second of data time, a random walk with a spike now and
// then for the threshold. The hysteresis has no release, so it passes what its `emit` holds
// for (almost everything) and the window and energy steps see the data: with a release it
// would pass edges only. Prints values/s and the heap after forced GCs as it goes.
// Then, in the same run, the events case: the same readings into three streams, debounce,
// absence and sequence, each over the 1,000 keys (a value counts once for all three).
// BENCH_VALUES (default 1e8) sets the chain's length, BENCH_EVENT_VALUES (default 2e7) the
// events case's.
import Database from 'better-sqlite3';
import { parseConfig } from '../../src/config/load.js';
import { buildStreams } from '../../src/streams/build.js';
import { LatestValues } from '../../src/core/latest.js';
import { StateStore } from '../../src/streams/state.js';
import { Stream } from '../../src/streams/stream.js';

const TOTAL = Number(process.env.BENCH_VALUES ?? 1e8);
const EVENT_TOTAL = Number(process.env.BENCH_EVENT_VALUES ?? 2e7);
const DEVICES = 100;
const CHANNELS = 10;
const KEYS = DEVICES * CHANNELS;
const key = '[device, channel]';

const { config, ...loaded } = parseConfig(
  `agent: { id: bench }
devices:
${Array.from({ length: DEVICES }, (_, d) => `  - { id: d${d}, protocol: simulator, points: [{ name: value }, { name: channel }] }`).join('\n')}
streams:
  - name: chain
    from: { device: d0 }
    steps:
      - threshold: { point: value, min: 0, max: 1000, fill: previous, key: ${key} }
      - change: { point: value, deadband: 0.01, key: ${key} }
      - hysteresis: { emit: "value < 990" }
      - window: { size: 1m, functions: { value: [avg, min, max] }, key: ${key} }
      - energy: { method: instant-power, point: value_avg, window: 15m, output: kwh, key: ${key} }
    to: [out]
  - { name: debounce, from: { device: d0 }, steps: [{ debounce: { when: "value > 800", for: 10s, clear_for: 10s, key: ${key} } }], to: [out] }
  - { name: absence, from: { device: d0 }, steps: [{ absence: { for: 30s, point: value, key: ${key} } }], to: [out] }
  - { name: sequence, from: { device: d0 }, steps: [{ sequence: { steps: ["value > 700", "value < 300"], within: 1m, emit: timeout, key: ${key} } }], to: [out] }
upstream: [{ name: out, type: file, path: /dev/null }]
`,
  'bench.yaml',
  {},
);
let clock = 0;
const latest = new LatestValues();
const streams = buildStreams({ config, ...loaded }, { now: () => clock, latest }, new StateStore(new Database(':memory:')));
const chain = streams.get('chain');
if (!chain) throw new Error('the stream chain was not built');
let emitted = 0;
const streamOf = (name: string) => {
  const index = config.streams.findIndex((s) => s.name === name);
  return new Stream(config.streams[index], streams.get(name)!.steps, () => emitted++);
};
const stream = streamOf('chain');
const events = ['debounce', 'absence', 'sequence'].map(streamOf);

const devices = Array.from({ length: DEVICES }, (_, d) => `d${d}`);
const channels = Array.from({ length: CHANNELS }, (_, c) => `ch${c}`);
const walk = new Float64Array(KEYS).fill(500);
let seed = 1;
const random = () => ((seed = (seed * 1_103_515_245 + 12_345) & 0x7fffffff) / 0x7fffffff);

// The heap figures mean something only after a full collection: the wrapper passes --expose-gc.
const gc = globalThis.gc;
if (!gc) throw new Error('run with node --expose-gc (scripts/bench/chain does)');
const heap = () => {
  gc();
  return process.memoryUsage().heapUsed / 1024 / 1024;
};
const start = Date.UTC(2026, 0, 5);

/** Pushes `total` values into `targets`; prints the rate at checkpoints; returns the median after warm-up. */
function run(total: number, targets: Stream[]): number | undefined {
  const checkpoints = [1e6, 1e7, 2e7, 5e7, 1e8, 2e8, 5e8].filter((n) => n <= total);
  if (!checkpoints.includes(total)) checkpoints.push(total);
  let baseline = 0;
  let last = process.hrtime.bigint();
  let lastCount = 0;
  const rates: number[] = [];
  walk.fill(500);
  for (let i = 0, next = 0; i < total; i++) {
    const k = i % KEYS;
    const second = (i / KEYS) | 0;
    const v = walk[k] + (random() - 0.5) * 4;
    walk[k] = v < 0 ? 0 : v > 1000 ? 1000 : v;
    clock = start + second * 1000;
    // now and then a value out of range for the threshold
    const value = (i & 0xffff) === 0 ? 5000 : walk[k];
    const reading = { device: devices[(k / CHANNELS) | 0], ts: clock, values: { channel: channels[k % CHANNELS], value } };
    for (const target of targets) target.push(reading);
    if (k === KEYS - 1 && second % 60 === 0) for (const target of targets) target.tick(clock);
    if (i + 1 === checkpoints[next]) {
      const now = process.hrtime.bigint();
      const rate = ((i + 1 - lastCount) / Number(now - last)) * 1e9;
      const mb = heap();
      if (next === 0) baseline = mb;
      else rates.push(rate);
      console.log(`${(i + 1).toExponential(0).padStart(6)} values: ${Math.round(rate).toLocaleString('en-US').padStart(10)} values/s, heap ${mb.toFixed(1)} MB${next ? ` (${(mb - baseline >= 0 ? '+' : '') + (mb - baseline).toFixed(1)} MB since 1e6)` : ' (after warm-up)'}`);
      next++;
      last = process.hrtime.bigint();
      lastCount = i + 1;
    }
  }
  rates.sort((a, b) => a - b);
  return rates.length > 0 ? rates[Math.floor(rates.length / 2)] : undefined;
}

const said = (rate: number | undefined, target: string) =>
  rate === undefined ? 'no rate after warm-up (a length above 1e6 gives one)' : `median ${Math.round(rate).toLocaleString('en-US')} values/s after warm-up (target >= ${target} on one core)`;

console.log(`chain: threshold → change → hysteresis → window(avg,min,max) → energy(instant-power), ${KEYS} keys, node ${process.version}`);
const chainRate = run(TOTAL, [stream]);
console.log(`${said(chainRate, '1,000,000')}; ${emitted.toLocaleString('en-US')} readings out of the chain`);
emitted = 0;
console.log(`events: debounce, absence and sequence (three streams, each value into all three), ${KEYS} keys`);
const eventRate = run(EVENT_TOTAL, events);
console.log(`${said(eventRate, '500,000')}; ${emitted.toLocaleString('en-US')} edges out`);
if (chainRate !== undefined && eventRate !== undefined) console.log(`same run: chain ${Math.round(chainRate).toLocaleString('en-US')} values/s, events ${Math.round(eventRate).toLocaleString('en-US')} values/s`);
