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
      - { name: x, signal: step, min: 0, max: 1, period: 2s }  # 1 for 2 s of every 4 s
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
    // Early in an episode (x = 1 from each odd 2-second mark) and in the middle of a window.
    await until(() => Math.floor(Date.now() / 2000) % 2 === 1 && Date.now() % 2000 > 300 && Date.now() % 2000 < 500, 8000, 'an episode');
    const killedAt = Date.now();
    first.kill('SIGKILL');
    await first.exit();

    const second = AgentProcess.start(config);
    await second.waitForLog(/agent gw running/);
    // The restart must fall in the same episode, or this test would prove nothing.
    expect(Date.now() - killedAt).toBeLessThan(2000 - 500 - 100);
    await sleep(4500);
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

    // one episode every 4 s, raised once: not again after the restart inside it
    const episode = (ts: number) => Math.floor(ts / 4000);
    const raised = records.filter((r) => r.event?.code === 'HIGH').map((r) => episode(r.ts));
    expect(new Set(raised).size).toBe(raised.length);
    expect(raised).toContain(episode(killedAt));
    expect(raised).toContain(episode(killedAt) + 1); // the next episode raises again
  });
});
