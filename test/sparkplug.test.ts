import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentProcess } from './support/agent-process.js';
import { readJsonLines } from './support/files.js';
import { Mosquitto } from './support/mosquitto.js';
import { until } from './support/ports.js';
import { SparkplugHost, type SpMessage } from './support/sparkplug.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Checks a stream of messages of one edge node against the session rules of Sparkplug B 3.0,
 * as a host application would: every NBIRTH has seq 0, bdSeq and Node Control/Rebirth; every
 * other message (but NDEATH) has the seq after the one before, wrapping 255 → 0; a DDATA
 * comes after its device's DBIRTH in the same session and with no DDEATH since; a DDATA names
 * its metrics by the aliases its DBIRTH gave, with the datatypes given there; aliases are
 * unique across the node. Returns what it saw, for the tests' own checks.
 */
function checkSessions(messages: SpMessage[]) {
  let seq: number | undefined;
  let bdSeq: number | undefined;
  let births: Map<string, Map<number, { name: string; type: string }>> = new Map();
  const seqs: number[] = [];
  let wraps = 0;
  let previous = '';
  for (const message of messages) {
    const where = `${message.topic} (seq ${message.seq})`;
    if (message.kind === 'NCMD' || message.kind === 'DCMD') continue; // the host's own
    expect(message.retain, `${where}: not retained`).toBe(false);
    expect(message.qos, `${where}: QoS`).toBe(message.kind === 'NDEATH' ? 1 : 0);
    if (message.kind === 'NDEATH') {
      expect(message.seq, `${where}: an NDEATH has no seq`).toBeUndefined();
      expect(message.metrics.map((m) => `${m.name}:${m.type}`), `${where}: the bdSeq alone`).toEqual(['bdSeq:Int64']);
      seq = undefined;
      births = new Map();
      previous = 'NDEATH';
      continue;
    }
    expect(message.seq, where).toBeTypeOf('number');
    expect(message.timestamp, `${where}: payload timestamp`).toBeTypeOf('number');
    seqs.push(message.seq!);
    // DBIRTHs come right after the NBIRTH; later, only for a device that starts its session then
    const inBirthSequence = previous === 'NBIRTH' || previous === 'DBIRTH';
    previous = message.kind;
    if (message.kind === 'NBIRTH') {
      expect(message.seq, `${where}: NBIRTH seq`).toBe(0);
      const names = message.metrics.map((m) => `${m.name}:${m.type}`);
      expect(names).toContain('Node Control/Rebirth:Boolean');
      expect(message.metrics.find((m) => m.name === 'Node Control/Rebirth')?.value).toBe(false);
      const b = message.metrics.find((m) => m.name === 'bdSeq');
      expect(b?.type).toBe('Int64');
      bdSeq = b!.value as number;
      seq = 0;
      births = new Map();
      continue;
    }
    expect(seq, `${where}: a message outside a session (no NBIRTH before it)`).toBeDefined();
    expect(message.seq, `${where}: seq after ${seq}`).toBe((seq! + 1) % 256);
    if (message.seq === 0) wraps++;
    seq = message.seq;
    const device = message.device!;
    if (message.kind === 'DBIRTH') {
      if (!inBirthSequence) expect(births.has(device), `${where}: a DBIRTH of a device born already, outside the birth sequence`).toBe(false);
      const aliases = new Map<number, { name: string; type: string }>();
      for (const m of message.metrics) {
        expect(m.name, `${where}: a DBIRTH metric has its name`).toBeTypeOf('string');
        expect(m.alias, `${where}: ${m.name} has an alias`).toBeTypeOf('number');
        expect(m.timestamp, `${where}: ${m.name} has a timestamp`).toBeTypeOf('number');
        aliases.set(m.alias!, { name: m.name!, type: m.type });
      }
      for (const [other, theirs] of births) {
        if (other === device) continue;
        for (const alias of aliases.keys()) expect(theirs.has(alias), `${where}: alias ${alias} is also ${other}'s`).toBe(false);
      }
      births.set(device, aliases);
    } else if (message.kind === 'DDEATH') {
      expect(births.has(device), `${where}: DDEATH of a device not born`).toBe(true);
      births.delete(device);
    } else if (message.kind === 'DDATA') {
      const aliases = births.get(device);
      expect(aliases, `${where}: DDATA before the device's DBIRTH`).toBeDefined();
      for (const m of message.metrics) {
        expect(m.name, `${where}: a DDATA metric goes by its alias`).toBeUndefined();
        expect(aliases!.get(m.alias!), `${where}: alias ${m.alias} not in the DBIRTH`).toBeDefined();
        expect(m.type, `${where}: alias ${m.alias}'s datatype`).toBe(aliases!.get(m.alias!)!.type);
        expect(m.timestamp, `${where}: metric timestamp`).toBeTypeOf('number');
      }
    }
  }
  return { bdSeq, seqs, wraps };
}

