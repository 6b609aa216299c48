import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentProcess } from './support/agent-process.js';
import { ModbusServer } from './support/modbus-server.js';
import { Mosquitto } from './support/mosquitto.js';
import { freePort, until } from './support/ports.js';
import { Subscriber } from './support/subscriber.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** libfaketime, wherever the Debian package put it for this architecture. */
function libfaketime(): string | undefined {
  for (const lib of ['/usr/lib', '/usr/lib64']) {
    if (!existsSync(lib)) continue;
    for (const dir of readdirSync(lib)) {
      const candidate = join(lib, dir, 'faketime', 'libfaketime.so.1');
      if (existsSync(candidate)) return candidate;
    }
  }
  return undefined;
}

/**
 * The agent runs under libfaketime with an offset file the test rewrites while it runs
 * (FAKETIME_NO_CACHE=1: read at every call). FAKETIME_DONT_FAKE_MONOTONIC=1 leaves
 * CLOCK_MONOTONIC alone, as an NTP step does: only the wall clock jumps. Mosquitto and the test
 * keep the real time. The clock goes forward and back by minutes, days and years, under load
 * (10 simulated readings a second, MQTT sensor readings, a timer), with one kill -9 and a
 * restart while the clock is two years ahead.
 */
describe('steps of the system clock (libfaketime)', () => {
  const lib = libfaketime();
  let broker: Mosquitto;
  let plc: ModbusServer;
  let dir: string;
  beforeAll(async () => {
    broker = await Mosquitto.start();
    plc = await ModbusServer.start();
    plc.unit(1).holding[0] = 42;
    dir = mkdtempSync(join(tmpdir(), 'clock-step-'));
  });
  afterAll(async () => {
    await broker?.stop();
    await plc?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('never freezes, floods or falls silent, and loses nothing', async () => {
    expect(lib, 'libfaketime (apt-get install faketime)').toBeDefined();
    const http = await freePort();
    const offsetFile = join(dir, 'offset');
    const synced = join(dir, 'synchronized');
    writeFileSync(offsetFile, '+0\n');
    const config = join(dir, 'agent.yaml');
    writeFileSync(
      config,
      `agent: { id: gw, data_dir: ${dir}/data, http: "127.0.0.1:${http}", clock_sync: ${synced} }
devices:
  - id: meter
    protocol: simulator
    poll: 100ms
    points:
      - { name: energy_kwh, signal: counter, rate: 3600 }
      - { name: power_kw, signal: sine, min: 0, max: 10, period: 10s }
  - id: plc
    protocol: modbus-tcp
    host: 127.0.0.1
    port: ${plc.port}
    poll: 200ms
    points:
      - { name: level, area: holding, address: 0, type: uint16 }
  - id: sensor
    protocol: mqtt
    broker: ${broker.url}
    points:
      - { name: t, topic: sensors/t, json: v, ts: ts }
streams:
  - name: raw
    from: { device: meter, points: [power_kw] }
    to: [up]
  - name: energy
    from: { device: meter, points: [energy_kwh] }
    steps:
      - energy: { method: meter-reading, point: energy_kwh, window: 15m, output: kwh }
      - filter: "kwh >= 0"
    to: [up]
  - name: power
    from: { device: meter, points: [power_kw] }
    steps:
      - window: { size: 2s, functions: { power_kw: [avg, count] } }
    to: [up]
  - name: modbus
    from: { device: plc, points: [level] }
    to: [up]
  - name: sensor_raw
    from: { device: sensor, points: [t] }
    to: [up]
  - name: sensor_window
    from: { device: sensor, points: [t] }
    steps:
      - window: { size: 2s, functions: { t: [count] } }
    to: [up]
  - name: tick
    from: { timer: { every: 1s } }
    to: [up]
upstream:
  - { name: up, type: mqtt, url: ${broker.url}, topic: "out/{stream}", client_id: gw-clock-test }
`,
    );
    const subscriber = await Subscriber.connect(broker.url, 'out/#');
    const sensor = await mqtt.connectAsync(broker.url, { clientId: `sensor-${process.pid}` });
    // the retained message of a sensor whose clock says 2100: every start of the agent reads it
    await sensor.publishAsync('sensors/t', JSON.stringify({ v: 99, ts: Date.UTC(2100, 0, 1) }), { qos: 1, retain: true });

    const env = {
      LD_PRELOAD: lib!,
      FAKETIME_TIMESTAMP_FILE: offsetFile,
      FAKETIME_NO_CACHE: '1',
      FAKETIME_DONT_FAKE_MONOTONIC: '1',
    };
    let agent = AgentProcess.start(config, env);
    const probes: { ms: number; ok: boolean; phase: string }[] = [];
    let phase = 'starting';
    let probing = true;
    // the liveness check: the API must answer throughout (a freeze was 50 s and more)
    const prober = (async () => {
      while (probing) {
        const started = performance.now();
        let ok = false;
        try {
          const res = await fetch(`http://127.0.0.1:${http}/api/streams`, { signal: AbortSignal.timeout(5000) });
          ok = res.ok;
          await res.arrayBuffer();
        } catch {
          ok = false;
        }
        if (phase !== 'starting') probes.push({ ms: performance.now() - started, ok, phase });
        await sleep(200);
      }
    })();
    let publishing = true;
    let published = 0;
    const publisher = (async () => {
      while (publishing) {
        // the sensor keeps the real time; the agent's clock is what steps
        await sensor.publishAsync('sensors/t', JSON.stringify({ v: published++, ts: Date.now() }), { qos: 1 });
        await sleep(200);
      }
    })();

    try {
      await agent.waitForLog(/agent gw running/, 20_000);
      const arrivals: { phase: string; at: number }[] = [];
      const phaseOf = new Map<string, { from: number; to: number }>();
      const runPhase = async (name: string, offset: string, ms = 3000) => {
        phase = name;
        writeFileSync(offsetFile, `${offset}\n`);
        const from = subscriber.records.length;
        await sleep(ms);
        phaseOf.set(name, { from, to: subscriber.records.length });
        arrivals.push({ phase: name, at: Date.now() });
      };

      await runPhase('unsynchronized', '+0', 2000);
      writeFileSync(synced, '');
      await runPhase('synchronized', '+0', 4000);
      await runPhase('forward 5 minutes', '+5m');
      await runPhase('forward 3 days', '+3d');
      await runPhase('forward 1 year', '+365d');
      await runPhase('forward 2 years', '+730d');

      // kill -9 with state stamped two years ahead, start again still two years ahead
      phase = 'starting';
      agent.kill('SIGKILL');
      await agent.exit();
      const restarted = performance.now();
      agent = AgentProcess.start(config, env);
      await agent.waitForLog(/agent gw running/, 20_000);
      const restartMs = performance.now() - restarted;
      await runPhase('after restart, 2 years ahead', '+730d');

      await runPhase('back 2 years', '+0');
      await runPhase('back 2 minutes', '-2m');
      await runPhase('back 30 days', '-30d');
      await runPhase('forward to the real time', '+0', 4000);

      const metrics = await (await fetch(`http://127.0.0.1:${http}/metrics`)).text();
      probing = false;
      publishing = false;
      await Promise.all([prober, publisher]);
      agent.kill('SIGTERM');
      await agent.exit();
      await until(() => subscriber.records.length >= phaseOf.get('forward to the real time')!.to, 5000, 'the last records');
      await sleep(500);

      const records = subscriber.records;
      const byStream = (stream: string, from = 0, to = records.length) => records.slice(from, to).filter((r) => r.stream === stream);

      // no freeze: every probe answered, each within 1 s
      const worst = Math.max(...probes.map((p) => p.ms));
      const failed = probes.filter((p) => !p.ok || p.ms > 1000);
      console.log(`API probes: ${probes.length}, slowest ${worst.toFixed(0)} ms; restart two years ahead: running after ${restartMs.toFixed(0)} ms`);
      expect(failed, JSON.stringify(failed)).toEqual([]);

      // no silence, no flood: each phase of ~3 s brings the simulator's 10 readings a second, and the timer's one
      const counts: Record<string, Record<string, number>> = {};
      for (const [name, { from, to }] of phaseOf) {
        const raw = byStream('raw', from, to).length;
        const ticks = byStream('tick', from, to).length;
        const modbus = byStream('modbus', from, to).length;
        counts[name] = { raw, modbus, ticks, energy: byStream('energy', from, to).length, power: byStream('power', from, to).length, sensor: byStream('sensor_window', from, to).length };
        const seconds = name === 'unsynchronized' ? 2 : name === 'forward to the real time' || name === 'synchronized' ? 4 : 3;
        expect(raw, `${name}: readings of the simulator`).toBeGreaterThanOrEqual(seconds * 10 * 0.4);
        expect(raw, `${name}: readings of the simulator`).toBeLessThanOrEqual(seconds * 10 * 1.6 + 5);
        expect(ticks, `${name}: timer ticks`).toBeLessThanOrEqual(seconds + 3);
        expect(modbus, `${name}: Modbus polls`).toBeGreaterThanOrEqual(seconds * 5 * 0.4);
        expect(modbus, `${name}: Modbus polls`).toBeLessThanOrEqual(seconds * 5 * 1.6 + 3);
      }
      console.log('records per phase', counts);
      for (const name of ['synchronized', 'back 2 minutes', 'back 30 days', 'forward to the real time']) expect(counts[name].ticks, `${name}: timer ticks`).toBeGreaterThanOrEqual(1);
      // the energy windows: a handful in all (35,040 per year of 15 minutes before)
      const energy = byStream('energy');
      console.log(`energy windows emitted: ${energy.length}, records in all: ${records.length}`);
      expect(energy.length).toBeLessThanOrEqual(20);

      // nothing lost: the seqs the agent committed arrive without a hole (kill -9 may repeat some)
      const seqs = [...new Set(records.map((r) => r.seq))].sort((a, b) => a - b);
      const holes = seqs.filter((s, i) => i > 0 && s !== seqs[i - 1] + 1);
      expect(holes).toEqual([]);

      // the message from 2100: passed as bad, and did not make the window drop the later readings
      const future = byStream('sensor_raw').filter((r) => r.ts === Date.UTC(2100, 0, 1));
      expect(future.length).toBeGreaterThanOrEqual(2); // once per start
      for (const r of future) expect(r.quality).toEqual({ t: 'bad' });
      expect(agent.log.filter((l) => /2100-01-01T00:00:00.000Z is more than/.test(l))).toHaveLength(1);
      const counted = byStream('sensor_window').reduce((n, r) => n + Number(r.values?.t_count ?? 0), 0);
      expect(counted).toBeGreaterThan(published * 0.5);

      // before the clock was synchronized, readings were estimated; after, not
      const { from, to } = phaseOf.get('synchronized')!;
      expect(byStream('raw', 0, phaseOf.get('unsynchronized')!.to).some((r) => r.quality?.power_kw === 'estimated')).toBe(true);
      expect(byStream('raw', from, to).slice(-10).every((r) => r.quality === undefined)).toBe(true);

      // counted where the metrics show it (this process: started 2 years ahead, then stepped 3 times)
      const metric = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(metrics)?.[1]);
      expect(metric('edge_clock_steps_total')).toBeGreaterThanOrEqual(3);
      expect(metric('edge_readings_untimely_total')).toBeGreaterThanOrEqual(1);
      expect(metric('edge_clock_synchronized')).toBe(1);
      expect(agent.log.some((l) => /TimeoutOverflowWarning/.test(l))).toBe(false);
      expect(agent.log.some((l) => /the system clock was stepped back by 30.0 d/.test(l))).toBe(true);
    } finally {
      probing = false;
      publishing = false;
      agent.kill('SIGKILL');
      await sensor.endAsync(true);
      await subscriber.close();
    }
  }, 120_000);
});
