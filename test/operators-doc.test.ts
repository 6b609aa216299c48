// The worked examples of docs/operators.md, replayed: when a step changes what it does, the
// reference must change with it.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { replay } from '../src/replay.js';

const dir = mkdtempSync(join(tmpdir(), 'operators-doc-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Out {
  stream?: string;
  device?: string;
  ts?: number;
  values?: Record<string, unknown>;
  quality?: Record<string, string>;
  event?: Record<string, unknown>;
  action?: Record<string, unknown>;
}

/** Replays `rows` ("HH:MM[:SS] device point value", on 2026-01-05 UTC unless a full ISO time) through `streams`. */
function run(devices: string, streams: string, rows: string[]): Out[] {
  const name = `c${Math.random().toString(36).slice(2)}`;
  const config = join(dir, `${name}.yaml`);
  const input = join(dir, `${name}.csv`);
  writeFileSync(config, `agent: { id: docs }\ndevices:\n${devices}\nstreams:\n${streams}\nupstream: [{ name: out, type: file, path: /dev/null }]\n`);
  const csv = rows.map((row) => {
    const [time, device, point, value = ''] = row.split(' ');
    const ts = time.includes('T') ? time : `2026-01-05T${time.length === 5 ? `${time}:00` : time}Z`;
    return `${ts},${device},${point},${value}`;
  });
  writeFileSync(input, csv.join('\n'));
  const lines: string[] = [];
  replay(config, input, (line) => lines.push(line));
  return lines.map((line) => JSON.parse(line) as Out);
}

const at = (hhmm: string) => Date.parse(`2026-01-05T${hhmm}:00Z`);
const values = (out: Out[], point: string) => out.map((o) => o.values?.[point]);

describe('docs/operators.md worked examples', () => {
  it('threshold [0, 100]: linear interpolates the held outlier, previous estimates it, none removes it', () => {
    const devices = '  - { id: t, protocol: simulator, points: [{ name: v }, { name: u }] }';
    const rows = ['10:00 t v 50', '10:00 t u 1', '10:01 t v 120', '10:01 t u 2', '10:02 t v 60', '10:02 t u 3'];
    const stream = (fill: string) => `  - { name: s, from: { device: t }, steps: [{ threshold: { point: v, min: 0, max: 100, fill: ${fill} } }], to: [out] }`;

    const linear = run(devices, stream('linear'), rows);
    expect(linear.map((o) => [o.ts, o.values?.v, o.quality?.v])).toEqual([
      [at('10:00'), 50, undefined],
      [at('10:01'), 55, 'interpolated'],
      [at('10:02'), 60, undefined],
    ]);
    const previous = run(devices, stream('previous'), rows);
    expect(previous.map((o) => [o.values?.v, o.quality?.v])).toEqual([[50, undefined], [50, 'estimated'], [60, undefined]]);
    const none = run(devices, stream('none'), rows);
    expect(none.map((o) => o.values)).toEqual([{ v: 50, u: 1 }, { u: 2 }, { v: 60, u: 3 }]);
  });

  it('change: deadband 0.5 and 2%', () => {
    const devices = '  - { id: c, protocol: simulator, points: [{ name: v }] }';
    const stream = (deadband: string) => `  - { name: s, from: { device: c }, steps: [{ change: { point: v, deadband: ${deadband} } }], to: [out] }`;
    expect(values(run(devices, stream('0.5'), ['10:00 c v 20.0', '10:01 c v 20.3', '10:02 c v 20.6', '10:03 c v 20.2']), 'v')).toEqual([20, 20.6]);
    expect(values(run(devices, stream('"2%"'), ['10:00 c v 100', '10:01 c v 101.5', '10:02 c v 102.5']), 'v')).toEqual([100, 102.5]);
  });

  it('sampler 2m on the server clock: 11:27:00 pass, 11:28:00 drop, 11:29:05 pass', () => {
    const out = run(
      '  - { id: s, protocol: simulator, points: [{ name: v }] }',
      '  - { name: s, from: { device: s }, steps: [{ sampler: { interval: 2m } }], to: [out] }',
      ['11:27:00 s v 1', '11:28:00 s v 2', '11:29:05 s v 3'],
    );
    expect(values(out, 'v')).toEqual([1, 3]);
  });

  it('hysteresis: 95 –, 105 emit, 98 –, 110 –, 79 re-arm, 101 emit; the event and action follow the edges', () => {
    const rows = ['12:00:00 h rpm 95', '12:00:01 h rpm 105', '12:00:02 h rpm 98', '12:00:03 h rpm 110', '12:00:04 h rpm 79', '12:00:05 h rpm 101'];
    const devices = '  - { id: h, protocol: simulator, points: [{ name: rpm }, { name: run, writable: true }] }';
    const plain = run(devices, '  - { name: s, from: { device: h }, steps: [{ hysteresis: { emit: "rpm > 100", release: "rpm < 80" } }], to: [out] }', rows);
    expect(values(plain, 'rpm')).toEqual([105, 101]);

    const alarm = run(
      devices,
      `  - name: alarm
    from: { device: h }
    steps:
      - hysteresis: { emit: "rpm > 100", release: "rpm < 80", on_release: true }
      - event: { code: OVERSPEED, severity: major, description: "pump at {rpm} rpm", fields: { excess: "rpm - 100" } }
    to: [out, { action: { device: h, point: run, value: false, on: raise } }]`,
      rows,
    );
    expect(alarm.map((o) => (o.action ? ['action', o.action.value] : [o.values?.rpm, o.event?.state, o.event?.description, o.event?.excess]))).toEqual([
      [105, 'raised', 'pump at 105 rpm', 5],
      ['action', false],
      [79, 'cleared', 'pump at 79 rpm', -21],
      [101, 'raised', 'pump at 101 rpm', 1],
      ['action', false],
    ]);
  });

  it('window 15m: avg 110, min 100, max 120, delta 20, integral 18.333, count 3, not partial; a single reading is partial', () => {
    const out = run(
      '  - { id: w, protocol: simulator, points: [{ name: kw }] }',
      '  - { name: s, from: { device: w }, steps: [{ window: { size: 15m, functions: { kw: [avg, min, max, delta, integral, count] } } }], to: [out] }',
      ['10:00 w kw 100', '10:05 w kw 110', '10:10 w kw 120', '10:15 w kw 90', '10:31 w kw 90'],
    );
    expect(out[0].ts).toBe(at('10:00'));
    expect(out[0].quality).toBeUndefined();
    expect(out[0].values).toEqual({ kw_avg: 110, kw_min: 100, kw_max: 120, kw_delta: 20, kw_integral: expect.closeTo(18.333, 3), kw_count: 3 });
    expect(out[1].ts).toBe(at('10:15'));
    expect(out[1].quality?.kw_avg).toBe('partial');
  });

  it('energy: meter-reading across midnight, instant-power 100 → 120 kW over 5 min, average-power 200 kW over 15 min', () => {
    const devices = '  - { id: m, protocol: simulator, points: [{ name: kwh }] }\n  - { id: p, protocol: simulator, points: [{ name: kw }] }\n  - { id: a, protocol: simulator, points: [{ name: kw }] }';
    const energy = (name: string, device: string, method: string, point: string, window: string) =>
      `  - { name: ${name}, from: { device: ${device} }, steps: [{ energy: { method: ${method}, point: ${point}, window: ${window}, output: e } }, { filter: "e >= 0" }], to: [out] }`;
    const out = run(
      devices,
      [energy('meter', 'm', 'meter-reading', 'kwh', '1d'), energy('inst', 'p', 'instant-power', 'kw', '5m'), energy('avg', 'a', 'average-power', 'kw', '15m')].join('\n'),
      ['2026-01-04T23:45:00Z m kwh 1200', '00:15 m kwh 1204', '2026-01-06T00:00:00Z m kwh 1204', '13:00 p kw 100', '13:05 p kw 120', '13:07 a kw 200', '13:15 a kw 0'],
    );
    const of = (stream: string) => out.filter((o) => o.stream === stream).map((o) => [o.ts, o.values?.e, o.quality?.e]);
    expect(of('meter')).toEqual([
      [Date.parse('2026-01-04T00:00:00Z'), 2, 'partial'],
      [Date.parse('2026-01-05T00:00:00Z'), 2, undefined],
    ]);
    expect(of('inst')).toEqual([[at('13:00'), expect.closeTo(9.167, 3), undefined]]);
    expect(of('avg')[0]).toEqual([at('13:00'), 50, undefined]);
  });

  it('timer source: an event with the latest value of another device, null until it reported', () => {
    const out = run(
      '  - { id: x, protocol: simulator, points: [{ name: v }] }\n  - { id: y, protocol: simulator, points: [{ name: v }] }',
      '  - { name: snapshot, from: { timer: { every: 15m } }, steps: [{ event: { code: SNAPSHOT, fields: { v2: "x.v * 2" } } }], to: [out] }',
      ['11:20 y v 1', '11:40 x v 7', '11:55 x v 5', '12:01 x v 5'],
    );
    expect(out.map((o) => [o.device, o.ts, o.event?.v2, o.event?.description])).toEqual([
      ['timer', at('11:30'), null, 'SNAPSHOT'],
      ['timer', at('11:45'), 14, 'SNAPSHOT'],
      ['timer', at('12:00'), 10, 'SNAPSHOT'],
    ]);
  });
});

/** "HH:MM:SS" of `s` seconds after 10:00:00 (the rows' time, for the examples in seconds). */
const t = (s: number) => new Date(Date.parse('2026-01-05T10:00:00Z') + s * 1000).toISOString().slice(11, 19);
const sec = (s: number) => Date.parse('2026-01-05T10:00:00Z') + s * 1000;
/** Rows of `device point value` every `step` s from `from` to `to` (inclusive). */
const every = (step: number, from: number, to: number, row: (s: number) => string) => Array.from({ length: Math.floor((to - from) / step) + 1 }, (_, i) => `${t(from + i * step)} ${row(from + i * step)}`);
const edges = (out: Out[]) => out.map((o) => [(o.ts! - sec(0)) / 1000, o.event?.state]);

describe('docs/operators.md worked examples: events across time', () => {
  it('debounce temp > 80, for 30s, clear_for 10s, a reading every 5 s: a short spell does nothing; a long one raises at 90 s, clears at 135 s', () => {
    const rows = every(5, 0, 200, (s) => `b temp ${s <= 20 || (s >= 60 && s <= 120) ? 85 : 70}`);
    const out = run(
      '  - { id: b, protocol: simulator, points: [{ name: temp }] }',
      '  - { name: s, from: { device: b }, steps: [{ debounce: { when: "temp > 80", for: 30s, clear_for: 10s } }, { event: { code: HOT } }], to: [out] }',
      rows,
    );
    expect(edges(out)).toEqual([
      [90, 'raised'],
      [135, 'cleared'],
    ]);
    expect(out.map((o) => o.values?.temp)).toEqual([85, 70]);
  });

  it('debounce: a condition that holds with no new reading still raises, on the clock; a missing value changes nothing', () => {
    const out = run(
      '  - { id: b, protocol: simulator, points: [{ name: temp }] }',
      '  - { name: s, from: { device: b }, steps: [{ debounce: { when: "temp > 80", for: 30s, clear_for: 10s } }, { event: { code: HOT } }], to: [out] }',
      [`${t(0)} b temp 85`, `${t(100)} b temp`, `${t(200)} b temp 70`, `${t(205)} b temp`, `${t(215)} b temp 75`],
    );
    // raised at 30 s by the clock (the data's, ticking at 100 s); the empty values at 100 s and 205 s say nothing
    expect(edges(out)).toEqual([
      [30, 'raised'],
      [210, 'cleared'],
    ]);
  });

  it('absence for 60s: readings every 10 s up to 100 s, none until 400 s: raise at 160 s with last_seen, clear at 400 s', () => {
    const rows = [...every(10, 0, 100, () => 'f flow 3'), `${t(400)} f flow 2`];
    const out = run(
      '  - { id: f, protocol: simulator, points: [{ name: flow }] }',
      '  - { name: s, from: { device: f }, steps: [{ absence: { for: 60s, point: flow } }, { event: { code: SILENT } }], to: [out] }',
      rows,
    );
    expect(edges(out)).toEqual([
      [160, 'raised'],
      [400, 'cleared'],
    ]);
    expect(out.map((o) => o.values?.last_seen)).toEqual([sec(100), sec(100)]);
  });

  it('absence over "flow-*": a device that never reports raises with last_seen null; bad values are no sign of life', () => {
    const out = run(
      '  - { id: flow-1, protocol: simulator, points: [{ name: flow }] }\n  - { id: flow-2, protocol: simulator, points: [{ name: flow }] }\n  - { id: pump, protocol: simulator, points: [{ name: flow }] }',
      '  - { name: s, from: { device: "flow-*" }, steps: [{ absence: { for: 60s } }], to: [out] }',
      [...every(10, 0, 120, () => 'flow-1 flow 3'), ...every(10, 0, 120, () => 'pump flow 1'), `${t(130)} flow-2 flow`],
    );
    expect(out.map((o) => [o.device, (o.ts! - sec(0)) / 1000, o.values])).toEqual([['flow-2', 60, { last_seen: null }]]);
  });

  it('sequence running == 1 then flow >= 1 within 30s, emit timeout: timeout at 230 s; clears when the pump stops; a start followed by flow in time is no timeout', () => {
    const rows = [
      ...every(10, 100, 190, () => 'p running 0'),
      ...every(10, 200, 300, () => 'p running 1'),
      ...every(10, 100, 300, () => 'p flow 0.2'),
      `${t(310)} p running 0`,
      `${t(320)} p running 1`,
      `${t(330)} p flow 5`,
      ...every(10, 340, 420, () => 'p running 1'),
    ];
    const devices = '  - { id: p, protocol: simulator, points: [{ name: running }, { name: flow }] }';
    const timeout = run(devices, '  - { name: s, from: { device: p }, steps: [{ sequence: { steps: ["running == 1", "flow >= 1"], within: 30s, emit: timeout } }, { event: { code: NO_FLOW } }], to: [out] }', rows);
    expect(edges(timeout)).toEqual([
      [230, 'raised'],
      [310, 'cleared'],
    ]);
    const matched = run(devices, '  - { name: s, from: { device: p }, steps: [{ sequence: { steps: ["running == 1", "flow >= 1"], within: 30s } }], to: [out] }', rows);
    expect(matched.map((o) => [(o.ts! - sec(0)) / 1000, o.values?.flow])).toEqual([[330, 5]]);
  });

  it('sequence over two devices (key: [], max_age 10s): pump-1 starts, flow-1 stays low: NO_FLOW and the action that stops the pump', () => {
    const out = run(
      '  - { id: pump-1, protocol: simulator, points: [{ name: running }, { name: run_cmd, writable: true }] }\n  - { id: flow-1, protocol: simulator, points: [{ name: flow }] }',
      `  - name: pump-no-flow
    from: { devices: [pump-1, flow-1], max_age: 10s }
    steps:
      - sequence: { steps: ["\`pump-1.running\` == 1", "\`flow-1.flow\` >= 1"], within: 30s, emit: timeout, key: [] }
      - event: { code: NO_FLOW, severity: critical, description: "pump-1 runs, flow {flow-1.flow} m³/h" }
    to: [out, { action: { device: pump-1, point: run_cmd, value: 0 } }]`,
      [...every(5, 0, 60, (s) => `pump-1 running ${s >= 10 ? 1 : 0}`), ...every(5, 0, 60, () => 'flow-1 flow 0.3')],
    );
    expect(out.map((o) => (o.action ? ['action', o.action.device, o.action.value] : [o.event?.code, o.event?.state, (o.ts! - sec(0)) / 1000, o.event?.description]))).toEqual([
      ['NO_FLOW', 'raised', 40, 'pump-1 runs, flow 0.3 m³/h'],
      ['action', 'pump-1', 0],
    ]);
  });

  it('count tripped == 1, at least 3 within 10m: raises at the third trip, clears when the first leaves the interval', () => {
    const out = run(
      '  - { id: k, protocol: simulator, points: [{ name: tripped }] }',
      '  - { name: s, from: { device: k }, steps: [{ count: { when: "tripped == 1", at_least: 3, within: 10m } }, { event: { code: REPEATED_TRIPS } }], to: [out] }',
      ['10:00 k tripped 1', '10:01 k tripped 0', '10:02 k tripped 1', '10:03 k tripped 0', '10:05 k tripped 1', '10:06 k tripped 0', '10:20 k tripped 0'],
    );
    expect(out.map((o) => [new Date(o.ts!).toISOString().slice(11, 16), o.event?.state])).toEqual([
      ['10:05', 'raised'],
      ['10:10', 'cleared'],
    ]);
  });

  it('episode running == 1 with power integral and max: one reading at the start with duration_s; a missing value neither extends nor ends it', () => {
    const rows = [
      '09:58 m running 0',
      '09:58 m power_kw 0',
      ...Array.from({ length: 42 }, (_, i) => [`10:${String(i).padStart(2, '0')} m running 1`, `10:${String(i).padStart(2, '0')} m power_kw ${i === 20 ? 30 : 10}`]).flat(),
      '10:42 m running',
      '10:43 m running 0',
      '10:43 m power_kw 0',
    ];
    const out = run(
      '  - { id: m, protocol: simulator, points: [{ name: running }, { name: power_kw }] }',
      '  - { name: s, from: { device: m }, steps: [{ episode: { when: "running == 1", functions: { power_kw: [integral, max] } } }], to: [out] }',
      rows,
    );
    expect(out.map((o) => [new Date(o.ts!).toISOString().slice(11, 16), o.values])).toEqual([
      ['10:00', { duration_s: 43 * 60, power_kw_integral: expect.closeTo(41 / 6 + 20 / 60, 6), power_kw_max: 30 }],
    ]);
  });
});

describe('streams over several devices', () => {
  const devices = ['pump-1', 'pump-2', 'flow-1'].map((id) => `  - { id: ${id}, protocol: simulator, points: [{ name: v }] }`).join('\n');

  it('a glob reads the devices it matches; a list reads its devices; max_age makes an old value of another device missing', () => {
    const rows = ['10:00:00 flow-1 v 0.5', '10:00:00 pump-1 v 1', '10:00:05 pump-2 v 2', '10:00:05 pump-1 v 1', '10:00:20 pump-1 v 1'];
    const glob = run(devices, '  - { name: s, from: { device: "pump-*" }, to: [out] }', rows);
    expect(glob.map((o) => o.device)).toEqual(['pump-1', 'pump-2', 'pump-1', 'pump-1']);
    const list = run(devices, '  - { name: s, from: { devices: [flow-1, pump-2] }, to: [out] }', rows);
    expect(list.map((o) => o.device)).toEqual(['flow-1', 'pump-2']);
    const fresh = run(
      devices,
      '  - { name: s, from: { devices: [pump-1, flow-1], max_age: 10s }, steps: [{ filter: "device == \'pump-1\' and `flow-1.v` < 1" }], to: [out] }',
      rows,
    );
    // at 10:00:20 flow-1's value is 20 s old: missing, so the filter does not hold
    expect(fresh.map((o) => o.ts! - at('10:00'))).toEqual([0, 5000]);
  });
});

describe('docs/operators.md worked examples: unusual values and sensor health', () => {
  const devices = '  - { id: v, protocol: simulator, points: [{ name: x }] }';
  const stream = (step: string) => `  - { name: s, from: { device: v }, steps: [${step}], to: [out] }`;
  const series = (values: number[], step = 1) => values.map((x, i) => `${t(i * step)} v x ${x}`);

  it('anomaly zscore over 5 readings, threshold 3, clear_after 2: 20 after 10–11 raises (score 19); two normal readings clear', () => {
    const out = run(devices, stream('{ anomaly: { point: x, method: zscore, window: 5, threshold: 3, clear_after: 2 } }, { event: { code: ODD } }'), series([10, 11, 10, 11, 10, 10.5, 20, 10.5, 10.4, 10.6]));
    expect(out.map((o) => [o.values?.x, o.values?.x_score, o.event?.state])).toEqual([
      [20, 19, 'raised'],
      [10.4, expect.any(Number), 'cleared'],
    ]);
  });

  it('anomaly pass: all adds the score to every reading once warm; mad keeps the spike from hiding the next one', () => {
    const values = [10, 11, 10, 11, 10, 50, 10, 52, 10, 11];
    const z = run(devices, stream('{ anomaly: { point: x, method: zscore, window: 5, pass: all } }'), series(values));
    const mad = run(devices, stream('{ anomaly: { point: x, method: mad, window: 5, pass: all } }'), series(values));
    // no score during the warmup (the window's 5 readings)
    expect(z.slice(0, 5).every((o) => o.values?.x_score === undefined)).toBe(true);
    const at52 = (out: Out[]) => out.find((o) => o.values?.x === 52)!.values!.x_score as number;
    // zscore: the 50 in its window inflates the sd, and 52 scores under 3; mad still sees it
    expect(at52(z)).toBeLessThan(3);
    expect(at52(mad)).toBeGreaterThan(3);
  });

  it('anomaly rate, max_rate 5/s: a jump of 16 in 1 s scores 3.2 and raises; three normal steps (the default clear_after) clear', () => {
    const out = run(devices, stream('{ anomaly: { point: x, method: rate, max_rate: 5/s } }'), series([10, 12, 14, 30, 31, 32, 33]));
    expect(out.map((o) => [o.values?.x, o.values?.x_score])).toEqual([
      [30, 3.2],
      [33, 0.2],
    ]);
  });

  it('anomaly ewma: a level shift raises, and is learned as the new normal', () => {
    const values = [...Array.from({ length: 40 }, (_, i) => 10 + (i % 2) * 0.2), ...Array.from({ length: 200 }, (_, i) => 20 + (i % 2) * 0.2)];
    const out = run(devices, stream('{ anomaly: { point: x, method: ewma, alpha: 0.1, warmup: 30 } }, { event: { code: SHIFT } }'), series(values));
    expect(out.map((o) => [o.values?.x, o.event?.state])).toEqual([
      [20, 'raised'],
      [expect.any(Number), 'cleared'],
    ]);
  });

  it('flatline for 1m, epsilon 0.1: 5.0 ± 0.05 every 10 s raises at 60 s, stale; 5.5 clears', () => {
    const rows = [...[5.0, 5.05, 4.95, 5.0, 5.02, 5.0, 5.0, 4.99].map((x, i) => `${t(i * 10)} v x ${x}`), `${t(80)} v x 5.5`];
    const edgesOut = run(devices, stream('{ flatline: { point: x, for: 1m, epsilon: 0.1 } }, { event: { code: STUCK } }'), rows);
    expect(edgesOut.map((o) => [(o.ts! - sec(0)) / 1000, o.event?.state, o.quality?.x])).toEqual([
      [60, 'raised', 'stale'],
      [80, 'cleared', undefined],
    ]);
    const all = run(devices, stream('{ flatline: { point: x, for: 1m, epsilon: 0.1, pass: all } }'), rows);
    expect(all.map((o) => o.quality?.x ?? 'good')).toEqual(['good', 'good', 'good', 'good', 'good', 'good', 'stale', 'stale', 'good']);
  });

  it('capture before 20s, after 20s, when x > 400, a reading every 10 s: 20 s before the trigger to 20 s after, marked with it', () => {
    const rows = Array.from({ length: 13 }, (_, i) => `${t(i * 10)} v x ${i === 7 ? 500 : 100}`);
    const out = run(devices, stream('{ capture: { when: "x > 400", before: 20s, after: 20s } }'), rows);
    expect(out.map((o) => [(o.ts! - sec(0)) / 1000, o.values?.x, ((o as { capture?: number }).capture! - sec(0)) / 1000])).toEqual([
      [50, 100, 70],
      [60, 100, 70],
      [70, 500, 70],
      [80, 100, 70],
      [90, 100, 70],
    ]);
  });
});

describe('docs/operators.md worked examples: event attributes', () => {
  it('severity, code, source and acknowledged as expressions (=…); a field may not take an event\'s own name', () => {
    const out = run(
      '  - { id: b, protocol: simulator, points: [{ name: temp }, { name: ack }] }',
      `  - name: s
    from: { device: b }
    steps:
      - event: { code: "=temp > 100 ? 'OVERHEAT' : 'WARM'", severity: "=temp > 100 ? 'critical' : 'minor'", description: "boiler at {temp} °C", source: "=device", acknowledged: "=ack == 1" }
    to: [out]`,
      ['10:00 b temp 90', '10:00 b ack 0', '10:01 b temp 120', '10:01 b ack 1', '10:02 b temp 130'],
    );
    expect(out.map((o) => o.event)).toEqual([
      { code: 'WARM', severity: 'minor', description: 'boiler at 90 °C', source: 'b', acknowledged: false, state: 'raised' },
      { code: 'OVERHEAT', severity: 'critical', description: 'boiler at 120 °C', source: 'b', acknowledged: true, state: 'raised' },
      // ack is not in this reading: its latest value (1) is used, as everywhere in expressions
      { code: 'OVERHEAT', severity: 'critical', description: 'boiler at 130 °C', source: 'b', acknowledged: true, state: 'raised' },
    ]);
  });

  it('a severity expression that gives no severity is info, counted', () => {
    const out = run(
      '  - { id: b, protocol: simulator, points: [{ name: temp }] }',
      '  - { name: s, from: { device: b }, steps: [{ event: { code: X, severity: "=temp > 100 ? \'urgent\' : \'minor\'" } }], to: [out] }',
      ['10:00 b temp 120', '10:01 b temp 50'],
    );
    expect(out.map((o) => o.event?.severity)).toEqual(['info', 'minor']);
  });
});

describe('docs/operators.md worked examples: rounding', () => {
  it('window, energy and episode results to round: N decimal places (0.1 + 0.2 is 0.3)', () => {
    const devices = '  - { id: r, protocol: simulator, points: [{ name: v }] }';
    const rows = ['10:00 r v 0.1', '10:05 r v 0.2', '10:16 r v 0'];
    const plain = run(devices, '  - { name: s, from: { device: r }, steps: [{ window: { size: 15m, functions: { v: [sum] } } }], to: [out] }', rows);
    expect(plain[0].values).toEqual({ v_sum: 0.30000000000000004 });
    const rounded = run(devices, '  - { name: s, from: { device: r }, steps: [{ window: { size: 15m, functions: { v: [sum, avg] }, round: 3 } }], to: [out] }', rows);
    expect(rounded[0].values).toEqual({ v_sum: 0.3, v_avg: 0.15 });
  });
});
