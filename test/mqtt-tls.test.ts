import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent } from '../src/start.js';
import { Mosquitto } from './support/mosquitto.js';
import { makePki } from './support/pki.js';
import { until } from './support/ports.js';
import { Subscriber } from './support/subscriber.js';

let broker: Mosquitto;
let dir: string;
let pki: ReturnType<typeof makePki>;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mqtt-tls-'));
  pki = makePki(dir);
  execFileSync('mosquitto_passwd', ['-b', '-c', join(dir, 'passwd'), 'edge', 's3cret']);
  chmodSync(join(dir, 'passwd'), 0o644);
  broker = await Mosquitto.start({
    dir,
    settings: [
      `cafile ${pki.ca}`,
      `certfile ${pki.serverCert}`,
      `keyfile ${pki.serverKey}`,
      'require_certificate true',
      `password_file ${join(dir, 'passwd')}`,
      'allow_anonymous false',
    ],
  });
});
afterAll(async () => {
  await broker?.stop('SIGKILL');
});

function config(password: string): string {
  const work = mkdtempSync(join(tmpdir(), 'agent-tls-'));
  writeFileSync(join(work, 'password'), `${password}\n`);
  const file = join(work, 'agent.yaml');
  writeFileSync(
    file,
    `agent: { id: gw-tls, data_dir: ${work}/data }
devices: [{ id: sim, protocol: simulator, poll: 50ms, points: [{ name: p, signal: sine }] }]
streams: [{ name: s, from: { device: sim }, to: [cloud] }]
upstream:
  - name: cloud
    type: mqtt
    url: ${broker.tlsUrl}
    topic: "tls/{agent}/{stream}"
    username: edge
    password: \${file:${work}/password}
    tls: { ca: ${pki.ca}, cert: ${pki.clientCert}, key: ${pki.clientKey} }
`,
  );
  return file;
}

function capturingLog() {
  const lines: string[] = [];
  const log = pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) });
  return { log, lines };
}

describe('MQTT upstream over TLS with a client certificate and a password', () => {
  it('delivers to a broker that requires both', async () => {
    const subscriber = await Subscriber.connect(broker.tlsUrl, 'tls/#', {
      username: 'edge',
      password: 's3cret',
      ca: readFileSync(pki.ca),
      cert: readFileSync(pki.clientCert),
      key: readFileSync(pki.clientKey),
    });
    const { log } = capturingLog();
    const agent = await startAgent(config('s3cret'), log);
    await until(() => subscriber.records.length >= 5, 10_000, 'records over TLS');
    expect(subscriber.records[0]).toMatchObject({ agent: 'gw-tls', stream: 's', seq: 1 });
    await agent.stop();
    await subscriber.close();
  });

  it('keeps the records and says why when the broker refuses the password', async () => {
    const { log, lines } = capturingLog();
    const agent = await startAgent(config('wrong'), log);
    await until(() => agent.outbox.depth('cloud') >= 10, 10_000, 'records piling up in the outbox');
    await until(() => lines.some((l) => /upstream cloud: cannot reach mqtts:\/\/127.0.0.1:\d+: .*(Bad username or password|Not authorized)/i.test(l)), 5000, 'the refusal in the log');
    // once per episode, not once per attempt
    expect(lines.filter((l) => l.includes('upstream cloud: cannot reach')).length).toBe(1);
    expect(lines.join('\n')).not.toContain('wrong');
    await agent.stop();
  });
});
