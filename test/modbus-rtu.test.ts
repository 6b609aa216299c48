import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { Connector } from '../src/connectors/connector.js';
import { rtuSilence } from '../src/connectors/modbus/bus.js';
import { createModbus } from '../src/connectors/modbus/modbus.js';
import type { Reading } from '../src/core/reading.js';
import { AgentProcess } from './support/agent-process.js';
import { until } from './support/ports.js';
import { RtuLine } from './support/rtu.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function line(units: number[], faulty?: 'late' | 'very-late' | 'count' | 'echo'): Promise<RtuLine> {
  const l = await RtuLine.start(units, faulty);
  cleanups.push(() => l.stop());
  return l;
}

/** Two points of unit 1 read in two requests of the same function and length: a at holding 0, b at holding 100. */
async function twoPoints(path: string) {
  const lines: string[] = [];
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
  const readings: Reading[] = [];
  const connector = (await createModbus(
    { id: 'pair', protocol: 'modbus-rtu', serial: { path, baud: 19200 }, unit_id: 1, poll: 100, timeout: 200, retries: 0, points: [{ name: 'a', area: 'holding', address: 0 }, { name: 'b', area: 'holding', address: 100 }] },
    { log, agentId: 'gw' },
  )) as Connector & { readErrors: number; discardedReplies: number };
  cleanups.push(() => connector.stop());
  connector.start((r) => readings.push(r));
  const good = (name: 'a' | 'b') => readings.filter((r) => r.quality?.[name] !== 'bad').map((r) => r.values[name]);
  return { connector, readings, lines, good };
}

describe('Modbus RTU framing', () => {
  it('never takes a late reply for the reply to the next request: every value of a is a’s, every value of b is b’s', async () => {
    // The values as pymodbus serves them (register N of unit 1 holds 100 + N)…
    const pymodbus = await line([1]);
    const right = await twoPoints(pymodbus.path);
    await until(() => right.good('b').length >= 5, 10_000, 'five good readings from pymodbus');
    await right.connector.stop();
    pymodbus.stop();
    const expected = { a: right.good('a')[0], b: right.good('b')[0] };
    expect(expected).toEqual({ a: 100, b: 200 });

    // …and from a slave with the same registers that answers one request in seven after 300 ms
    const late = await line([], 'late');
    await lateSlave(late, expected, 100);
  });

  it('never takes a reply later than the drain for the next request’s: the reply after it gives it away', async () => {
    // 500 ms: after the timeout (200 ms) and the drain (200 ms), when the next request is out
    const late = await line([], 'very-late');
    await lateSlave(late, { a: 100, b: 200 }, 60);
  });
});

/** Polls a and b from a slave that answers late now and then: no value is the other's. */
async function lateSlave(late: RtuLine, expected: { a: unknown; b: unknown }, polls: number) {
  const pair = await twoPoints(late.path);
    await until(() => pair.readings.length >= polls, 60_000, `${polls} polls`);
    const a = pair.good('a');
    const b = pair.good('b');
    const badValues = pair.readings.length * 2 - a.length - b.length;
    console.log(`${late.path}: ${pair.readings.length} polls, ${a.length} good a, ${b.length} good b, ${badValues} bad, ${pair.connector.discardedReplies} replies discarded`);
    expect(a.filter((v) => v !== expected.a)).toEqual([]);
    expect(b.filter((v) => v !== expected.b)).toEqual([]);
    expect(badValues).toBeGreaterThan(0); // the late replies happened, as timeouts
    // and reads between the late ones were good (a busy machine makes fewer: a unit that times out
  // twice in a row is skipped for 5 s)
  expect(Math.min(a.length, b.length)).toBeGreaterThanOrEqual(10);
    // each late reply was discarded and counted; the slave's lateness is one episode, logged once
    expect(pair.connector.discardedReplies).toBeGreaterThan(0);
    expect(pair.connector.readErrors).toBe(badValues);
  const discards = pair.lines.filter((l) => l.includes('discarded a reply'));
    expect(discards).toHaveLength(1);
  expect(discards[0]).toMatch(/modbus-rtu .*: discarded a reply: /);
  // and the failed reads: one warning per point's read for the whole run, not one per late reply
  const warnings = pair.lines.filter((l) => l.includes('"level":40') && l.includes('function 3'));
  expect(warnings.length).toBeGreaterThanOrEqual(1);
  expect(warnings.length).toBeLessThanOrEqual(2);
}

