import { spawnSync } from 'node:child_process';
import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Agent } from '../src/agent/agent.js';
import { startAgent as launchAgent } from '../src/start.js';
import { CLI } from './support/cli.js';
import { signedPush, verifyPush } from '../src/manage/signing.js';
import { AgentProcess } from './support/agent-process.js';
import { FlakyLink } from './support/proxy.js';
import { testLog } from './support/log.js';
import { Mosquitto } from './support/mosquitto.js';
import { until } from './support/ports.js';

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step().catch(() => undefined);
});

/** Each test's gateway has ids of its own: the broker keeps sessions from one test to the next. */
let run = 0;
let gw1 = '';
let gwA = '';
let gw9 = '';
beforeEach(() => {
  run++;
  [gw1, gwA, gw9] = [`gw-1-${run}`, `gw-a-${run}`, `gw-9-${run}`];
});

let broker: Mosquitto;
let keys: { privateKey: KeyObject; publicKeyFile: string };
beforeAll(async () => {
  broker = await Mosquitto.start();
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const dir = mkdtempSync(join(tmpdir(), 'push-keys-'));
  writeFileSync(join(dir, 'key.pub'), publicKey.export({ type: 'spki', format: 'pem' }));
  keys = { privateKey, publicKeyFile: join(dir, 'key.pub') };
});
afterAll(async () => {
  await broker?.stop('SIGKILL');
});

interface Options {
  version: number;
  id?: string;
  dataDir?: string;
  remote?: string;
  poll?: string;
}

/** One simulated counter into a file upstream, and remote_config on the test broker. */
function configText(dir: string, { version, id = gw1, dataDir = 'data', remote = '', poll = '50ms', brokerUrl = broker.url }: Options & { brokerUrl?: string }): string {
  return `version: ${version}
agent: { id: ${id}, data_dir: ${dir}/${dataDir}, log_level: error, http: off }
devices:
  - { id: sim, protocol: simulator, poll: ${poll}, points: [{ name: q, signal: counter, rate: 3600000 }] }
streams:
  - { name: a, from: { device: sim }, to: [out] }
upstream:
  - { name: out, type: file, path: ${dir}/out.jsonl }
remote_config: { broker: "${brokerUrl}", topic: "plant/{agent}/config", public_key: ${keys.publicKeyFile}${remote} }
`;
}

interface State {
  agent: string;
  status: string;
  version: number;
  pushed_version?: number;
  reason?: string;
}

/** A fleet tool: publishes pushes and collects every gateway's state messages. */
async function fleetTool(): Promise<{ client: MqttClient; states: State[]; push: (agent: string, payload: string | Buffer) => Promise<void>; next: (count: number) => Promise<State> }> {
  const states: State[] = [];
  const client = await mqtt.connectAsync(broker.url);
  cleanup.push(() => client.endAsync());
  client.on('message', (_t, payload, packet) => {
    // what an earlier test left retained is no news
    if (payload.length && !packet.retain) states.push(JSON.parse(String(payload)));
  });
  await client.subscribeAsync('plant/+/config/state', { qos: 1 });
  return {
    client,
    states,
    push: async (agent, payload) => {
      await client.publishAsync(`plant/${agent}/config/set`, payload, { qos: 1 });
    },
    next: async (count) => {
      await until(() => states.length > count, 15_000, 'a state message');
      return states[count];
    },
  };
}

async function startAgent(text: (dir: string) => string): Promise<{ agent: Agent; dir: string; file: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'push-'));
  const file = join(dir, 'agent.yaml');
  writeFileSync(file, text(dir));
  const agent = await launchAgent(file, testLog);
  cleanup.push(() => agent.stop());
  return { agent, dir, file };
}

const push = (text: string, target: string, newId?: string) => signedPush(text, keys.privateKey, target, newId);

