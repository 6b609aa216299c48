import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI } from './support/cli.js';


const CONFIG = `agent: { id: gw-replay }
devices:
  - id: meter-1
    protocol: simulator
    points:
      - { name: power_kw, signal: sine }
      - { name: energy_kwh, signal: counter }
      - { name: breaker, writable: true }
streams:
  - name: power-15m
    from: { device: meter-1, points: [power_kw, energy_kwh] }
    steps:
      - threshold: { point: power_kw, min: 0, max: 500, fill: linear }
      - energy: { method: meter-reading, point: energy_kwh, window: 15m, output: energy_15m_kwh }
    to: [cloud]
  - name: overload
    from: { device: meter-1 }
    steps:
      - hysteresis: { emit: "power_kw > 400", release: "power_kw < 350", on_release: true }
      - event: { code: OVERLOAD, severity: major, description: "power {power_kw} kW" }
    to:
      - cloud
      - action: { device: meter-1, point: breaker, value: false }
  - name: every-10m
    from: { timer: { every: 10m } }
    steps:
      - filter: "meter_1_dummy == 1 or true"
    to: [cloud]
upstream:
  - { name: cloud, type: mqtt, url: "mqtt://127.0.0.1:1", topic: "t" }
`;

function csv(): string {
  const start = Date.UTC(2026, 0, 5, 10, 0);
  const rows = ['ts,device,point,value'];
  for (let i = 0; i <= 31; i++) {
    const ts = start + i * 60_000;
    const power = i === 5 ? 900 : i >= 10 && i < 14 ? 420 : 100;
    // alternate the two ts forms
    const stamp = i % 2 ? new Date(ts).toISOString() : String(ts);
    rows.push(`${stamp},meter-1,power_kw,${power}`, `${stamp},meter-1,energy_kwh,${1000 + i}`);
  }
  return rows.join('\n') + '\n';
}

function run(config: string, input: string) {
  return spawnSync(process.execPath, [...CLI, 'replay', '--config', config, '--input', input], { encoding: 'utf8' });
}

describe('edge-agent replay', () => {
  const dir = mkdtempSync(join(tmpdir(), 'replay-'));
  const config = join(dir, 'agent.yaml');
  const input = join(dir, 'input.csv');
  writeFileSync(config, CONFIG);
  writeFileSync(input, csv());

  it('prints the upstream records, events and actions, deterministically', () => {
    const first = run(config, input);
    expect(first.status, first.stderr).toBe(0);
    const lines = first.stdout.trim().split('\n').map((l) => JSON.parse(l));

    const energy = lines.filter((l) => l.values?.energy_15m_kwh !== undefined);
    expect(energy.map((l) => [new Date(l.ts).toISOString().slice(11, 16), l.values.energy_15m_kwh])).toEqual([
      ['10:00', 15],
      ['10:15', 15],
    ]);
    // 10:05 = 900 kW was an outlier: interpolated between 100 and 100
    const interpolated = lines.find((l) => l.quality?.power_kw === 'interpolated');
    expect(interpolated).toMatchObject({ stream: 'power-15m', ts: Date.UTC(2026, 0, 5, 10, 5), values: { power_kw: 100 } });

    const events = lines.filter((l) => l.event);
    // the overload stream has no threshold step: the 900 kW spike is an overload there
    expect(events.map((l) => [new Date(l.ts).toISOString().slice(11, 16), l.event.state, l.event.description])).toEqual([
      ['10:05', 'raised', 'power 900 kW'],
      ['10:06', 'cleared', 'power 100 kW'],
      ['10:10', 'raised', 'power 420 kW'],
      ['10:14', 'cleared', 'power 100 kW'],
    ]);
    const actions = lines.filter((l) => l.action);
    expect(actions.map((l) => new Date(l.action.ts).toISOString().slice(11, 16))).toEqual(['10:05', '10:10']);
    expect(actions[0]).toEqual({ action: { stream: 'overload', device: 'meter-1', point: 'breaker', value: false, ts: Date.UTC(2026, 0, 5, 10, 5) } });

    const ticks = lines.filter((l) => l.stream === 'every-10m');
    expect(ticks.map((l) => new Date(l.ts).toISOString().slice(11, 16))).toEqual(['10:00', '10:10', '10:20', '10:30']);

    const seqs = lines.filter((l) => l.seq).map((l) => l.seq);
    expect(seqs).toEqual(seqs.map((_, i) => i + 1));
    expect(first.stderr).toContain('replayed 32 readings');

    const second = run(config, input);
    expect(second.stdout).toBe(first.stdout);
  });

  it('names the line of a bad row and the config error of a bad config', () => {
    const bad = join(dir, 'bad.csv');
    writeFileSync(bad, 'ts,device,point,value\n1000,meter-1,power_kw,1\nyesterday,meter-1,power_kw,2\n');
    const result = run(config, bad);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`${bad}:3: "yesterday" is neither epoch ms nor an ISO 8601 time`);

    const badConfig = join(dir, 'bad.yaml');
    writeFileSync(badConfig, CONFIG.replace('min: 0, max: 500', 'min: 500, max: 0'));
    const configResult = run(badConfig, input);
    expect(configResult.status).toBe(1);
    expect(configResult.stderr).toMatch(/bad.yaml:13:\d+: streams\[0\]\.steps\[0\]\.threshold\.min: stream power-15m, step 1 \(threshold\): min \(500\) is greater than max \(0\)/);
  });
});

