import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { AgentProcess } from './support/agent-process.js';
import { CLI } from './support/cli.js';
import { TimerSchedule } from '../src/connectors/timer/timer.js';
import { loadConfigFile } from '../src/config/load.js';
import { validateConfig } from '../src/streams/build.js';
import { until } from './support/ports.js';
import { StepHarness, at, minutes, reading } from './support/steps.js';

const SECOND = 1000;
const dbFile = () => join(mkdtempSync(join(tmpdir(), 'attack-events-')), 'state.db');

/**
 * An attacker's pass over the event operators: each test states what a plant user would expect
 * and fails while the operator does otherwise.
 */
describe('a step whose parameters change while its state is kept (same stream, position and operator)', () => {
  it('anomaly: method ewma -> zscore on reload does not throw on the next reading', () => {
    const file = dbFile();
    const before = new StepHarness('anomaly', { point: 'x', method: 'ewma', warmup: 3 }, 'UTC', file);
    for (let i = 0; i < 10; i++) before.push(reading(at('10:00') + i * SECOND, { x: 10 + (i % 2) }));
    before.restart(); // saves the state as a group commit does
    // the config is reloaded with another method: docs say the state belongs to stream + position + operator
    const after = new StepHarness('anomaly', { point: 'x', method: 'zscore', window: 5, warmup: 3 }, 'UTC', file);
    expect(() => after.push(reading(at('10:01'), { x: 11 }))).not.toThrow();
  });

  it('anomaly: method zscore -> mad on reload does not throw on the next reading', () => {
    const file = dbFile();
    const before = new StepHarness('anomaly', { point: 'x', method: 'zscore', window: 5 }, 'UTC', file);
    for (let i = 0; i < 10; i++) before.push(reading(at('10:00') + i * SECOND, { x: 10 + (i % 2) }));
    before.restart();
    const after = new StepHarness('anomaly', { point: 'x', method: 'mad', window: 5 }, 'UTC', file);
    expect(() => after.push(reading(at('10:01'), { x: 11 }))).not.toThrow();
  });

  it('count: at_least lowered from 5 to 3 on reload still raises at 3 readings', () => {
    const file = dbFile();
    const before = new StepHarness('count', { when: 'tripped == 1', at_least: 5, within: minutes(10) }, 'UTC', file);
    // five trips spread over an hour: no raise, but the key keeps its last 5 times
    for (let i = 0; i < 5; i++) before.push(reading(at('10:00') + i * minutes(15), { tripped: 1 }));
    expect(before.out).toHaveLength(0);
    before.restart();
    const after = new StepHarness('count', { when: 'tripped == 1', at_least: 3, within: minutes(10) }, 'UTC', file);
    // three trips within a minute, right after the last one
    const out = after.push(
      reading(at('11:01'), { tripped: 1 }),
      reading(at('11:01:20'), { tripped: 1 }),
      reading(at('11:01:40'), { tripped: 1 }),
    );
    expect(out.map((r) => r.edge)).toEqual(['raise']);
  });

  it('anomaly: window lowered from 50 to 5 on reload scores over 5 values', () => {
    const file = dbFile();
    const before = new StepHarness('anomaly', { point: 'x', method: 'zscore', window: 50, pass: 'all' }, 'UTC', file);
    // 50 readings around 10
    for (let i = 0; i < 50; i++) before.push(reading(at('10:00') + i * SECOND, { x: 10 + (i % 2) }));
    before.restart();
    const after = new StepHarness('anomaly', { point: 'x', method: 'zscore', window: 5, pass: 'all' }, 'UTC', file);
    for (let i = 0; i < 5; i++) after.push(reading(at('10:02') + i * SECOND, { x: 1000 }));
    const [scored] = after.push(reading(at('10:03'), { x: 1000 }));
    // over the last 5 values (all 1000) a 1000 deviates by nothing
    expect(scored.values.x_score).toBe(0);
  });
});