describe('a push is checked and applied in one step', () => {
  it('refuses an older push that arrives while a newer config is being applied', async () => {
    const tool = await fleetTool();
    const { agent, dir } = await startAgent((d) => configText(d, { version: 1 }));
    await until(() => tool.states.some((s) => s.status === 'running'), 10_000, 'the agent connected');
    // the queue is busy (an apply that takes its time: an upstream slow to connect) while v4 and then an old, validly signed v2 come
    let release!: () => void;
    const busy = agent.oneAtATime(() => new Promise<void>((resolve) => (release = resolve)));
    const v4 = agent.apply(agent.parse(configText(dir, { version: 4 })), 'the file');
    const count = tool.states.length;
    await tool.push(gw1, push(configText(dir, { version: 2 }), gw1));
    await new Promise((r) => setTimeout(r, 500)); // the push is with the agent, waiting
    release();
    await busy;
    await v4;
    expect(await tool.next(count)).toMatchObject({ status: 'rejected', version: 4, pushed_version: 2, reason: 'version 2 is not newer than the running version 4' });
    expect(agent.config.version).toBe(4);
    expect(readFileSync(agent.file, 'utf8')).not.toMatch(/^version: 2/);
  });
});

describe('a push names the gateway it is for', () => {
  it("refuses a push signed for another gateway, and a config that would change agent.id unless the push says so", async () => {
    const tool = await fleetTool();
    const { agent, dir, file } = await startAgent((d) => configText(d, { version: 1 }));
    await until(() => tool.states.some((s) => s.agent === gw1 && s.status === 'running'), 10_000, 'the agent connected');

    // gw-a's push, validly signed, published on gw-1's topic
    let count = tool.states.length;
    await tool.push(gw1, push(configText(dir, { version: 2, id: gwA }), gwA));
    expect(await tool.next(count)).toMatchObject({ agent: gw1, status: 'rejected', version: 1, reason: `the push is for gateway ${gwA}, not for ${gw1}` });

    // for gw-1, but its config says gw-a: no rename unless the signed push says so
    count = tool.states.length;
    await tool.push(gw1, push(configText(dir, { version: 2, id: gwA }), gw1));
    expect(await tool.next(count)).toMatchObject({ status: 'rejected', reason: `the pushed config would change agent.id from ${gw1} to ${gwA}: sign it with --new-id ${gwA} if that is meant` });

    // the first format (no target) is refused unless allowed
    count = tool.states.length;
    const v2 = configText(dir, { version: 2 });
    const untargeted = JSON.stringify({ config: v2, signature: sign(null, Buffer.from(v2), keys.privateKey).toString('base64') });
    await tool.push(gw1, untargeted);
    expect((await tool.next(count)).reason).toMatch(/^the push names no target gateway/);
    // a target added to a first-format signature does not verify
    count = tool.states.length;
    await tool.push(gw1, JSON.stringify({ target: gw1, ...JSON.parse(untargeted) }));
    expect((await tool.next(count)).reason).toMatch(/^bad signature/);
    expect(agent.config.version).toBe(1);
    expect(agent.config.agent.id).toBe(gw1);

    // a rename the push means: gw-1 becomes gw-9 and then answers on gw-9's topic
    count = tool.states.length;
    await tool.push(gw1, push(configText(dir, { version: 3, id: gw9 }), gw1, gw9));
    await until(() => tool.states.slice(count).some((s) => s.agent === gw9), 15_000, 'gw-9 speaking');
    expect(tool.states.slice(count).find((s) => s.agent === gw9)).toMatchObject({ version: 3 });
    expect(agent.config.agent.id).toBe(gw9);
    expect(readFileSync(file, 'utf8')).toMatch(new RegExp(`id: ${gw9}`));
    // and takes pushes for gw-9 only
    count = tool.states.length;
    await tool.push(gw9, push(configText(dir, { version: 4, id: gw9 }), gw1));
    expect(await tool.next(count)).toMatchObject({ agent: gw9, status: 'rejected', reason: `the push is for gateway ${gw1}, not for ${gw9}` });
  });

  it('takes a first-format push when remote_config.allow_untargeted says so, and only for its own agent.id', async () => {
    const tool = await fleetTool();
    const allow = ', allow_untargeted: true';
    const { agent, dir } = await startAgent((d) => configText(d, { version: 1, remote: allow }));
    await until(() => tool.states.some((s) => s.status === 'running'), 10_000, 'the agent connected');
    const old = (text: string) => JSON.stringify({ config: text, signature: sign(null, Buffer.from(text), keys.privateKey).toString('base64') });
    let count = tool.states.length;
    await tool.push(gw1, old(configText(dir, { version: 2, id: gwA, remote: allow })));
    expect(await tool.next(count)).toMatchObject({ status: 'rejected', reason: `the pushed config would change agent.id from ${gw1} to ${gwA}: sign it with --new-id ${gwA} if that is meant` });
    count = tool.states.length;
    await tool.push(gw1, old(configText(dir, { version: 2, remote: allow })));
    expect(await tool.next(count)).toMatchObject({ status: 'applied', version: 2 });
    expect(agent.config.version).toBe(2);
  });
});

