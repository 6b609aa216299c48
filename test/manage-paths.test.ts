// Paths in the config are relative to the config file everywhere (remote_config.public_key, TLS
// files, OPC UA certificates and trust_dir, data_dir, a file upstream, ${file:...}), and
// `edge-agent validate` reports a file that is not there with its line.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import { startAgent } from '../src/start.js';
import { CLI } from './support/cli.js';
import { testLog } from './support/log.js';
import { Mosquitto } from './support/mosquitto.js';
import { until } from './support/ports.js';

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

/** Every kind of path key, each written relative. */
function configText(broker = 'mqtt://127.0.0.1:1'): string {
  return `version: 1
agent: { id: gw-1, data_dir: data, log_level: error, http: "off" }
devices:
  - id: plc
    protocol: opcua
    endpoint: opc.tcp://127.0.0.1:4840
    user: operator
    certificate: pki/user.pem
    private_key: pki/user.key
    trust_dir: pki/servers
    points: [{ name: p, node: "ns=1;s=p" }]
  - { id: sim, protocol: simulator, points: [{ name: p }] }
streams:
  - { name: a, from: { device: sim }, to: [out, cloud] }
upstream:
  - { name: out, type: file, path: archive/out.jsonl }
  - { name: cloud, type: mqtt, url: "mqtts://127.0.0.1:1", topic: t, password: "\${file:secrets/broker}", tls: { ca: tls/ca.pem } }
remote_config: { broker: "${broker}", topic: "plant/{agent}/config", public_key: keys/config-signing.pub }
`;
}

/** The files the config names, in the config's folder. */
function provide(dir: string): void {
  for (const sub of ['pki/servers', 'secrets', 'tls', 'keys']) mkdirSync(join(dir, sub), { recursive: true });
  for (const file of ['pki/user.pem', 'pki/user.key', 'tls/ca.pem']) writeFileSync(join(dir, file), 'x');
  writeFileSync(join(dir, 'secrets/broker'), 's3cret\n');
  execFileSync(process.execPath, [...CLI, 'keygen', join(dir, 'keys')]);
}

describe('paths relative to the config file', () => {
  it('are taken from the config file\'s folder, not the working directory', () => {
    const dir = mkdtempSync(join(tmpdir(), 'paths-'));
    provide(dir);
    const { config } = parseConfig(configText(), join(dir, 'agent.yaml'), {});
    expect(config.agent.data_dir).toBe(join(dir, 'data'));
    expect(config.devices[0]).toMatchObject({ certificate: join(dir, 'pki/user.pem'), private_key: join(dir, 'pki/user.key'), trust_dir: join(dir, 'pki/servers') });
    expect(config.upstream[0]).toMatchObject({ path: join(dir, 'archive/out.jsonl') });
    expect(config.upstream[1]).toMatchObject({ tls: { ca: join(dir, 'tls/ca.pem') }, password: 's3cret' });
    expect(config.remote_config!.public_key).toBe(join(dir, 'keys/config-signing.pub'));
    // an absolute path stays as it is
    const absolute = parseConfig(configText().replace('public_key: keys/', `public_key: ${dir}/keys/`).replace('file:secrets/', `file:${dir}/secrets/`), '/elsewhere/agent.yaml', {});
    expect(absolute.config.remote_config!.public_key).toBe(join(dir, 'keys/config-signing.pub'));
  });

  it('edge-agent validate reports each file or folder that is not there, with its line', () => {
    const dir = mkdtempSync(join(tmpdir(), 'paths-'));
    const file = join(dir, 'agent.yaml');
    writeFileSync(file, configText());
    mkdirSync(join(dir, 'secrets'));
    writeFileSync(join(dir, 'secrets/broker'), 's3cret');
    writeFileSync(join(dir, 'pki'), 'a file where the folder should be');
    const result = spawnSync(process.execPath, [...CLI, 'validate', file], { encoding: 'utf8', cwd: tmpdir() });
    expect(result.status).toBe(1);
    const lines = result.stderr.trim().split('\n');
    expect(lines).toEqual([
      `${file}:8:18: devices[0].certificate: no file ${dir}/pki/user.pem`,
      `${file}:9:18: devices[0].private_key: no file ${dir}/pki/user.key`,
      `${file}:10:16: devices[0].trust_dir: no folder ${dir}/pki/servers`,
      `${file}:17:117: upstream[1].tls.ca: no file ${dir}/tls/ca.pem`,
      `${file}:18:91: remote_config.public_key: no file ${dir}/keys/config-signing.pub`,
      `${file}: 5 errors`,
    ]);

    const fixed = mkdtempSync(join(tmpdir(), 'paths-'));
    provide(fixed);
    writeFileSync(join(fixed, 'agent.yaml'), configText());
    const ok = spawnSync(process.execPath, [...CLI, 'validate', join(fixed, 'agent.yaml')], { encoding: 'utf8', cwd: tmpdir() });
    expect(ok.stderr).toBe('');
    expect(ok.status).toBe(0);
  });
});

describe('remote config with a relative public_key', () => {
  let broker: Mosquitto;
  beforeAll(async () => {
    broker = await Mosquitto.start();
  });
  afterAll(async () => {
    await broker?.stop('SIGKILL');
  });

  it('starts: the key is read from beside the config file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'paths-'));
    mkdirSync(join(dir, 'keys'));
    execFileSync(process.execPath, [...CLI, 'keygen', join(dir, 'keys')]);
    const file = join(dir, 'agent.yaml');
    writeFileSync(
      file,
      `version: 1
agent: { id: gw-1, data_dir: data, log_level: error, http: "off" }
devices: [{ id: sim, protocol: simulator, points: [{ name: p }] }]
streams: [{ name: a, from: { device: sim }, to: [out] }]
upstream: [{ name: out, type: file, path: out.jsonl }]
remote_config: { broker: "${broker.url}", topic: "plant/{agent}/config", public_key: keys/config-signing.pub }
`,
    );
    const states: { status: string }[] = [];
    const client = await mqtt.connectAsync(broker.url);
    cleanup.push(() => client.endAsync());
    client.on('message', (_t, payload) => states.push(JSON.parse(String(payload))));
    await client.subscribeAsync('plant/gw-1/config/state', { qos: 1 });
    const agent = await startAgent(file, testLog);
    cleanup.push(() => agent.stop());
    await until(() => states.some((s) => s.status === 'running'), 5000, 'the remote config client says which version runs');
  });
});
