import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AgentProcess } from './support/agent-process.js';
import { until } from './support/ports.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The agent is killed (SIGKILL) in the middle of an energy window and of a hysteresis episode,
 * then started again: every window holds exactly the energy the meter counted, no window is
 * emitted twice, and the episode's edge does not fire again.
 */
describe('state across a kill and a restart', () => {
  it('counts energy exactly once and fires no edge twice', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'restart-'));
    const config = join(dir, 'agent.yaml');
    writeFileSync(
      config,
      `agent: { id: gw, data_dir: ${dir}/data }
devices:
  - id: m
    protocol: simulator
    poll: 50ms
    points:
      - { name: energy_kwh, signal: counter, rate: 3600 }   # 1 kWh per second
      - { name: x, signal: step, min: 0, max: 1, period: 4s }  # 1 for 4 s of every 8 s
streams:
  - name: energy
    from: { device: m, points: [energy_kwh] }
    steps:
      - energy: { method: meter-reading, point: energy_kwh, window: 1s, output: kwh }
      - filter: "kwh >= 0"
    to: [file]
  - name: alarm
    from: { device: m, points: [x] }
    steps:
      - hysteresis: { emit: "x > 0.5", release: "x < 0.5" }
      - event: { code: HIGH }
    to: [file]
upstream: [{ name: file, type: file, path: out.jsonl }]
`,
    );
    const first = AgentProcess.start(config);
    await first.waitForLog(/agent gw running/);
    await sleep(1500);
    // Early in an episode (x = 1 from each odd 4-second mark) and in the middle of a window.
    await until(() => Math.floor(Date.now() / 4000) % 2 === 1 && Date.now() % 4000 > 300 && Date.now() % 4000 < 500, 12_000, 'an episode');
    const killedAt = Date.now();
    first.kill('SIGKILL');
    await first.exit();

    const second = AgentProcess.start(config);
    await second.waitForLog(/agent gw running/);
    // The restart must fall in the same episode, or this test would prove nothing (3 s of slack
    // for a start that takes 0.4 s here)
    expect(Date.now() - killedAt).toBeLessThan(4000 - 500 - 100);
    // past the start of the next episode, 7.5 s after the kill
    await sleep(8500);
    second.kill('SIGTERM');
    await second.exit();

    const bySeq = new Map<number, { stream: string; ts: number; values?: { kwh?: number }; event?: { code: string } }>();
    for (const line of readFileSync(join(dir, 'out.jsonl'), 'utf8').trim().split('\n')) {
      const record = JSON.parse(line);
      bySeq.set(record.seq, record); // a record sent again after the kill is the same seq
    }
    const records = [...bySeq.values()];

    const windows = records.filter((r) => r.stream === 'energy' && r.values?.kwh !== undefined);
    const starts = windows.map((w) => w.ts);
    expect(new Set(starts).size).toBe(starts.length);
    expect(starts.some((ts) => ts < killedAt && ts + 1000 > killedAt)).toBe(true); // the window of the kill
    // the first window began before the agent did; every later one holds exactly one second of the meter
    for (const w of windows.slice(1)) expect(w.values!.kwh, `window ${new Date(w.ts).toISOString()}`).toBeCloseTo(1, 2);

    // one episode every 8 s, raised once: not again after the restart inside it
    const episode = (ts: number) => Math.floor(ts / 8000);
    const raised = records.filter((r) => r.event?.code === 'HIGH').map((r) => episode(r.ts));
    expect(new Set(raised).size).toBe(raised.length);
    expect(raised).toContain(episode(killedAt));
    expect(raised).toContain(episode(killedAt) + 1); // the next episode raises again
  });
});

/**
 * The same for the operators that judge time: killed while a debounce and a sequence timeout
 * are raised and an episode is open, and started again inside the same spell: each edge comes
 * exactly once in the spell of the kill and in the next, the episode spanning the restart is one.
 */