describe('edge-agent replay --order', () => {
  it('sorts by time by default; --order file keeps a late row late, where a window drops it; a bad order is refused', () => {
    const dir = mkdtempSync(join(tmpdir(), 'replay-order-'));
    const config = join(dir, 'agent.yaml');
    const input = join(dir, 'in.csv');
    writeFileSync(
      config,
      `agent: { id: gw }
devices: [{ id: m, protocol: simulator, points: [{ name: v }] }]
streams: [{ name: w, from: { device: m }, steps: [{ window: { size: 15m, functions: { v: [avg, count] } } }], to: [out] }]
upstream: [{ name: out, type: file, path: /dev/null }]
`,
    );
    writeFileSync(input, ['2026-01-05T10:00:00Z,m,v,1', '2026-01-05T10:16:00Z,m,v,2', '2026-01-05T10:05:00Z,m,v,100'].join('\n'));
    const windows = (order?: string) => {
      const result = spawnSync(process.execPath, [...CLI, 'replay', '--config', config, '--input', input, ...(order ? ['--order', order] : [])], { encoding: 'utf8' });
      expect(result.status, result.stderr).toBe(0);
      return result.stdout.trim().split('\n').map((line) => JSON.parse(line).values);
    };
    expect(windows()).toEqual([{ v_avg: 50.5, v_count: 2 }]);
    expect(windows('file')).toEqual([{ v_avg: 1, v_count: 1 }]);
    const bad = spawnSync(process.execPath, [...CLI, 'replay', '--config', config, '--input', input, '--order', 'random'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('--order takes time or file, not "random"');
  });
});

describe('edge-agent replay agrees with a live run', () => {
  const dir = mkdtempSync(join(tmpdir(), 'replay-live-'));
  const config = join(dir, 'agent.yaml');
  writeFileSync(
    config,
    `agent: { id: gw }
devices: [{ id: m, protocol: simulator, points: [{ name: v }, { name: mode }] }]
streams:
  - { name: sampled, from: { device: m, points: [v] }, steps: [{ sampler: { interval: 10s } }], to: [out] }
  - { name: w, from: { device: m, points: [v] }, steps: [{ window: { size: 15m, functions: { v: [avg, count] } } }], to: [out] }
  - { name: runs, from: { device: m, points: [v] }, steps: [{ episode: { when: "v > 0", functions: { v: [max] } } }], to: [out] }
upstream: [{ name: out, type: file, path: /dev/null }]
`,
  );
  const replayOf = (rows: string[], ...flags: string[]) => {
    const input = join(dir, `in-${Math.random().toString(36).slice(2)}.csv`);
    writeFileSync(input, rows.join('\n'));
    return spawnSync(process.execPath, [...CLI, 'replay', '--config', config, '--input', input, ...flags], { encoding: 'utf8' });
  };
  const records = (result: ReturnType<typeof replayOf>) => {
    expect(result.status, result.stderr).toBe(0);
    return result.stdout.trim().split('\n').filter(Boolean).map((line) => JSON.parse(line) as { stream: string; ts: number; values: Record<string, number>; quality?: Record<string, string> });
  };

  it('an arrival column is the clock of the sampler: two readings of different ts arriving together pass once, as live', () => {
    // a device that buffered: two readings 30 s apart by their ts, reaching the agent in the same second
    const rows = ['2026-01-05T10:00:00Z,m,v,1', '2026-01-05T10:00:30Z,m,v,2'];
    expect(records(replayOf(rows)).filter((r) => r.stream === 'sampled')).toHaveLength(2);
    const arrived = ['ts,device,point,value,arrival', '2026-01-05T10:00:00Z,m,v,1,2026-01-05T10:00:31Z', '2026-01-05T10:00:30Z,m,v,2,2026-01-05T10:00:31.200Z'];
    expect(records(replayOf(arrived)).filter((r) => r.stream === 'sampled').map((r) => r.values.v)).toEqual([1]);
  });

  it('--flush emits the open window and the open episode at the end, partial', () => {
    const rows = ['2026-01-05T10:00:00Z,m,v,1', '2026-01-05T10:05:00Z,m,v,3'];
    expect(records(replayOf(rows)).filter((r) => r.stream !== 'sampled')).toEqual([]);
    const flushed = records(replayOf(rows, '--flush')).filter((r) => r.stream !== 'sampled');
    expect(flushed.map((r) => [r.stream, r.values, r.quality])).toEqual([
      ['w', { v_avg: 2, v_count: 2 }, { v_avg: 'partial', v_count: 'partial' }],
      ['runs', { duration_s: 300, v_max: 3 }, { duration_s: 'partial', v_max: 'partial' }],
    ]);
  });

  it('a text value for a point a step computes with is an error naming the CSV line; text for other points is fine', () => {
    const bad = replayOf(['2026-01-05T10:00:00Z,m,v,1', '2026-01-05T10:00:10Z,m,mode,auto', '2026-01-05T10:00:20Z,m,v,abc']);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/in-\w+\.csv:3: m\.v is "abc", not a number, and stream w computes with it/);
  });
});
