import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI } from './support/cli.js';
import { ModbusServer } from './support/modbus-server.js';

/** `edge-agent test ...`, asynchronously, so that a Modbus server in this process can answer it. */
function cli(...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [...CLI, 'test', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d));
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  return new Promise((resolve) => child.once('exit', (status) => resolve({ status, stdout, stderr })));
}

let modbus: ModbusServer | undefined;
afterAll(async () => modbus?.stop());

function config(devices: string, streams: string): { file: string; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'live-'));
  const file = join(dir, 'agent.yaml');
  writeFileSync(
    file,
    `agent: { id: gw-live, data_dir: ${dir}/data, http: "off" }
devices:
${devices}
streams:
${streams}
upstream:
  - { name: out, type: file, path: ${dir}/out.jsonl }
  - { name: cloud, type: mqtt, url: "mqtt://127.0.0.1:1", topic: t }
`,
  );
  return { file, dir };
}

describe('edge-agent test', () => {
  it('polls a Modbus meter once, runs the streams and prints what would go upstream, sending and writing nothing', async () => {
    modbus = await ModbusServer.start();
    const memory = modbus.unit(1);
    memory.holding[0] = 1234; // power_kw, uint16 scaled by 0.1
    memory.holding[1] = 2301; // voltage_v
    const { file, dir } = config(
      `  - { id: meter, protocol: modbus-tcp, host: 127.0.0.1, port: ${modbus.port}, unit_id: 1, poll: 1s,
      points: [{ name: power_kw, area: holding, address: 0, type: uint16, scale: 0.1 }, { name: voltage_v, area: holding, address: 1, type: uint16, scale: 0.1 },
               { name: breaker, area: coil, address: 0, type: bool, writable: true }] }`,
      `  - { name: raw, from: { device: meter, points: [power_kw, voltage_v] }, to: [out, cloud] }
  - name: overload
    from: { device: meter }
    steps: [{ hysteresis: { emit: "power_kw > 100", release: "power_kw < 90" } }, { event: { code: OVERLOAD, severity: major, description: "power {power_kw} kW" } }]
    to: [out, { action: { device: meter, point: breaker, value: false, on: raise } }]`,
    );
    const out = await cli('--config', file);
    expect(out.stderr).toBe('');
    expect(out.status).toBe(0);
    const lines = out.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^time +stream +device +point +value +quality$/);
    expect(out.stdout).toMatch(/^\d\d:\d\d:\d\d\.\d{3} +raw +meter +power_kw +123\.4$/m);
    expect(out.stdout).toMatch(/^\d\d:\d\d:\d\d\.\d{3} +raw +meter +voltage_v +230\.1$/m);
    expect(out.stdout).toMatch(/^\d\d:\d\d:\d\d\.\d{3} +overload +meter +event OVERLOAD +raised major: power 123\.4 kW$/m);
    expect(out.stdout).toMatch(/^actions:\n.*\n\d\d:\d\d:\d\d\.\d{3} +overload +meter +breaker +false \(not written\)$/m);
    // polled once: one row per point of the raw stream
    expect(lines.filter((l) => / raw /.test(l))).toHaveLength(2);
    // nothing forwarded, written or kept
    expect(memory.coils[0]).toBe(0);
    expect(existsSync(join(dir, 'out.jsonl'))).toBe(false);
    expect(existsSync(join(dir, 'data'))).toBe(false);
  });

  it('--seconds N reads for N seconds; --device ID reads only that device', async () => {
    const { file } = config(
      `  - { id: a, protocol: simulator, poll: 200ms, points: [{ name: p, signal: counter, rate: 3600 }] }
  - { id: b, protocol: modbus-tcp, host: 127.0.0.1, port: 1, poll: 1s, points: [{ name: q, area: holding, address: 0 }] }`,
      `  - { name: s, from: { device: "*" }, to: [out] }`,
    );
    const out = await cli('--config', file, '--device', 'a', '--seconds', '1.5');
    expect(out.status).toBe(0);
    const rows = out.stdout.split('\n').filter((l) => / s +a +p /.test(l));
    expect(rows.length).toBeGreaterThanOrEqual(5);
    expect(out.stdout).not.toMatch(/ b /);
  });

  it('a device that gives no good value is named, exit 1; an unknown device is one line, exit 1', async () => {
    const { file } = config(`  - { id: b, protocol: modbus-tcp, host: 127.0.0.1, port: 1, poll: 200ms, timeout: 200ms, points: [{ name: q, area: holding, address: 0 }] }`, `  - { name: s, from: { device: b }, to: [out] }`);
    const silent = await cli('--config', file, '--seconds', '1');
    expect(silent.status).toBe(1);
    // what an unreachable device gives: readings, all bad, which would go upstream as such
    expect(silent.stdout).toMatch(/^\d\d:\d\d:\d\d\.\d{3} +s +b +q +\(missing\) +bad$/m);
    expect(silent.stderr).toMatch(/device b gave no good value\n$/);

    const unknown = await cli('--config', file, '--device', 'nope');
    expect(unknown.status).toBe(1);
    expect(unknown.stderr).toBe(`edge-agent test: no device "nope" in ${file} (devices: b)\n`);
  });
});