describe('anomaly ewma facing one absurd but finite value (a garbage float64 register)', () => {
  const learnNormal = (step: StepHarness, from: number, n: number) => {
    for (let i = 0; i < n; i++) step.push(reading(from + i * SECOND, { x: 10 + (i % 3) }));
  };

  it('still raises on a real spike some time after one 1e200 reading', () => {
    const step = new StepHarness('anomaly', { point: 'x', method: 'ewma' });
    learnNormal(step, at('10:00'), 100);
    step.push(reading(at('10:02'), { x: 1e200 })); // raises, as it should
    learnNormal(step, at('10:03'), 2000); // ~33 min of normal readings at 1 s
    const before = step.out.length;
    step.push(reading(at('11:00'), { x: 1000 }), reading(at('11:00:01'), { x: 1000 }));
    // a jump from ~11 to 1000 is as anomalous as the first test of the guide
    expect(step.out.slice(before).map((r) => r.edge)).toContain('raise');
  });

  it('scores the same with or without a restart in between (the statistics saved as JSON)', () => {
    const run = (restart: boolean) => {
      const step = new StepHarness('anomaly', { point: 'x', method: 'ewma', pass: 'all' }, 'UTC', dbFile());
      learnNormal(step, at('10:00'), 100);
      step.push(reading(at('10:02'), { x: 1e200 }));
      learnNormal(step, at('10:03'), 100);
      if (restart) step.restart();
      return step.push(reading(at('11:00'), { x: 11 }))[0].values.x_score;
    };
    // the variance is Infinity in memory, saved as null, read back as 0: one normal reading scores 0 or 1e6
    expect(run(true)).toBe(run(false));
  });
});

describe('late (out-of-order) readings', () => {
  it('count: three trips that are not within 10 minutes of each other do not raise, whatever order they arrive in', () => {
    const step = new StepHarness('count', { when: 'tripped == 1', at_least: 3, within: minutes(10) });
    // trips at 10:00 and 10:20 arrive in order; the one of 10:01 arrives late (a device's buffer, replay --order file)
    const out = step.push(reading(at('10:00'), { tripped: 1 }), reading(at('10:20'), { tripped: 1 }), reading(at('10:01'), { tripped: 1 }));
    // 10:00, 10:01, 10:20: no 10-minute interval holds three of them
    expect(out.map((r) => r.edge)).toEqual([]);
  });

  it('debounce: a late true reading does not raise when every reading since has been false', () => {
    const step = new StepHarness('debounce', { when: 'temp > 80', for: 30 * SECOND });
    // temp 70 every 10 s from 10:00 to 10:10
    for (let t = at('10:00'); t <= at('10:10'); t += 10 * SECOND) step.push(reading(t, { temp: 70 }));
    // a reading of 10:05 comes late, at 10:10, with 85
    step.clock = at('10:10');
    step.push(reading(at('10:05'), { temp: 85 }));
    const out = step.tick(at('10:10:01'));
    // `when` has not held on every reading for 30 s: 10:05:10 and later were 70
    expect(out.map((r) => r.edge)).toEqual([]);
  });
});

describe('late (out-of-order) readings, episode', () => {
  it('episode: a late reading from before the run began does not end the run', () => {
    const step = new StepHarness('episode', { when: 'running == 1', functions: { power_kw: ['max'] } });
    for (let t = at('10:00'); t <= at('10:30'); t += minutes(1)) step.push(reading(t, { running: 1, power_kw: 5 }));
    // a reading of 09:59 (the pump still off then) arrives late, at 10:30
    const out = step.push(reading(at('09:59'), { running: 0, power_kw: 0 }));
    // the run goes on: nothing passes yet (it passed one of duration_s 0 for a 30-minute run)
    expect(out.map((r) => r.values)).toEqual([]);
  });
});

describe('a broken sensor (failed reads: value null, quality bad)', () => {
  it('count: failed reads after one trip are not counted as trips (docs: changes nothing, counted missing)', () => {
    const step = new StepHarness('count', { when: 'tripped == 1', at_least: 3, within: minutes(10) });
    step.push(reading(at('10:00'), { tripped: 1 }));
    const failed = (ts: number) => reading(ts, { tripped: null }, 'm1', { quality: { tripped: 'bad' } });
    const out = step.push(failed(at('10:01')), failed(at('10:02')));
    expect(out.map((r) => r.edge)).toEqual([]);
    expect(step.count('missing')).toBe(2);
  });
});