/** The values of a device's metric by name, from its DDATA, resolving aliases with the DBIRTH before each. */
function valuesOf(messages: SpMessage[], device: string, name: string): { value: unknown; timestamp: number; historical: boolean }[] {
  const out: { value: unknown; timestamp: number; historical: boolean }[] = [];
  let alias: number | undefined;
  for (const m of messages) {
    if (m.device !== device) continue;
    if (m.kind === 'DBIRTH') alias = m.metrics.find((x) => x.name === name)?.alias;
    if (m.kind === 'DDATA') for (const x of m.metrics) if (x.alias === alias) out.push({ value: x.value, timestamp: x.timestamp!, historical: x.isHistorical === true });
  }
  return out;
}

let broker: Mosquitto;
let deviceBroker: Mosquitto;
beforeAll(async () => {
  [broker, deviceBroker] = await Promise.all([Mosquitto.start(), Mosquitto.start()]);
});
afterAll(async () => {
  await Promise.all([broker?.stop('SIGKILL'), deviceBroker?.stop('SIGKILL')]);
});

function writeConfig(dir: string, group = 'plant-a'): string {
  const file = join(dir, 'agent.yaml');
  writeFileSync(
    file,
    `agent: { id: gw-1, data_dir: ${dir}/data, log_level: info }
devices:
  - id: meter
    protocol: simulator
    poll: 20ms
    points:
      - { name: power, signal: counter, rate: 3600000 }
      - { name: running, value: true }
      - { name: label, value: "line 1" }
      - { name: setpoint, value: 5, writable: true }
  - id: plug
    protocol: mqtt
    broker: ${deviceBroker.url}
    points: [{ name: watts, topic: plug/watts }]
streams:
  - { name: raw, from: { device: meter }, to: [scada] }
  - { name: plug, from: { device: plug }, to: [scada] }
upstream:
  - { name: scada, type: sparkplug, url: "${broker.url}", group_id: ${group} }
`,
  );
  return file;
}

