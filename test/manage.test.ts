import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import mqtt from 'mqtt';
import { chromium } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Agent } from '../src/agent/agent.js';
import { RolledBack } from '../src/manage/managed-agent.js';
import { startAgent as launchAgent } from '../src/start.js';
import { CLI } from './support/cli.js';
import { readEd25519Key, signedPush } from '../src/manage/signing.js';
import { ConfigError } from '../src/core/config-error.js';
import { parseConfig } from '../src/config/load.js';
import { testLog } from './support/log.js';
import { Mosquitto } from './support/mosquitto.js';
import { freePort, until } from './support/ports.js';

const ROOT = resolve(import.meta.dirname, '..');
const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

let broker: Mosquitto;
beforeAll(async () => {
  broker = await Mosquitto.start();
});
afterAll(async () => {
  await broker?.stop('SIGKILL');
});

/** Two simulated devices, a stream on each, a file upstream; `extra` goes under `agent:`. */
function configText(dir: string, options: { version?: number; agent?: string; poll2?: string; stepsB?: string; more?: string } = {}): string {
  return `version: ${options.version ?? 1}
agent: { id: gw-1, data_dir: ${dir}/data, log_level: error${options.agent ?? ', http: off'} }
devices:
  - { id: sim, protocol: simulator, poll: 20ms, points: [{ name: p, signal: sine, min: 0, max: 100, period: 7s }] }
  - { id: sim2, protocol: simulator, poll: ${options.poll2 ?? '20ms'}, points: [{ name: q, signal: counter, rate: 3600000 }] }
streams:
  - { name: a, from: { device: sim }, to: [out] }
  - name: b
    from: { device: sim2 }
    steps: [${options.stepsB ?? '{ change: { point: q } }'}]
    to: [out]
upstream:
  - { name: out, type: file, path: ${dir}/out.jsonl }
${options.more ?? ''}`;
}

async function startAgent(text: string): Promise<{ agent: Agent; dir: string; file: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'manage-'));
  const file = join(dir, 'agent.yaml');
  writeFileSync(file, text.replaceAll('$DIR', dir));
  const agent = await launchAgent(file, testLog);
  cleanup.push(() => agent.stop());
  return { agent, dir, file };
}

const configOf = (agent: Agent, dir: string, options: Parameters<typeof configText>[1]) => parseConfig(configText(dir, options), agent.file, {});