describe('the live agent, a config reloaded with another anomaly method', () => {
  const config = (dir: string, method: string) => `agent: { id: gw-attack, data_dir: ${dir}/data, log_level: info, http: "off" }
devices:
  - { id: sim0, protocol: simulator, poll: 100ms, points: [{ name: p, signal: sine, min: 0, max: 10, period: 10s }] }
streams:
  - name: scored
    from: { device: sim0 }
    steps: [{ anomaly: { point: p, method: ${method}, warmup: 3, window: 5, pass: all } }]
    to: [out]
upstream:
  - { name: out, type: file, path: ${dir}/out.jsonl }
`;

  it('keeps running and scoring after the reload (state kept: same stream, position, operator)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'attack-reload-'));
    const file = join(dir, 'agent.yaml');
    const out = join(dir, 'out.jsonl');
    const lines = () => (existsSync(out) ? readFileSync(out, 'utf8').split('\n').filter(Boolean).length : 0);
    writeFileSync(file, config(dir, 'ewma'));
    const agent = AgentProcess.start(file);
    try {
      await until(() => lines() >= 20, 20_000, '20 scored records');
      await new Promise((r) => setTimeout(r, 1500)); // the state saved by a group commit
      writeFileSync(file, config(dir, 'zscore'));
      await agent.waitForLog(/applied/, 10_000);
      await new Promise((r) => setTimeout(r, 3000));
      const reloaded = { exitCode: agent.exitCode, signal: agent.signal };
      // systemd starts it again, with the config now on disk and the state it saved
      const again = AgentProcess.start(file);
      await new Promise((r) => setTimeout(r, 4000));
      const restarted = { exitCode: again.exitCode, signal: again.signal };
      if (again.exitCode === null) again.kill('SIGKILL');
      console.log(again.log.filter((l) => /TypeError/.test(l)).slice(0, 1).join('\n').slice(0, 600));
      expect({ reloaded, restarted }).toEqual({ reloaded: { exitCode: null, signal: null }, restarted: { exitCode: null, signal: null } });
    } finally {
      if (agent.exitCode === null) agent.kill('SIGKILL');
      console.log(agent.log.filter((l) => /TypeError/.test(l)).slice(0, 1).join('\n').slice(0, 600));
    }
  }, 60_000);
});

describe('memory per key', () => {
  it('capture: a key silent for longer than `before` no longer holds its buffered readings', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    // key: [batch]: a new batch id every few minutes, as a batch plant labels its readings
    const heldAfter = async (before: number) => {
      const step = new StepHarness('capture', { when: 'x > 100', before, after: 10 * SECOND, max_readings: 1000, key: ['batch'] });
      const refs: WeakRef<object>[] = [];
      for (let batch = 0; batch < 50; batch++) {
        for (let i = 0; i < 20; i++) {
          const r = reading(at('10:00') + batch * minutes(5) + i * SECOND, { x: 1, batch: `B${batch}`, payload: 'x'.repeat(1000) + batch + i });
          if (batch < 10) refs.push(new WeakRef(r));
          step.push(r);
        }
        // the agent's clock ticks (about once a second live; with the data in a replay)
        step.tick(at('10:00') + batch * minutes(5) + 20 * SECOND);
      }
      await new Promise((r) => setTimeout(r, 0));
      gc();
      return refs.filter((ref) => ref.deref() !== undefined).length;
    };
    // the measure works: with no buffer (before 0), nothing of batches 0-9 is held
    expect(await heldAfter(0)).toBe(0);
    // batches 0-9 ended more than 3 hours (of the data's time) before the last reading
    const held = await heldAfter(30 * SECOND);
    expect(held).toBe(0);
  });
});