describe('Sparkplug B edge node (decoded with Eclipse Tahu)', () => {
  it('births, data, seq wrapping, Rebirth, device death and birth, and bdSeq across a stop, a restart and a kill', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sparkplug-'));
    const config = writeConfig(dir);
    const host = await SparkplugHost.connect(broker.url, 'plant-a');
    const plug = await mqtt.connectAsync(deviceBroker.url);
    const first = AgentProcess.start(config);
    await until(() => host.of('DDATA', 'meter').length >= 300, 20_000, '300 DDATA of the meter');

    // the plug publishes, then its broker goes away (the connector says offline) and comes back
    await plug.publishAsync('plug/watts', '12.5');
    await until(() => host.of('DDATA', 'plug').length >= 1, 10_000, 'a DDATA of the plug');
    await plug.endAsync(true);
    await deviceBroker.stop();
    await until(() => host.of('DDEATH', 'plug').length >= 1, 15_000, 'a DDEATH of the plug');
    await deviceBroker.resume();
    const plugDeath = host.messages.findIndex((m) => m.kind === 'DDEATH');
    await until(() => host.messages.slice(plugDeath).some((m) => m.kind === 'DBIRTH' && m.device === 'plug'), 20_000, 'the plug born again');

    // a Rebirth request: a new NBIRTH (same bdSeq, no reconnect) and the DBIRTHs
    const asked = host.messages.length;
    await host.command('spBv1.0/plant-a/NCMD/gw-1', [{ name: 'Node Control/Rebirth', type: 'Boolean', value: true }]);
    await until(() => host.messages.slice(asked).filter((m) => m.kind === 'DBIRTH').length >= 2, 10_000, 'a rebirth');
    await until(() => host.of('DDATA', 'meter').length >= 350, 10_000, 'data after the rebirth');

    // a stop says NDEATH itself (a clean DISCONNECT sends no will)
    first.kill('SIGTERM');
    await first.exit();
    await until(() => host.of('NDEATH').length >= 1, 5000, 'the NDEATH of a stop');

    const second = AgentProcess.start(config);
    const stopped = host.messages.length;
    await until(() => host.messages.slice(stopped).some((m) => m.kind === 'NBIRTH'), 20_000, 'an NBIRTH after the restart');
    await until(() => host.of('DDATA', 'meter').length >= 400, 20_000, 'data after the restart');
    // kill -9: the broker publishes the will
    second.kill('SIGKILL');
    await second.exit();
    await until(() => host.of('NDEATH').length >= 2, 10_000, 'the will NDEATH');
    await host.close();

    const { seqs, wraps } = checkSessions(host.messages);
    expect(wraps, 'seq wrapped from 255 to 0 at least once').toBeGreaterThanOrEqual(1);
    expect(seqs.length).toBeGreaterThan(400);

    // NBIRTH → bdSeq; each NDEATH carries its session's bdSeq; the restart goes on with the next one
    // (NBIRTHs within a session, for a Rebirth or a new device, keep it)
    const lifecycle = host.messages.filter((m) => m.kind === 'NBIRTH' || m.kind === 'NDEATH').map((m) => `${m.kind} ${m.metrics.find((x) => x.name === 'bdSeq')!.value}`);
    expect(lifecycle.filter((entry, i) => entry !== lifecycle[i - 1])).toEqual(['NBIRTH 0', 'NDEATH 0', 'NBIRTH 1', 'NDEATH 1']);

    // the Rebirth: an NBIRTH followed by the DBIRTHs of both devices, before any DDATA
    const rebirth = host.messages.findIndex((m, i) => i >= asked && m.kind === 'NBIRTH');
    expect(rebirth).toBeGreaterThan(0);
    expect(host.messages.slice(rebirth + 1, rebirth + 3).map((m) => `${m.kind} ${m.device}`).sort()).toEqual(['DBIRTH meter', 'DBIRTH plug']);

    // metrics: `<stream>/<value>` with their datatypes, timestamps of the readings
    const birth = host.of('DBIRTH', 'meter')[0];
    const types = Object.fromEntries(birth.metrics.map((m) => [m.name, m.type]));
    expect(types).toEqual({ 'raw/power': 'Double', 'raw/running': 'Boolean', 'raw/label': 'String', 'raw/setpoint': 'Double' });
    expect(birth.metrics.find((m) => m.name === 'raw/label')!.value).toBe('line 1');
    const power = valuesOf(host.messages, 'meter', 'raw/power');
    expect(power.length).toBeGreaterThan(300);
    // the simulator's ticks, and one reading at each of the agent's two starts (polls read once at start)
    expect(power.filter(({ timestamp }) => timestamp % 20 !== 0).length).toBeLessThanOrEqual(2);
    expect(valuesOf(host.messages, 'plug', 'plug/watts')[0].value).toBe(12.5);

    // the plug: DBIRTH, DDATA, DDEATH while its broker was away, DBIRTH when back
    const plugLife = host.messages.filter((m) => m.device === 'plug' && m.kind !== 'DDATA').map((m) => m.kind);
    expect(plugLife.slice(0, 3)).toEqual(['DBIRTH', 'DDEATH', 'DBIRTH']);
  });
});

