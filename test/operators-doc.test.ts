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