describe('replay edge cases', () => {
  it('gives the same output on a gateway in another time zone (ts written as ISO 8601 without an offset)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'attack-replay-'));
    const config = join(dir, 'agent.yaml');
    const input = join(dir, 'in.csv');
    writeFileSync(
      config,
      `agent: { id: gw, timezone: UTC }
devices:
  - { id: m1, protocol: simulator, points: [{ name: x, signal: sine }] }
streams:
  - { name: all, from: { device: m1 }, to: [cloud] }
upstream:
  - { name: cloud, type: file, path: ${dir}/out.jsonl }
`,
    );
    // a CSV exported by a historian: local-looking times, no offset
    writeFileSync(input, 'ts,device,point,value\n2026-01-05T10:00:00,m1,x,1\n');
    const run = (TZ: string) => {
      const result = spawnSync(process.execPath, [...CLI, 'replay', '--config', config, '--input', input], { encoding: 'utf8', env: { ...process.env, TZ } });
      expect(result.status, result.stderr).toBe(0);
      return JSON.parse(result.stdout.trim()).ts as number;
    };
    // README: "the output is the same on every run"
    expect(run('Asia/Tokyo')).toBe(run('UTC'));
  });
});

describe('timer at', () => {
  it('an `at` without an offset ticks at the same moment whatever the host time zone (agent.timezone is Europe/Berlin)', () => {
    const saved = process.env.TZ;
    const tickIn = (TZ: string) => {
      process.env.TZ = TZ; // Node reads TZ again when it changes
      return new TimerSchedule({ at: '2026-12-01T06:00:00' }, 'Europe/Berlin').next(0);
    };
    try {
      const utc = tickIn('UTC');
      const tokyo = tickIn('Asia/Tokyo');
      expect(new Date(tokyo).toISOString()).toBe(new Date(utc).toISOString());
    } finally {
      if (saved === undefined) delete process.env.TZ;
      else process.env.TZ = saved;
    }
  });
});

describe('replay with a timer stream', () => {
  it('refuses a fixed_delay under 1 ms, with which a replay on 2026 timestamps would never finish (ts + 0.0001 is ts)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'attack-timer-'));
    const config = join(dir, 'agent.yaml');
    const input = join(dir, 'in.csv');
    writeFileSync(
      config,
      `agent: { id: gw }
devices:
  - { id: m1, protocol: simulator, points: [{ name: x, signal: sine }] }
streams:
  - { name: tick, from: { timer: { fixed_delay: 0.0001ms } }, steps: [{ filter: "false" }], to: [cloud] }
upstream:
  - { name: cloud, type: file, path: ${dir}/out.jsonl }
`,
    );
    const validate = spawnSync(process.execPath, [...CLI, 'validate', '--config', config], { encoding: 'utf8' });
    expect(validate.status).toBe(1);
    expect(validate.stderr).toContain('fixed_delay must be at least 1ms');
    writeFileSync(input, `${at('10:00')},m1,x,1\n${at('10:00') + 1},m1,x,2\n`);
    const result = spawnSync(process.execPath, [...CLI, 'replay', '--config', config, '--input', input], { encoding: 'utf8', timeout: 20_000 });
    expect({ status: result.status, signal: result.signal }).toEqual({ status: 1, signal: null });
  }, 40_000);
});

describe('event with an =expression code', () => {
  it('description defaults to the code: the computed code, not the expression text (the guide\'s own example)', () => {
    const step = new StepHarness('event', { code: "=temp > 100 ? 'OVERHEAT' : 'WARM'", severity: "=temp > 100 ? 'critical' : 'minor'" });
    const [out] = step.push(reading(at('10:00'), { temp: 120 }));
    expect(out.event).toMatchObject({ code: 'OVERHEAT', severity: 'critical', description: 'OVERHEAT' });
  });
});

describe('clock stepped back a year', () => {
  it('count: an alarm raised on the old time clears once the trips are over (readings false, ticks)', () => {
    const YEAR = 365 * 86_400_000;
    const step = new StepHarness('count', { when: 'tripped == 1', at_least: 2, within: minutes(10) });
    // the gateway booted with its clock a year ahead; two trips raise
    step.clock = at('10:00') + YEAR;
    const raised = step.push(reading(at('10:00') + YEAR, { tripped: 1 }), reading(at('10:01') + YEAR, { tripped: 1 }));
    expect(raised.map((r) => r.edge)).toEqual(['raise']);
    // NTP steps it back a year; the breaker is fine from now on: a reading a minute for an hour
    const later: string[] = [];
    for (let t = at('10:05'); t <= at('11:05'); t += minutes(1)) {
      step.clock = t;
      later.push(...step.push(reading(t, { tripped: 0 })).map((r) => r.edge!));
      later.push(...step.tick(t).map((r) => r.edge!));
    }
    // docs: state stamped far ahead starts again from the readings; none of them is a trip
    expect(later).toEqual(['clear']);
  });
});

