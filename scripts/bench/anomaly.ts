// Anomaly benchmark: generates labelled series with a fixed seed and runs each detector over
// them, as a stream step over a real state store, on one core. Prints, per detector and per
// kind of anomaly, recall and the detection delay in readings, the precision of its raises, and
// values/s. Kinds: spikes, level shifts and stuck periods (labelled), over noise of three kinds
// (gaussian, heavy-tailed, quantized) with a slow drift that must not count as an anomaly.
// The baseline is a fixed band around the series' nominal value (what a plain threshold does).
// BENCH_SERIES (default 12) sets how many series of 10,000 readings.
import Database from 'better-sqlite3';
import { LatestValues } from '../../src/core/latest.js';
import type { Reading } from '../../src/core/reading.js';
import { operators } from '../../src/operators/index.js';
import { StateStore } from '../../src/streams/state.js';

const SERIES = Number(process.env.BENCH_SERIES ?? 12);
const LENGTH = 10_000;
/** A raise counts for a labelled anomaly when it comes within this many readings of its start. */
const TOLERANCE = 20;

let seed = 42;
const random = () => ((seed = (seed * 1_103_515_245 + 12_345) & 0x7fffffff) / 0x7fffffff);
const gaussian = () => Math.sqrt(-2 * Math.log(random() || 1e-12)) * Math.cos(2 * Math.PI * random());

type Kind = 'spike' | 'shift' | 'stuck';
interface Label {
  kind: Kind;
  start: number;
  end: number;
}
interface Series {
  noise: string;
  values: number[];
  labels: Label[];
}

function generate(index: number): Series {
  const noise = ['gaussian', 'heavy-tailed', 'quantized'][index % 3];
  const values: number[] = [];
  const labels: Label[] = [];
  let level = 50;
  const sigma = 1;
  for (let i = 0; i < LENGTH; i++) {
    const drift = (i / LENGTH) * 5; // 5 sigma over the whole series: slow, not an anomaly
    let n = noise === 'gaussian' ? gaussian() : noise === 'heavy-tailed' ? gaussian() * (random() < 0.05 ? 2.5 : 1) : Math.round(gaussian() * 2) / 2;
    values.push(level + drift + n * sigma);
  }
  // anomalies, spread out so that each has its own stretch of normal data before it
  for (let start = 1000; start < LENGTH - 600; start += 600 + Math.floor(random() * 400)) {
    const kind: Kind = (['spike', 'shift', 'stuck'] as const)[labels.length % 3];
    if (kind === 'spike') {
      values[start] += (random() < 0.5 ? -1 : 1) * (8 + random() * 8) * sigma;
      labels.push({ kind, start, end: start });
    } else if (kind === 'shift') {
      const by = (random() < 0.5 ? -1 : 1) * (6 + random() * 6) * sigma;
      for (let i = start; i < LENGTH; i++) values[i] += by;
      level += by;
      labels.push({ kind, start, end: start + 50 });
    } else {
      const stuck = values[start - 1];
      for (let i = start; i < start + 300; i++) values[i] = stuck;
      labels.push({ kind, start, end: start + 300 });
    }
  }
  return { noise, values, labels };
}

interface Detector {
  name: string;
  step: string;
  params: Record<string, unknown>;
}
const detectors: Detector[] = [
  { name: 'fixed band ±6 (baseline)', step: 'band', params: {} },
  { name: 'ewma alpha 0.05, threshold 6', step: 'anomaly', params: { method: 'ewma', alpha: 0.05, threshold: 6, warmup: 100 } },
  { name: 'zscore window 100, threshold 6', step: 'anomaly', params: { method: 'zscore', window: 100, threshold: 6 } },
  { name: 'mad window 100, threshold 6', step: 'anomaly', params: { method: 'mad', window: 100, threshold: 6 } },
  { name: 'rate max 6/s', step: 'anomaly', params: { method: 'rate', max_rate: '6/s' } },
  { name: 'flatline 60 s, epsilon 0', step: 'flatline', params: { for: 60_000, epsilon: 0 } },
];