describe('events across time, across a kill and a restart', () => {
  it('debounce, sequence, absence and episode neither lose nor repeat an edge', { timeout: 90_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'restart-events-'));
    const config = join(dir, 'agent.yaml');
    // x = 1 during [8 s, 16 s) of every 16 s of the wall clock: spells of 8 s, so that a restart
    // 2.5 s into one has 5.5 s to fall inside it (a start takes 0.4 s here)
    writeFileSync(
      config,
      `agent: { id: gw, data_dir: ${dir}/data }
devices:
  - { id: m, protocol: simulator, poll: 50ms, points: [{ name: x, signal: step, min: 0, max: 1, period: 8s }] }
streams:
  - { name: hot, from: { device: m }, steps: [{ debounce: { when: "x > 0.5", for: 1s, clear_for: 1s } }, { event: { code: HOT } }], to: [file] }
  - { name: stuck, from: { device: m }, steps: [{ sequence: { steps: ["x > 0.5", "x < 0.5"], within: 2s, emit: timeout } }, { event: { code: STUCK } }], to: [file] }
  - { name: silent, from: { device: m }, steps: [{ filter: "x > 0.5" }, { absence: { for: 2500ms } }, { event: { code: SILENT } }], to: [file] }
  - { name: runs, from: { device: m }, steps: [{ episode: { when: "x > 0.5", functions: { x: [count] } } }], to: [file] }
upstream: [{ name: file, type: file, path: out.jsonl }]
`,
    );
    const first = AgentProcess.start(config);
    await first.waitForLog(/agent gw running/);
    await sleep(8000);
    // 2.3-2.5 s into a spell: the debounce (1 s) and the sequence timeout (2 s) have raised
    await until(() => Date.now() % 16_000 > 10_300 && Date.now() % 16_000 < 10_500, 17_000, 'the middle of a spell');
    const killedAt = Date.now();
    const spell = killedAt - (killedAt % 16_000) + 8000;
    first.kill('SIGKILL');
    await first.exit();

    const second = AgentProcess.start(config);
    await second.waitForLog(/agent gw running/);
    // The restart must fall in the same spell, or this test would prove nothing.
    expect(Date.now()).toBeLessThan(spell + 8000 - 100);
    // past the next spell's SILENT, 10.5 s into it
    await until(() => Date.now() > spell + 16_000 + 12_000, 40_000, 'the end of the next spell');
    second.kill('SIGTERM');
    await second.exit();

    const bySeq = new Map<number, { stream: string; ts: number; values?: Record<string, number>; event?: { code: string; state: string } }>();
    for (const line of readFileSync(join(dir, 'out.jsonl'), 'utf8').trim().split('\n')) {
      const record = JSON.parse(line);
      bySeq.set(record.seq, record);
    }
    const records = [...bySeq.values()];
    // what came in the spell of the kill and in the next, as [code, state, s after the spell's start]
    const inSpells = (r: { ts: number }) => r.ts >= spell - 500 && r.ts < spell + 32_000 - 500;
    // (SILENT of the spell before clears at the spell's first reading: not counted here)
    const edges = records
      .filter((r) => r.event && inSpells(r) && r.ts > spell + 250)
      .map((r) => [r.event!.code, r.event!.state, Math.round((r.ts - spell) / 500) / 2])
      .sort((a, b) => (a[2] as number) - (b[2] as number) || String(a[0]).localeCompare(String(b[0])));
    const expected = [0, 16].flatMap((o) => [
      ['HOT', 'raised', o + 1],
      ['STUCK', 'raised', o + 2],
      ['STUCK', 'cleared', o + 8],
      ['HOT', 'cleared', o + 9],
      // 2.5 s after the spell's last reading: longer than the restart's gap, which is silence too
      ['SILENT', 'raised', o + 10.5],
    ]);
    // SILENT clears at the next spell's first reading: once at 16 s, and (outside the window) at 32 s
    expected.push(['SILENT', 'cleared', 16]);
    expect(edges).toEqual(expected.sort((a, b) => (a[2] as number) - (b[2] as number) || String(a[0]).localeCompare(String(b[0]))));
    const runs = records.filter((r) => r.stream === 'runs' && inSpells(r));
    // (a poll the loaded machine skipped moves an episode's first reading by 50 ms or so)
    expect(runs.map((r) => [Math.round((r.ts - spell) / 500) / 2, Math.round(r.values!.duration_s)])).toEqual([
      [0, 8],
      [16, 8],
    ]);
  });
});
