import { closeSync, copyFileSync, existsSync, fsyncSync, openSync, renameSync, writeSync } from 'node:fs';
import { verify, type KeyObject } from 'node:crypto';
import { dirname } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { RolledBack, type ConfigChange, type ManagedAgent } from './managed-agent.js';
import { ConfigError } from '../config/errors.js';
import type { AgentConfig } from '../config/types.js';
import { tlsOptions } from '../upstream/tls.js';
import { fillTemplate } from '../upstream/upstream.js';
import { readEd25519Key } from './signing.js';

type RemoteConfig = NonNullable<AgentConfig['remote_config']>;

/** What `<topic>/state` says after a push, retained so a fleet tool sees each gateway's last word. */
export interface PushResult {
  agent: string;
  status: 'applied' | 'rejected' | 'rolled-back' | 'running';
  /** The version running now. */
  version: string | number | undefined;
  /** The version the push carried, when it was not applied. */
  pushed_version?: string | number;
  reason?: string;
  changed?: ConfigChange;
  at: number;
}

/** A push: the config text, exactly as signed, and the Ed25519 signature of its UTF-8 bytes. */
interface Push {
  config: string;
  signature: string;
}

/**
 * Signed config pushes over MQTT: a push arrives on `<topic>/set` as JSON
 * `{"config": "<YAML or JSON text>", "signature": "<base64 Ed25519 signature of its bytes>"}`.
 * It is applied only when the signature verifies against `public_key`, its `version` is newer
 * than the running one (a replayed push is refused) and the config is valid; it is then written
 * over the config file atomically (the previous file kept as `<file>.bak`) and applied without
 * a restart. Every outcome is published, retained, on `<topic>/state`.
 */
export class RemoteConfigClient {
  private readonly client: MqttClient;
  private readonly topic: string;
  private readonly key: KeyObject;
  private last: PushResult;

  constructor(
    private readonly agent: ManagedAgent,
    config: RemoteConfig,
    agentId: string,
    private readonly log: Logger,
  ) {
    this.topic = fillTemplate(config.topic, agentId, '', '');
    this.key = readEd25519Key(config.public_key, 'public');
    this.last = { agent: agentId, status: 'running', version: agent.config.version, at: Date.now() };
    this.client = mqtt.connect(config.broker, {
      clientId: `edge-agent-${agentId}-config`,
      username: config.username,
      password: config.password,
      reconnectPeriod: 2000,
      connectTimeout: 10_000,
      clean: true,
      ...tlsOptions(config.tls),
    });
    this.client.on('connect', () => {
      this.client.subscribe(`${this.topic}/set`, { qos: 1 });
      this.publish(this.last);
    });
    this.client.on('error', (err) => log.warn({ err: err.message }, `remote config: ${config.broker}: ${err.message}`));
    this.client.on('message', (_topic, payload, packet) => {
      if (payload.length === 0) return; // a retained push being cleared
      void this.handle(payload, packet.retain);
    });
  }

  /** `retained`: the broker hands a retained push to every new connection; the one running now is no news. */
  private async handle(payload: Buffer, retained: boolean): Promise<void> {
    let result: PushResult | undefined;
    try {
      result = await this.apply(payload, retained);
      if (!result) return;
    } catch (err) {
      const { config } = this.agent;
      result = { agent: config.agent.id, status: 'rejected', version: config.version, reason: `the push could not be handled: ${(err as Error).message}`, at: Date.now() };
    }
    this.last = result;
    if (result.status === 'applied') this.log.info({ version: result.version }, `remote config: version ${result.version} applied`);
    else this.log.warn({ reason: result.reason }, `remote config: push ${result.status}: ${result.reason}`);
    this.publish(result);
  }

  private async apply(payload: Buffer, retained: boolean): Promise<PushResult | undefined> {
    const agentId = this.agent.config.agent.id;
    const running = this.agent.config.version;
    const refuse = (reason: string, pushed?: string | number): PushResult => ({ agent: agentId, status: 'rejected', version: running, pushed_version: pushed, reason, at: Date.now() });
    let push: Push;
    try {
      push = JSON.parse(payload.toString('utf8'));
    } catch {
      return refuse('not a signed push: expected JSON {"config": "...", "signature": "..."}');
    }
    if (typeof push?.config !== 'string') return refuse('not a signed push: no "config" text');
    if (typeof push.signature !== 'string' || push.signature === '') return refuse('unsigned push: no "signature"');
    const bytes = Buffer.from(push.config, 'utf8');
    if (!verify(null, bytes, this.key, Buffer.from(push.signature, 'base64'))) return refuse('bad signature: it does not verify against the configured public key');

    const file = this.agent.file;
    let loaded;
    try {
      loaded = this.agent.parse(push.config);
    } catch (err) {
      if (err instanceof ConfigError) return refuse(`invalid config: ${err.message}`);
      throw err;
    }
    const pushed = loaded.config.version;
    if (pushed === undefined) return refuse('the pushed config has no "version"');
    if (retained && running !== undefined && compareVersions(pushed, running) === 0 && push.config === this.agent.text) return undefined;
    if (running !== undefined && compareVersions(pushed, running) <= 0) return refuse(`version ${pushed} is not newer than the running version ${running}`, pushed);

    const backup = `${file}.bak`;
    try {
      writeAtomically(file, push.config, backup);
    } catch (err) {
      return refuse(`cannot write ${file} (the agent needs write access to its directory): ${(err as Error).message}`, pushed);
    }
    try {
      const changed = await this.agent.apply(loaded, `a push (version ${pushed})`);
      return { agent: agentId, status: 'applied', version: pushed, changed, at: Date.now() };
    } catch (err) {
      // the file goes back too, so that a restart runs what runs now
      writeAtomically(file, this.agent.text);
      if (err instanceof ConfigError) return refuse(`invalid config: ${err.message}`, pushed);
      if (err instanceof RolledBack) return { agent: agentId, status: 'rolled-back', version: running, pushed_version: pushed, reason: err.message, at: Date.now() };
      throw err;
    }
  }

  private publish(result: PushResult): void {
    this.client.publish(`${this.topic}/state`, JSON.stringify(result), { qos: 1, retain: true });
  }

  async close(): Promise<void> {
    await Promise.race([this.client.endAsync(false), new Promise((resolve) => setTimeout(resolve, 1000).unref())]);
    if (!this.client.disconnected) await this.client.endAsync(true).catch(() => undefined);
  }
}

/** Numbers compare as numbers; dotted versions part by part (1.10 > 1.9). */
export function compareVersions(a: string | number, b: string | number): number {
  const pa = String(a).split('.');
  const pb = String(b).split('.');
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? '0';
    const y = pb[i] ?? '0';
    const nx = Number(x);
    const ny = Number(y);
    const diff = Number.isFinite(nx) && Number.isFinite(ny) ? nx - ny : x.localeCompare(y);
    if (diff !== 0) return Math.sign(diff);
  }
  return 0;
}

/** Writes `text` to a temporary file, syncs it and renames it over `file`; `backup` gets a copy of the old file first. */
function writeAtomically(file: string, text: string, backup?: string): void {
  if (backup && existsSync(file)) copyFileSync(file, backup);
  const temporary = `${file}.tmp-${process.pid}`;
  const fd = openSync(temporary, 'w', 0o640);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, file);
  const dir = openSync(dirname(file), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}