describe('a push sent while the agent is away', () => {
  it('waits in the agent\'s session at the broker and is applied when the agent is back', async () => {
    const tool = await fleetTool();
    const { agent, dir, file } = await startAgent((d) => configText(d, { version: 1 }));
    await until(() => tool.states.some((s) => s.status === 'running'), 10_000, 'the agent connected');
    await agent.stop();
    // not retained: only the agent's session keeps it
    await tool.push(gw1, push(configText(dir, { version: 2 }), gw1));
    const count = tool.states.length;
    const back = await launchAgent(file, testLog);
    cleanup.push(() => back.stop());
    await until(() => back.config.version === 2, 15_000, 'the push applied after the restart');
    await until(() => tool.states.slice(count).some((s) => s.status === 'applied' && s.version === 2), 10_000, 'the applied state');
    expect(readFileSync(file, 'utf8')).toMatch(/^version: 2/);
  });
});

describe('a push sent while the broker link is cut', () => {
  it('is applied once the link is back', async () => {
    const tool = await fleetTool();
    const link = await FlakyLink.start(broker.port);
    cleanup.push(() => link.stop());
    const brokerUrl = `mqtt://127.0.0.1:${link.port}`;
    const { agent, dir } = await startAgent((d) => configText(d, { version: 1, brokerUrl }));
    await until(() => tool.states.some((s) => s.status === 'running'), 10_000, 'the agent connected');
    link.setMode('refuse');
    // the broker notices the agent gone (its socket closed) before the push comes
    await new Promise((r) => setTimeout(r, 500));
    await tool.push(gw1, push(configText(dir, { version: 2, brokerUrl }), gw1));
    await new Promise((r) => setTimeout(r, 1000));
    expect(agent.config.version).toBe(1);
    link.setMode('forward');
    await until(() => agent.config.version === 2, 20_000, 'the push applied after the link came back');
  });
});

describe('a retained push', () => {
  it('reaches a gateway that never connected before, and is not news again at its next start', async () => {
    const tool = await fleetTool();
    const dir = mkdtempSync(join(tmpdir(), 'push-retained-'));
    const file = join(dir, 'agent.yaml');
    writeFileSync(file, configText(dir, { version: 1 }));
    // published before the gateway's first connection: no session holds it, the broker's retained copy does
    await tool.client.publishAsync(`plant/${gw1}/config/set`, push(configText(dir, { version: 2 }), gw1), { qos: 1, retain: true });
    cleanup.push(() => tool.client.publishAsync(`plant/${gw1}/config/set`, '', { qos: 1, retain: true }));
    const agent = await launchAgent(file, testLog);
    await until(() => agent.config.version === 2, 15_000, 'the retained push applied');
    await agent.stop();
    const count = tool.states.length;
    const again = await launchAgent(file, testLog);
    cleanup.push(() => again.stop());
    await until(() => tool.states.length > count, 10_000, 'the restarted agent says which version runs');
    await new Promise((r) => setTimeout(r, 500));
    expect(tool.states.slice(count)).toEqual([expect.objectContaining({ status: 'running', version: 2 })]);
  });
});