describe('Modbus RTU replies', () => {
  it('spaces frames by 3.5 characters of 11 bits, 1.75 ms above 19200 baud', () => {
    expect(rtuSilence(9600)).toBeCloseTo(4.01, 2);
    expect(rtuSilence(19200)).toBeCloseTo(2.005, 3);
    expect(rtuSilence(38400)).toBe(1.75);
    expect(rtuSilence(115200)).toBe(1.75);
  });

  it('discards a read reply whose byte count is not the request’s, though its length and CRC are right', async () => {
    const rtu = await line([], 'count');
    const { connector, readings, lines } = await twoPoints(rtu.path);
    await until(() => readings.length >= 4, 20_000, 'four polls');
    expect(readings.every((r) => r.values.a === null && r.values.b === null)).toBe(true);
    expect(connector.discardedReplies).toBeGreaterThanOrEqual(4);
    expect(lines.filter((l) => l.includes('discarded a reply'))).toHaveLength(1);
    expect(lines.find((l) => l.includes('"level":40') && l.includes('address 0'))).toMatch(/reply does not match the request: a reply of 4 bytes to function 3 for 2/);
  });

  it('refuses a write whose echo names another address, as a reply that does not match its request', async () => {
    const rtu = await line([], 'echo');
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
    const connector = (await createModbus(
      { id: 'valve', protocol: 'modbus-rtu', serial: { path: rtu.path, baud: 19200 }, unit_id: 1, poll: 60_000, timeout: 200, retries: 0, points: [{ name: 'open', area: 'holding', address: 10, writable: true }] },
      { log, agentId: 'gw' },
    )) as Connector & { discardedReplies: number };
    cleanups.push(() => connector.stop());
    await expect(connector.write('open', 5)).rejects.toThrow(
      'device valve, point open: unit 1, function 6, address 10: reply does not match the request: function 6 echoed address 11 and 5, not the 10 and 5 sent',
    );
    expect(connector.discardedReplies).toBe(1);
    expect(lines.filter((l) => l.includes('discarded a reply'))).toHaveLength(1);
  });

  it('stops on SIGTERM within 5 s with exit code 0 while an RTU device is between retries', { timeout: 60_000 }, async () => {
    const rtu = await line([1]);
    const dir = mkdtempSync(join(tmpdir(), 'rtu-sigterm-'));
    const config = join(dir, 'agent.yaml');
    writeFileSync(
      config,
      `agent: { id: gw, data_dir: ${dir}/data }
devices:
  - id: dead
    protocol: modbus-rtu
    serial: { path: ${rtu.path}, baud: 19200 }
    unit_id: 7
    timeout: 8s
    retries: 3
    offline_after: 2
    poll: 1s
    points:
      - { name: v, area: holding, address: 0 }
streams:
  - name: s
    from: { device: dead }
    steps: []
    to: [file]
upstream: [{ name: file, type: file, path: out.jsonl }]
`,
    );
    const agent = AgentProcess.start(config);
    cleanups.push(() => agent.kill('SIGKILL'));
    await agent.waitForLog(/agent gw running/);
    // the first poll (within 1 s) times out after 8 s; then the line is drained and retried
    await sleep(9500);
    agent.kill('SIGTERM');
    const took = await Promise.race([agent.exit(), sleep(5000).then(() => -1)]);
    console.log(`SIGTERM with an RTU device mid-retry: exited after ${took} ms (-1: not within 5 s)`);
    expect(took).toBeGreaterThanOrEqual(0);
    expect(agent.exitCode).toBe(0);
  });
});
