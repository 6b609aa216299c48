// Chain benchmark: one stream, in process, on one core (Node runs it on one thread):
//   threshold → change → hysteresis → window (avg/min/max) → energy (instant-power)
// over 1,000 keys (100 devices × 10 channels, keyed by [device, channel]), one value per
// reading, one reading per key per second of data time, a random walk with a spike now and
// then for the threshold. The hysteresis has no release, so it passes what its `emit` holds
// for (almost everything) and the window and energy steps see the data: with a release it
// would pass edges only. Prints values/s and the heap after forced GCs as it goes.
// BENCH_VALUES (default 1e8) sets the run's length.
import Database from 'better-sqlite3';
import { parseConfig } from '../../src/config/load.js';
import { buildStreams } from '../../src/streams/build.js';
import { LatestValues } from '../../src/core/latest.js';
import { StateStore } from '../../src/streams/state.js';
import { Stream } from '../../src/streams/stream.js';

const TOTAL = Number(process.env.BENCH_VALUES ?? 1e8);
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
const stream = new Stream(config.streams[0], chain.steps, () => emitted++);

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
const checkpoints = [1e6, 1e7, 2e7, 5e7, 1e8, 2e8, 5e8].filter((n) => n <= TOTAL);
if (!checkpoints.includes(TOTAL)) checkpoints.push(TOTAL);
let baseline = 0;
let last = process.hrtime.bigint();
let lastCount = 0;
const rates: number[] = [];

console.log(`chain: threshold → change → hysteresis → window(avg,min,max) → energy(instant-power), ${KEYS} keys, node ${process.version}`);
for (let i = 0, next = 0; i < TOTAL; i++) {
  const k = i % KEYS;
  const second = (i / KEYS) | 0;
  const v = walk[k] + (random() - 0.5) * 4;
  walk[k] = v < 0 ? 0 : v > 1000 ? 1000 : v;
  clock = start + second * 1000;
  // now and then a value out of range for the threshold
  const value = (i & 0xffff) === 0 ? 5000 : walk[k];
  stream.push({ device: devices[(k / CHANNELS) | 0], ts: clock, values: { channel: channels[k % CHANNELS], value } });
  if (k === KEYS - 1 && second % 60 === 0) stream.tick(clock);
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
const median = rates.length > 0 ? `median ${Math.round(rates[Math.floor(rates.length / 2)]).toLocaleString('en-US')} values/s after warm-up` : 'no rate after warm-up (BENCH_VALUES above 1e6 gives one)';
console.log(`${median} (target >= 1,000,000 on one core); ${emitted.toLocaleString('en-US')} readings out of the chain`);