describe('applying a new config', () => {
  it('restarts only what changed: an unchanged stream keeps running with its counters', async () => {
    const { agent, dir } = await startAgent(configText('$DIR'));
    await until(() => agent.streamsByName.get('a')!.stream.readingsIn > 20 && agent.streamsByName.get('b')!.stream.readingsIn > 20, 5000, 'readings');
    const streamA = agent.streamsByName.get('a')!.stream;
    const streamB = agent.streamsByName.get('b')!.stream;
    const sim = agent.devices.get('sim')!.connector;
    const sim2 = agent.devices.get('sim2')!.connector;
    const upstream = agent.upstreams.get('out')!.upstream;

    // stream b's steps change: b restarts, a and both devices keep running
    const change = await agent.apply(configOf(agent, dir, { version: 2, stepsB: '{ change: { point: q, deadband: 1 } }' }), 'test');
    expect(change).toEqual({ upstreams: [], devices: [], streams: ['b'] });
    expect(agent.streamsByName.get('a')!.stream).toBe(streamA);
    expect(agent.streamsByName.get('b')!.stream).not.toBe(streamB);
    expect(agent.devices.get('sim')!.connector).toBe(sim);
    expect(agent.upstreams.get('out')!.upstream).toBe(upstream);
    const before = streamA.readingsIn;
    await until(() => streamA.readingsIn > before + 10, 5000, 'stream a still fed');

    // device sim2's poll changes: the device restarts, stream b (unchanged now) keeps running
    const streamB2 = agent.streamsByName.get('b')!.stream;
    expect(await agent.apply(configOf(agent, dir, { version: 3, poll2: '30ms', stepsB: '{ change: { point: q, deadband: 1 } }' }), 'test')).toEqual({
      upstreams: [],
      devices: ['sim2'],
      streams: [],
    });
    expect(agent.devices.get('sim2')!.connector).not.toBe(sim2);
    expect(agent.streamsByName.get('b')!.stream).toBe(streamB2);
    const inB = streamB2.readingsIn;
    await until(() => streamB2.readingsIn > inB + 5, 5000, 'stream b fed by the new device');
    expect(agent.config.version).toBe(3);
  });

  it('rejects an invalid config and keeps the running one', async () => {
    const { agent, dir } = await startAgent(configText('$DIR'));
    const streamA = agent.streamsByName.get('a')!.stream;
    const invalid = parseConfig(configText(dir, { version: 2, stepsB: '{ threshold: { point: q, min: 5, max: 1 } }' }), agent.file, {});
    await expect(agent.apply(invalid, 'test')).rejects.toThrow(/stream b, step 1 \(threshold\)/);
    expect(agent.streamsByName.get('a')!.stream).toBe(streamA);
    expect(agent.config.version).toBe(1);
  });

  it('goes back to the running config when the new one fails to start', async () => {
    const { agent, dir } = await startAgent(configText('$DIR'));
    const streamB = agent.streamsByName.get('b')!.stream;
    // upstream out changes (and is replaced), then upstream cloud cannot be built
    const broken = parseConfig(
      configText(dir, {
        version: 2,
        stepsB: '{ change: { point: q, deadband: 1 } }',
        more: `  - { name: cloud, type: mqtt, url: "${broker.url}", topic: t, tls: { ca: ${dir}/missing-ca.pem } }`,
      }).replace(`path: ${dir}/out.jsonl`, `path: ${dir}/other.jsonl`),
      agent.file,
      {},
    );
    const failed = await agent.apply(broken, 'test').catch((err: Error) => err);
    expect(failed).toBeInstanceOf(RolledBack);
    expect((failed as Error).message).toMatch(/missing-ca\.pem.*the previous config \(version 1\) runs again/);
    expect(agent.config.version).toBe(1);
    expect([...agent.upstreams.keys()]).toEqual(['out']);
    expect(agent.upstreams.get('out')!.config).toMatchObject({ path: `${dir}/out.jsonl` });
    expect(agent.streamsByName.get('b')!.stream).toBe(streamB);
    const sent = agent.upstreams.get('out')!.forwarder.sent;
    await until(() => agent.upstreams.get('out')!.forwarder.sent > sent + 5, 5000, 'records to out.jsonl again');
  });

  it('goes back when a connector cannot even be built', async () => {
    const { agent, dir, file } = await startAgent(configText('$DIR'));
    const sim2 = agent.devices.get('sim2')!.connector;
    // sim2 becomes an MQTT device whose CA file does not exist
    const text = configText(dir, { version: 2 }).replace(
      `{ id: sim2, protocol: simulator, poll: 20ms, points: [{ name: q, signal: counter, rate: 3600000 }] }`,
      `{ id: sim2, protocol: mqtt, broker: "${broker.tlsUrl}", tls: { ca: ${dir}/no-ca.pem }, points: [{ name: q, topic: x/q }] }`,
    );
    const failed = await agent.apply(parseConfig(text, file, {}), 'test').catch((err: Error) => err);
    expect(failed).toBeInstanceOf(RolledBack);
    expect((failed as Error).message).toMatch(/device sim2: .*no-ca\.pem/);
    expect(agent.devices.get('sim2')!.config.protocol).toBe('simulator');
    expect(agent.devices.get('sim2')!.connector).not.toBe(sim2);
    const stream = agent.streamsByName.get('b')!.stream;
    const before = stream.readingsIn;
    await until(() => stream.readingsIn > before + 5, 5000, 'sim2 feeding stream b again');
  });

  it('applies the config file when it changes, without a signal', async () => {
    const { agent, file } = await startAgent(configText('$DIR'));
    const text = readFileSync(file, 'utf8');
    writeFileSync(file, text.replace('version: 1', 'version: 2').replace('poll: 20ms, points: [{ name: q', 'poll: 40ms, points: [{ name: q'));
    await until(() => agent.config.version === 2, 5000, 'the file change applied');
    expect(agent.devices.get('sim2')!.config.poll).toBe(40);
  });
});