describe('Sparkplug commands', () => {
  it('writes a DCMD of a writable point through its connector with an ACTION event, and refuses unknown and read-only metrics', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sparkplug-dcmd-'));
    const host = await SparkplugHost.connect(broker.url, 'plant-c');
    const agent = AgentProcess.start(writeConfig(dir, 'plant-c'));
    await until(() => host.of('DDATA', 'meter').length >= 5, 10_000, 'data of the meter');
    const birth = host.of('DBIRTH', 'meter')[0];
    const alias = (name: string) => birth.metrics.find((m) => m.name === name)!.alias;
    const topic = 'spBv1.0/plant-c/DCMD/gw-1/meter';
    await host.command(topic, [{ name: 'raw/setpoint', type: 'Double', value: 42 }]);
    await until(() => valuesOf(host.messages, 'meter', 'raw/setpoint').some((v) => v.value === 42), 10_000, 'the setpoint written');
    // by alias, as hosts send once they know them
    await host.command(topic, [{ alias: alias('raw/setpoint'), type: 'Double', value: 7 }]);
    await until(() => valuesOf(host.messages, 'meter', 'raw/setpoint').some((v) => v.value === 7), 10_000, 'the setpoint written by alias');
    // read-only, unknown, and a device that does not exist: refused, logged, never written
    await host.command(topic, [{ name: 'raw/power', type: 'Double', value: 0 }, { name: 'raw/nope', type: 'Double', value: 1 }]);
    await host.command('spBv1.0/plant-c/DCMD/gw-1/ghost', [{ name: 'raw/setpoint', type: 'Double', value: 1 }]);
    await agent.waitForLog(/DCMD meter raw\/power refused: not a writable point/);
    await agent.waitForLog(/DCMD meter raw\/nope refused: no such metric/);
    await agent.waitForLog(/DCMD ghost raw\/setpoint refused: no such metric/);
    // each write is an ACTION event, on this upstream as metrics of the device
    await until(() => valuesOf(host.messages, 'meter', 'commands/ACTION/description').length >= 2, 10_000, 'the ACTION events');
    agent.kill('SIGTERM');
    await agent.exit();
    await host.close();
    checkSessions(host.messages);
    expect(valuesOf(host.messages, 'meter', 'commands/ACTION/description').map((v) => v.value)).toEqual(['DCMD: wrote 42 to meter.setpoint', 'DCMD: wrote 7 to meter.setpoint']);
    expect(valuesOf(host.messages, 'meter', 'commands/ACTION').map((v) => v.value)).toEqual([true, true]);
    const power = valuesOf(host.messages, 'meter', 'raw/power').map((v) => v.value as number);
    expect(power.every((v, i) => i === 0 || v >= power[i - 1]), 'the read-only counter was never written').toBe(true);
  });
});