interface Score {
  found: Record<Kind, number>;
  total: Record<Kind, number>;
  delays: number[];
  raises: number;
  trueRaises: number;
  values: number;
  ns: number;
}

const all = Array.from({ length: SERIES }, (_, i) => generate(i));
const t0 = Date.UTC(2026, 0, 5);
const results: [string, Score][] = [];
for (const detector of detectors) {
  const score: Score = { found: { spike: 0, shift: 0, stuck: 0 }, total: { spike: 0, shift: 0, stuck: 0 }, delays: [], raises: 0, trueRaises: 0, values: 0, ns: 0 };
  for (const series of all) {
    const raised: number[] = [];
    const started = process.hrtime.bigint();
    if (detector.step === 'band') {
      // a plain threshold around the nominal value, with the drift it cannot know about
      let inBand = true;
      for (let i = 0; i < series.values.length; i++) {
        const out = Math.abs(series.values[i] - 50) > 6;
        if (out && inBand) raised.push(i);
        inBand = !out;
      }
    } else {
      const state = new StateStore(new Database(':memory:'));
      const step = operators[detector.step]({ point: 'x', ...detector.params }, {
        stream: 'bench',
        index: 0,
        state: state.scope('bench/0'),
        now: () => Infinity,
        latest: new LatestValues(),
        timezone: 'UTC',
        count: () => {},
        issue: (message) => ({ file: 'bench', path: '', message }),
      });
      let i = 0;
      const emit = (r: Reading) => {
        if (r.edge === 'raise') raised.push(i);
      };
      for (; i < series.values.length; i++) step.process({ device: 'd', ts: t0 + i * 1000, values: { x: series.values[i] } }, emit);
    }
    score.ns += Number(process.hrtime.bigint() - started);
    score.values += series.values.length;
    score.raises += raised.length;
    for (const label of series.labels) {
      score.total[label.kind]++;
      const hit = raised.find((r) => r >= label.start && r <= label.start + Math.max(TOLERANCE, label.kind === 'stuck' ? 100 : 0));
      if (hit !== undefined) {
        score.found[label.kind]++;
        score.delays.push(hit - label.start);
      }
    }
    for (const r of raised) if (series.labels.some((l) => r >= l.start && r <= l.end + TOLERANCE)) score.trueRaises++;
  }
  results.push([detector.name, score]);
}

const labelled = all.reduce((n, s) => n + s.labels.length, 0);
console.log(`anomaly: ${SERIES} series × ${LENGTH} readings (${(SERIES * LENGTH).toLocaleString('en-US')} values, ${labelled} labelled anomalies: spikes, level shifts, stuck periods), noise gaussian / heavy-tailed / quantized, slow drift; node ${process.version}`);
console.log('detector                         recall: spike  shift  stuck | precision | false raises per 10,000 | delay (median, readings) | values/s');
for (const [name, s] of results) {
  const pct = (a: number, b: number) => (b === 0 ? '  -  ' : `${((100 * a) / b).toFixed(0).padStart(3)} %`);
  s.delays.sort((a, b) => a - b);
  const delay = s.delays.length ? String(s.delays[Math.floor(s.delays.length / 2)]) : '-';
  const rate = Math.round(s.values / (s.ns / 1e9)).toLocaleString('en-US');
  const falseRate = (((s.raises - s.trueRaises) / s.values) * 10_000).toFixed(1);
  console.log(`${name.padEnd(32)} ${pct(s.found.spike, s.total.spike).padStart(12)} ${pct(s.found.shift, s.total.shift).padStart(6)} ${pct(s.found.stuck, s.total.stuck).padStart(6)} | ${pct(s.trueRaises, s.raises).padStart(9)} | ${falseRate.padStart(23)} | ${delay.padStart(24)} | ${rate.padStart(9)}`);
}