describe('management API', () => {
  async function withApi(extra = '', stepsB?: string) {
    const port = await freePort();
    const started = await startAgent(configText('$DIR', { agent: `, http: "127.0.0.1:${port}"${extra}`, stepsB }));
    return { ...started, url: `http://127.0.0.1:${port}` };
  }

  it('lists streams, devices with latest values, the outbox and the config version; deploys and undeploys a stream', async () => {
    // deploying and undeploying change something: they need the token, on loopback too
    const token = 'a-token-of-24-characters';
    const { agent, url } = await withApi(`, http_token: ${token}`);
    await until(() => agent.streamsByName.get('a')!.stream.readingsIn > 5, 5000, 'readings');
    const headers = { authorization: `Bearer ${token}` };
    const get = async (path: string) => (await fetch(url + path, { headers })).json();

    const streams = await get('/api/streams');
    expect(streams.map((s: { name: string }) => s.name)).toEqual(['a', 'b']);
    expect(streams[1]).toMatchObject({ name: 'b', from: { device: 'sim2' }, steps: ['change'], to: ['out'], deployed: true });
    expect(streams[0].readings_in).toBeGreaterThan(5);

    const devices = await get('/api/devices');
    expect(devices[0]).toMatchObject({ id: 'sim', protocol: 'simulator', online: true });
    expect(devices[0].points.p).toMatchObject({ quality: 'good' });
    expect(typeof devices[0].points.p.value).toBe('number');

    const outbox = await get('/api/outbox');
    expect(outbox.upstreams[0]).toMatchObject({ name: 'out', type: 'file', connected: true, retrying: false, drops: { overflow: 0, expired: 0 }, dead_lettered: 0 });
    expect(outbox.upstreams[0].sent).toBeGreaterThan(0);
    expect(await get('/api/config')).toMatchObject({ agent: 'gw-1', version: 1 });

    const undeploy = await fetch(`${url}/api/streams/a/undeploy`, { method: 'POST', headers });
    expect(await undeploy.json()).toEqual({ name: 'a', deployed: false });
    const stopped = agent.streamsByName.get('a')!.stream.readingsIn;
    await new Promise((r) => setTimeout(r, 300));
    expect(agent.streamsByName.get('a')!.stream.readingsIn).toBe(stopped);
    expect((await get('/api/streams'))[0].deployed).toBe(false);
    await fetch(`${url}/api/streams/a/deploy`, { method: 'POST', headers });
    await until(() => agent.streamsByName.get('a')!.stream.readingsIn > stopped + 5, 5000, 'stream a deployed again');

    expect((await fetch(`${url}/api/nothing`, { headers })).status).toBe(404);
    expect((await fetch(`${url}/api/streams/a/deploy`, { headers })).status).toBe(405);
    const missing = await fetch(`${url}/api/streams/nope/deploy`, { method: 'POST', headers });
    expect(missing.status).toBe(404);
    expect((await missing.json()).error).toMatch(/no stream "nope" \(streams: a, b\)/);
  });

  it('exports Prometheus metrics', async () => {
    // stream b's filter drops everything: a per-operator drop count
    const { agent, url } = await withApi('', '{ filter: "q < 0" }');
    await until(() => agent.streamsByName.get('b')!.stream.readingsIn > 5, 5000, 'readings');
    // a group commit and a send happen after the readings: the counter is read once one has
    await until(() => agent.forwarders.some((f) => f.sent > 0), 10_000, 'a record sent');
    const text = await (await fetch(`${url}/metrics`)).text();
    const value = (line: RegExp) => Number(text.split('\n').find((l) => line.test(l))?.split(' ').pop());
    expect(value(/^edge_stream_readings_in_total\{stream="a"\}/)).toBeGreaterThan(5);
    expect(value(/^edge_stream_readings_out_total\{stream="a"\}/)).toBeGreaterThan(0);
    expect(value(/^edge_stream_readings_out_total\{stream="b"\}/)).toBe(0);
    expect(value(/^edge_stream_step_events_total\{stream="b",step="1",operator="filter",kind="dropped"\}/)).toBeGreaterThan(5);
    expect(value(/^edge_outbox_dropped_total\{upstream="out",reason="overflow"\}/) || 0).toBe(0);
    expect(value(/^edge_upstream_retrying\{upstream="out"\}/)).toBe(0);
    expect(value(/^edge_device_online\{device="sim",protocol="simulator"\}/)).toBe(1);
    expect(value(/^edge_outbox_depth\{upstream="out"\}/)).toBeGreaterThanOrEqual(0);
    expect(value(/^edge_upstream_sent_total\{upstream="out"\}/)).toBeGreaterThan(0);
    expect(value(/^edge_upstream_errors_total\{upstream="out"\}/)).toBe(0);
    expect(value(/^edge_config_info\{version="1"\}/)).toBe(1);
    expect(value(/^process_resident_memory_bytes /)).toBeGreaterThan(10e6);
    expect(text).toMatch(/^nodejs_eventloop_lag_seconds \d/m);
  });

  it('needs a token when it listens beyond loopback, and then checks it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'manage-'));
    writeFileSync(join(dir, 'open.yaml'), configText(dir, { agent: ', http: "0.0.0.0:8080"' }));
    await expect(launchAgent(join(dir, 'open.yaml'), testLog)).rejects.toThrow(/agent\.http: the management API on 0\.0\.0\.0:8080 is reachable from the network: set agent\.http_token/);

    const token = 'a-token-of-24-characters';
    const { url } = await withApi(`, http_token: ${token}`);
    expect((await fetch(`${url}/api/streams`)).status).toBe(401);
    expect((await fetch(`${url}/metrics`, { headers: { authorization: 'Bearer wrong-token-of-24-chars!' } })).status).toBe(401);
    expect((await fetch(`${url}/api/streams`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    expect((await fetch(`${url}/`)).status).toBe(200); // the page itself; its data needs the token
  });
});

describe('a busy port', () => {
  it('does not keep the agent from running at start; an apply that needs the port goes back', async () => {
    const port = await freePort();
    const squatter = createServer().listen(port, '127.0.0.1');
    await once(squatter, 'listening');
    cleanup.push(() => new Promise((r) => squatter.close(r)));
    const { agent, dir, file } = await startAgent(configText('$DIR', { agent: `, http: "127.0.0.1:${port}"` }));
    await until(() => agent.streamsByName.get('a')!.stream.readingsIn > 5, 5000, 'the agent running without its API');
    const other = await freePort();
    const moved = parseConfig(configText(dir, { version: 2, agent: `, http: "127.0.0.1:${other}"` }), file, {});
    await agent.apply(moved, 'test');
    expect((await fetch(`http://127.0.0.1:${other}/api/config`)).status).toBe(200);
    const back = parseConfig(configText(dir, { version: 3, agent: `, http: "127.0.0.1:${port}"` }), file, {});
    await expect(agent.apply(back, 'test')).rejects.toThrow(/management API on 127\.0\.0\.1:\d+: listen EADDRINUSE.*runs again/);
    expect(agent.config.version).toBe(2);
    expect((await fetch(`http://127.0.0.1:${other}/api/config`)).status).toBe(200);
  });
});

describe('status page in Chromium', () => {
  it('shows a simulated value with its quality and updates it', async () => {
    const port = await freePort();
    const { agent } = await startAgent(configText('$DIR', { agent: `, http: "127.0.0.1:${port}"` }));
    const browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    cleanup.push(() => browser.close());
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${port}/`);
    const cell = page.locator('tr[data-point="sim.p"] td:nth-child(5)');
    await cell.waitFor({ timeout: 10_000 });
    const first = await cell.textContent();
    expect(Number(first)).not.toBeNaN();
    expect(await page.locator('tr[data-point="sim.p"] td:nth-child(6)').textContent()).toBe('good');
    expect(await page.locator('tr[data-stream="a"] td:nth-child(5)').textContent()).toBe('yes');
    expect(await page.locator('tr[data-upstream="out"] td:first-child').textContent()).toBe('out');
    // the sine (7 s, so that a 2 s refresh never lands on the same phase) moves; the page reads the API every 2 s
    await page.waitForFunction((before) => document.querySelector('tr[data-point="sim.p"] td:nth-child(5)')?.textContent !== before, first, { timeout: 10_000 });
    expect(await page.locator('#status').getAttribute('class')).toBe('');
    expect(agent.streamsByName.get('a')!.deployed).toBe(true);
  });
});

describe('remote config over MQTT', () => {
  it('applies a signed, newer, valid push and refuses the others, each with a state message', async () => {
    const keys = mkdtempSync(join(tmpdir(), 'keys-'));
    // the key pair and the signature come from the CLI an operator uses
    execFileSync(process.execPath, [...CLI, 'keygen', keys]);
    const { privateKey: otherKey } = generateKeyPairSync('ed25519');
    const remote = `remote_config: { broker: "${broker.url}", topic: "plant/{agent}/config", public_key: ${keys}/config-signing.pub }`;
    const { agent, dir, file } = await startAgent(configText('$DIR', { more: remote }));
    const original = readFileSync(file, 'utf8');

    const states: { status: string; version: number; reason?: string; pushed_version?: number; changed?: object }[] = [];
    const client = await mqtt.connectAsync(broker.url);
    cleanup.push(() => client.endAsync());
    client.on('message', (_t, payload) => states.push(JSON.parse(String(payload))));
    await client.subscribeAsync('plant/gw-1/config/state', { qos: 1 });
    await until(() => states.some((s) => s.status === 'running'), 5000, 'the agent says which version runs');

    const sign = (text: string) => {
      const path = join(keys, `push-${states.length}.yaml`);
      writeFileSync(path, text);
      return execFileSync(process.execPath, [...CLI, 'sign-config', '--key', join(keys, 'config-signing.key'), path], { encoding: 'utf8' }).trim();
    };
    const push = async (payload: string) => {
      const count = states.length;
      await client.publishAsync('plant/gw-1/config/set', payload, { qos: 1 });
      await until(() => states.length > count, 10_000, 'a state message');
      return states[states.length - 1];
    };
    const v2 = configText(dir, { version: 2, stepsB: '{ change: { point: q, deadband: 1 } }', more: remote });
    const streamA = agent.streamsByName.get('a')!.stream;

    expect(await push('version: 2')).toMatchObject({ status: 'rejected', reason: 'not a signed push: expected JSON {"target": "...", "config": "...", "signature": "..."}' });
    expect(await push(JSON.stringify({ config: v2 }))).toMatchObject({ status: 'rejected', version: 1, reason: 'unsigned push: no "signature"' });
    expect(await push(sign(v2.replace('version: 2\n', '')))).toMatchObject({ status: 'rejected', reason: 'the pushed config has no "version"' });
    const forged = JSON.stringify({ config: v2, signature: (await import('node:crypto')).sign(null, Buffer.from(v2), otherKey).toString('base64') });
    expect(await push(forged)).toMatchObject({ status: 'rejected', reason: 'bad signature: it does not verify against the configured public key' });
    const tampered = JSON.parse(sign(v2));
    tampered.config = tampered.config.replace('deadband: 1', 'deadband: 2');
    expect((await push(JSON.stringify(tampered))).reason).toMatch(/^bad signature/);
    // sign-config refuses to sign an invalid config: sign this one with the library, as a careless tool might
    const invalid = v2.replace('{ change: { point: q, deadband: 1 } }', '{ threshold: { point: q, min: 5, max: 1 } }');
    expect(() => sign(invalid)).toThrow(/stream b, step 1 \(threshold\): min \(5\) is greater than max \(1\)/);
    expect((await push(signedPush(invalid, readEd25519Key(join(keys, 'config-signing.key'), 'private'), 'gw-1'))).reason).toMatch(/^invalid config: .*stream b, step 1 \(threshold\)/);
    expect(agent.config.version).toBe(1);
    expect(readFileSync(file, 'utf8')).toBe(original);

    const good = sign(v2);
    expect(await push(good)).toMatchObject({ status: 'applied', version: 2, changed: { upstreams: [], devices: [], streams: ['b'] } });
    expect(agent.config.version).toBe(2);
    expect(agent.streamsByName.get('a')!.stream).toBe(streamA);
    expect(readFileSync(file, 'utf8')).toBe(v2);
    expect(readFileSync(`${file}.bak`, 'utf8')).toBe(original);

    // the same push again (a replay), and an older version
    expect(await push(good)).toMatchObject({ status: 'rejected', version: 2, pushed_version: 2, reason: 'version 2 is not newer than the running version 2' });

    // valid, but an upstream that cannot be built: back to version 2, file included
    const v3 = configText(dir, {
      version: 3,
      stepsB: '{ change: { point: q, deadband: 1 } }',
      more: `  - { name: cloud, type: mqtt, url: "${broker.url}", topic: t, tls: { ca: ${dir}/missing-ca.pem } }\n${remote}`,
    });
    const rolled = await push(sign(v3));
    expect(rolled).toMatchObject({ status: 'rolled-back', version: 2, pushed_version: 3 });
    expect(rolled.reason).toMatch(/missing-ca\.pem/);
    expect(agent.config.version).toBe(2);
    expect(readFileSync(file, 'utf8')).toBe(v2);
    expect(existsSync(`${file}.tmp-${process.pid}`)).toBe(false);
    // the outbox and the stream that did not change ran through all of it
    expect(agent.streamsByName.get('a')!.stream).toBe(streamA);

    // a push left retained on the broker comes to every new connection: the version already
    // running is no news (published live, it is a replay like any other)
    const liveCount = states.length;
    await client.publishAsync('plant/gw-1/config/set', good, { qos: 1, retain: true });
    await until(() => states.length > liveCount, 5000, 'the live copy refused');
    expect(states[states.length - 1]).toMatchObject({ status: 'rejected', reason: 'version 2 is not newer than the running version 2' });
    await agent.stop();
    const restarted = await launchAgent(file, testLog);
    cleanup.push(() => restarted.stop());
    const count = states.length;
    await until(() => states.length > count, 5000, 'the restarted agent says which version runs');
    await new Promise((r) => setTimeout(r, 500));
    expect(states.slice(count)).toEqual([expect.objectContaining({ status: 'running', version: 2 })]);
    await client.publishAsync('plant/gw-1/config/set', '', { qos: 1, retain: true });
  });
});