describe('changing data_dir through a push', () => {
  it('opens the other database and its records go on from the last seq: (agent, seq) stays unique', async () => {
    const tool = await fleetTool();
    const { agent, dir } = await startAgent((d) => configText(d, { version: 1, poll: '20ms' }));
    await until(() => tool.states.some((s) => s.status === 'running'), 10_000, 'the agent connected');
    const seqs = () =>
      (existsSync(join(dir, 'out.jsonl')) ? readFileSync(join(dir, 'out.jsonl'), 'utf8') : '')
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line).seq as number);
    await until(() => seqs().length > 20, 10_000, 'records before the move');
    const count = tool.states.length;
    await tool.push(gw1, push(configText(dir, { version: 2, poll: '20ms', dataDir: 'moved' }), gw1));
    expect(await tool.next(count)).toMatchObject({ status: 'applied', version: 2 });
    expect(agent.config.agent.data_dir).toBe(join(dir, 'moved'));
    const before = seqs().length;
    await until(() => seqs().length > before + 20, 10_000, 'records after the move');
    const all = seqs();
    expect(new Set(all).size).toBe(all.length);
    expect(Math.min(...all.slice(before))).toBeGreaterThan(Math.max(...all.slice(0, before)));
  });
});

describe('a push larger than remote_config.max_size', () => {
  const rss = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;

  it('is dropped by the broker (MQTT 5 maximum packet size): 150 MB cost the agent no memory, and the next push is applied', async () => {
    const tool = await fleetTool();
    const dir = mkdtempSync(join(tmpdir(), 'push-big-'));
    const file = join(dir, 'agent.yaml');
    writeFileSync(file, configText(dir, { version: 1 }));
    const agent = AgentProcess.start(file);
    cleanup.push(async () => {
      agent.kill('SIGKILL');
      await agent.exit();
    });
    await until(() => tool.states.some((s) => s.agent === gw1 && s.status === 'running'), 20_000, 'the agent connected');
    await new Promise((r) => setTimeout(r, 1000));
    const before = rss(agent.child.pid!);

    // validly shaped, and 150 MB: the broker takes it (PUBACK) and does not pass it on
    const big = Buffer.alloc(150 * 1024 * 1024, 'a');
    await tool.push(gw1, big);
    const count = tool.states.length;
    await tool.push(gw1, push(configText(dir, { version: 2 }), gw1));
    expect(await tool.next(count)).toMatchObject({ status: 'applied', version: 2 });
    const after = rss(agent.child.pid!);
    console.log(`agent RSS ${(before / 1e6).toFixed(1)} MB before a 150 MB push, ${(after / 1e6).toFixed(1)} MB after it`);
    expect(after - before).toBeLessThan(50e6);
    expect(tool.states.slice(count)).toHaveLength(1);
  });
});

describe('sign-config', () => {
  it("signs for the file's agent.id by default, refuses a target the file would rename unasked, and signs a rename with --new-id", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sign-'));
    writeFileSync(join(dir, 'key.pem'), keys.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    writeFileSync(join(dir, 'agent.yaml'), configText(dir, { version: 5, id: 'gw-new' }));
    const publicKey = (await import('node:crypto')).createPublicKey(keys.privateKey);
    const cli = (...args: string[]) => spawnSync(process.execPath, [...CLI, 'sign-config', '--key', join(dir, 'key.pem'), ...args, join(dir, 'agent.yaml')], { encoding: 'utf8' });

    const plain = cli();
    expect(plain.status).toBe(0);
    const push = JSON.parse(plain.stdout);
    expect(push).toMatchObject({ target: 'gw-new' });
    expect(push.new_id).toBeUndefined();
    expect(verifyPush(push, publicKey)).toBe(true);

    const wrong = cli('--target', 'gw-old');
    expect(wrong.status).toBe(2);
    expect(wrong.stderr).toMatch(/says agent\.id gw-new, not gw-old: add --new-id gw-new to rename gw-old/);

    const rename = cli('--target', 'gw-old', '--new-id', 'gw-new');
    expect(rename.status).toBe(0);
    const renamed = JSON.parse(rename.stdout);
    expect(renamed).toMatchObject({ target: 'gw-old', new_id: 'gw-new' });
    expect(verifyPush(renamed, publicKey)).toBe(true);
    // the target is signed: changed, the push no longer verifies
    expect(verifyPush({ ...renamed, target: 'gw-other' }, publicKey)).toBe(false);
  });
});