describe('Sparkplug primary host awareness', () => {
  it('holds data while the host is offline or the broker is down, sends it after with is_historical, and loses nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sparkplug-host-'));
    const file = join(dir, 'agent.yaml');
    writeFileSync(
      file,
      `agent: { id: gw-2, data_dir: ${dir}/data, log_level: info }
devices:
  - id: meter
    protocol: simulator
    poll: 50ms
    points: [{ name: n, signal: counter, rate: 72000 }]
streams:
  - { name: raw, from: { device: meter }, to: [scada, copy] }
upstream:
  - { name: scada, type: sparkplug, url: "${broker.url}", group_id: plant-b, primary_host: scada-1 }
  - { name: copy, type: file, path: ${dir}/copy.jsonl }
`,
    );
    const host = await SparkplugHost.connect(broker.url, 'plant-b');
    await host.state('scada-1', false);
    const agent = AgentProcess.start(file);
    await agent.waitForLog(/waiting for primary host scada-1/);
    await sleep(1000);
    expect(host.messages, 'nothing before the host is online').toEqual([]);

    await host.state('scada-1', true);
    await until(() => host.of('DDATA').length >= 30, 10_000, 'data once the host is online');

    // the host goes offline: NDEATH, and nothing until it is back
    await host.state('scada-1', false);
    await until(() => host.of('NDEATH').length >= 1, 10_000, 'the NDEATH when the host went offline');
    const quiet = host.messages.length;
    await sleep(1000);
    expect(host.messages.length, 'silent while the host is offline').toBe(quiet);
    await host.state('scada-1', true);
    await until(() => host.messages.slice(quiet).some((m) => m.kind === 'NBIRTH') && host.messages.length > quiet + 30, 10_000, 'data after the host came back');

    // the broker dies (SIGKILL: its retained STATE goes with it); the host says online again once back
    await broker.stop('SIGKILL');
    await sleep(1500);
    host.client.on('connect', () => void host.client.subscribeAsync('spBv1.0/plant-b/#', { qos: 1 }).then(() => host.state('scada-1', true)));
    const killed = host.messages.length;
    await broker.resume();
    await until(() => host.messages.slice(killed).some((m) => m.kind === 'NBIRTH'), 20_000, 'an NBIRTH after the broker restart');
    await sleep(1500);
    agent.kill('SIGTERM');
    await agent.exit();
    await host.close();

    checkSessions(host.messages);
    // each session's bdSeq is the next one: 0, the host offline (1), the broker restart (2 or more: one per CONNECT)
    const bdSeqs = [...new Set(host.of('NBIRTH').map((m) => m.metrics.find((x) => x.name === 'bdSeq')!.value as number))];
    expect(bdSeqs[0]).toBe(0);
    expect(bdSeqs[1]).toBe(1);
    expect(bdSeqs[2]).toBeGreaterThanOrEqual(2);

    // nothing lost: every record the file upstream got before the end is among the Sparkplug data
    const sent = valuesOf(host.messages, 'meter', 'raw/n');
    const seen = new Set(sent.map((v) => v.timestamp));
    const last = Math.max(...seen);
    const copy = readJsonLines(join(dir, 'copy.jsonl')).filter((r) => r.ts <= last);
    expect(copy.length).toBeGreaterThan(60);
    expect(copy.filter((r) => !seen.has(r.ts)).map((r) => r.ts)).toEqual([]);
    for (const r of copy) expect(sent.find((v) => v.timestamp === r.ts)!.value).toBe(r.values.n);

    // is_historical: exactly the data read before the session that sent it began
    let birth = 0;
    let session = -1;
    let historical = 0;
    for (const m of host.messages) {
      // a session begins with the first NBIRTH of its bdSeq (later ones, a rebirth, change nothing)
      const bdSeq = m.kind === 'NBIRTH' ? (m.metrics.find((x) => x.name === 'bdSeq')!.value as number) : session;
      if (bdSeq !== session) [session, birth] = [bdSeq, m.timestamp!];
      if (m.kind !== 'DDATA') continue;
      for (const metric of m.metrics) {
        if (metric.isHistorical) historical++;
        if (metric.isHistorical) expect(metric.timestamp!).toBeLessThanOrEqual(birth);
        if (metric.timestamp! < birth - 100) expect(metric.isHistorical, `read at ${metric.timestamp}, session from ${birth}`).toBe(true);
      }
    }
    // held at the start (1 s), while the host was offline (1 s) and while the broker was down (1.5 s)
    expect(historical).toBeGreaterThan(50);
  });
});