describe('capture across a clock stepped back a year', () => {
  it('a capture begun on the old time does not pass every reading at full rate for a year', () => {
    const YEAR = 365 * 86_400_000;
    const step = new StepHarness('capture', { when: 'current_a > 400', before: 30 * SECOND, after: 30 * SECOND });
    step.clock = at('10:00') + YEAR;
    step.push(reading(at('10:00') + YEAR, { current_a: 500 })); // a trip, stamped on the wrong year
    // NTP steps the clock back; the motor runs normally at 1 reading per second for 10 minutes
    let passed = 0;
    for (let t = at('10:00'); t < at('10:10'); t += SECOND) {
      step.clock = t;
      passed += step.push(reading(t, { current_a: 100 })).length;
    }
    // at most one `after` (30 s) of readings, not all 600
    expect(passed).toBeLessThanOrEqual(31);
  });
});

describe('zero durations the config accepts', () => {
  const validates = (step: string) => {
    const dir = mkdtempSync(join(tmpdir(), 'attack-zero-'));
    const file = join(dir, 'agent.yaml');
    writeFileSync(
      file,
      `agent: { id: gw }
devices:
  - { id: m1, protocol: simulator, points: [{ name: x, signal: sine }] }
streams:
  - { name: s, from: { device: m1 }, steps: [${step}, { event: { code: E } }], to: [cloud] }
upstream:
  - { name: cloud, type: file, path: ${dir}/out.jsonl }
`,
    );
    try {
      validateConfig(loadConfigFile(file));
      return 'accepted';
    } catch {
      return 'refused';
    }
  };

  it('absence for: 0s (a raise at every tick and a clear at every reading: two events per reading) is refused as timer every: 0s is', () => {
    expect(validates('{ absence: { for: 0s } }')).toBe('refused');
  });

  it('count within: 0s (it can never raise, even with at_least 1) is refused', () => {
    expect(validates('{ count: { when: "x > 0", at_least: 1, within: 0s } }')).toBe('refused');
  });
});

describe('restart between edges (state saved as a group commit saves it)', () => {
  it('sequence emit: timeout: a clear that passed does not pass again after a restart', () => {
    const step = new StepHarness('sequence', { steps: ['cmd_open == 1', 'flow >= 1'], within: 30 * SECOND, emit: 'timeout' }, 'UTC', dbFile());
    // an open command as a pulse, and no flow
    step.push(reading(at('10:00:00'), { cmd_open: 1, flow: 0 }), reading(at('10:00:05'), { cmd_open: 0, flow: 0 }));
    step.clock = at('10:00:31');
    const edges = step.tick(at('10:00:31')).map((r) => r.edge);
    step.restart(); // the group commit that carried the raise (and a restart, which changes nothing here)
    // the next reading clears it (the first step's condition is false)
    edges.push(...step.push(reading(at('10:00:40'), { cmd_open: 0, flow: 0 })).map((r) => r.edge));
    expect(edges).toEqual(['raise', 'clear']);
    step.restart(); // a power cut after the clear went upstream
    const again = step.push(reading(at('10:00:50'), { cmd_open: 0, flow: 0 })).map((r) => r.edge);
    // docs: after a crash or a kill, an edge already passed does not pass again
    expect(again).toEqual([]);
  });
});

describe('the key\'s latest reading on an edge the clock passes', () => {
  it('count: the clearing edge after a restart carries the latest reading, as without one', () => {
    const run = (restart: boolean) => {
      const step = new StepHarness('count', { when: 'tripped == 1', at_least: 2, within: minutes(10) }, 'UTC', dbFile());
      step.push(reading(at('10:00'), { tripped: 1, current: 50 }), reading(at('10:01'), { tripped: 1, current: 60 }));
      step.restart(); // the commit that carried the raise
      step.push(reading(at('10:05'), { tripped: 0, current: 7 })); // the latest reading: not saved
      if (restart) step.restart();
      return step.tick(at('10:10')).map((r) => [r.edge, r.values.current]);
    };
    expect(run(true)).toEqual(run(false));
  });
});
