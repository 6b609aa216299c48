import type { KeyObject } from 'node:crypto';
import type { MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { RolledBack, type ConfigChange, type ManagedAgent } from './managed-agent.js';
import { ConfigError } from '../core/config-error.js';
import type { AgentConfig } from '../config/types.js';
import { closeMqtt, connectMqtt } from '../mqtt/client.js';
import { fillTemplate } from '../upstream/upstream.js';
import { NotWritten, writeAndApply } from './config-file.js';
import { AGENT_ID, readEd25519Key, verifyPush } from './signing.js';

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

/** A push: the config text, exactly as signed, the gateway it is for, and the Ed25519 signature. */
interface Push {
  config: string;
  signature: string;
  /** The agent id of the gateway the push is for; absent in the first format (no target). */
  target?: string;
  /** The agent id the push gives the gateway, when it renames it. */
  new_id?: string;
}

/** Room for the topic and the headers of the PUBLISH around a push of `max_size` bytes. */
const PACKET_OVERHEAD = 1024;

/**
 * Signed config pushes over MQTT: a push arrives on `<topic>/set` as JSON
 * `{"target": "<agent id>", "config": "<YAML or JSON text>", "signature": "<base64 Ed25519>"}`
 * (see `signedPush`). It is applied only when the signature verifies against `public_key`, it
 * is for this gateway, its `version` is newer than the running one (a replayed push is refused)
 * and the config is valid; it is then written over the config file atomically (the previous
 * file kept as `<file>.bak`) and applied without a restart. The checks and the apply are one
 * step of the agent's apply queue. Every outcome is published, retained, on `<topic>/state`.
 *
 * MQTT 5 with a session that outlives the connection (`clean: false`, session expiry) and a
 * QoS 1 subscription: a push published while the agent is away waits at the broker; it is
 * acknowledged once handled, so a push the agent died on comes again. `maximumPacketSize`
 * asks the broker to drop a push larger than `max_size` instead of sending it.
 */
export class RemoteConfigClient {
  private readonly client: MqttClient;
  private readonly topic: string;
  private readonly key: KeyObject;
  /** The last outcome; until a push comes, the version running when the connection is made. */
  private last: PushResult | undefined;

  constructor(
    private readonly agent: ManagedAgent,
    private readonly config: RemoteConfig,
    agentId: string,
    private readonly log: Logger,
  ) {
    this.topic = fillTemplate(config.topic, agentId, '', '');
    this.key = readEd25519Key(config.public_key, 'public');
    this.client = connectMqtt({
      who: 'remote config',
      log,
      url: config.broker,
      clientId: `edge-agent-${agentId}-config`,
      username: config.username,
      password: config.password,
      tls: config.tls,
      protocolVersion: 5,
      extra: {
        clean: false,
        properties: {
          // both are 4-byte fields; the largest packet MQTT can carry is 256 MB
          sessionExpiryInterval: Math.min(Math.ceil(config.session_expiry / 1000), 0xffffffff),
          maximumPacketSize: Math.min(config.max_size + PACKET_OVERHEAD, 268_435_460),
        },
      },
    });
    this.client.on('connect', () => {
      // rh 1: a retained push comes with a new subscription only, not again with each reconnection of the session
      this.client.subscribe(`${this.topic}/set`, { qos: 1, rh: 1 });
      this.publish(this.last ?? { agent: agentId, status: 'running', version: agent.config.version, at: Date.now() });
    });
    // PUBACK goes back once the push is handled (MQTT.js waits for this callback)
    this.client.handleMessage = (packet, done) => {
      const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
      if (packet.topic !== `${this.topic}/set` || payload.length === 0) return done(); // a retained push being cleared
      this.handle(payload, packet.retain || packet.dup).then(() => done(), done);
    };
  }

  /** `again`: a retained push, or one sent again after a lost acknowledgement: the one running now is no news. */
  private async handle(payload: Buffer, again: boolean): Promise<void> {
    let result: PushResult | undefined;
    try {
      result = await this.apply(payload, again);
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

  private async apply(payload: Buffer, again: boolean): Promise<PushResult | undefined> {
    const refuseNow = (reason: string, pushed?: string | number): PushResult => ({
      agent: this.agent.config.agent.id,
      status: 'rejected',
      version: this.agent.config.version,
      pushed_version: pushed,
      reason,
      at: Date.now(),
    });
    // the broker drops larger ones (maximumPacketSize); this is for one that does not
    if (payload.length > this.config.max_size) return refuseNow(`the push is ${payload.length} bytes, more than remote_config.max_size (${this.config.max_size})`);
    let push: Push;
    try {
      push = JSON.parse(payload.toString('utf8'));
    } catch {
      return refuseNow('not a signed push: expected JSON {"target": "...", "config": "...", "signature": "..."}');
    }
    if (typeof push?.config !== 'string') return refuseNow('not a signed push: no "config" text');
    if (typeof push.signature !== 'string' || push.signature === '') return refuseNow('unsigned push: no "signature"');
    if (push.target !== undefined && (typeof push.target !== 'string' || !AGENT_ID.test(push.target))) return refuseNow('"target" is not an agent id');
    if (push.new_id !== undefined && (typeof push.new_id !== 'string' || !AGENT_ID.test(push.new_id) || push.target === undefined)) return refuseNow('"new_id" is not an agent id, or comes without a "target"');
    if (!verifyPush(push, this.key)) return refuseNow('bad signature: it does not verify against the configured public key');
    if (push.target === undefined && !this.config.allow_untargeted) {
      return refuseNow('the push names no target gateway (signed by an older sign-config): sign it again with --target, or set remote_config.allow_untargeted');
    }
    // From here on, against the config running when no other apply runs (a push that came
    // meanwhile may have changed the version or the agent id).
    return this.agent.oneAtATime(() => this.applyInQueue(push, again));
  }

  private async applyInQueue(push: Push, again: boolean): Promise<PushResult | undefined> {
    const agentId = this.agent.config.agent.id;
    const running = this.agent.config.version;
    const refuse = (reason: string, pushed?: string | number): PushResult => ({ agent: agentId, status: 'rejected', version: running, pushed_version: pushed, reason, at: Date.now() });
    if (push.target !== undefined && push.target !== agentId) return refuse(`the push is for gateway ${push.target}, not for ${agentId}`);

    let loaded;
    try {
      loaded = this.agent.parse(push.config);
    } catch (err) {
      if (err instanceof ConfigError) return refuse(`invalid config: ${err.message}`);
      throw err;
    }
    const pushed = loaded.config.version;
    const pushedId = loaded.config.agent.id;
    if (pushed === undefined) return refuse('the pushed config has no "version"');
    if (push.new_id !== undefined && pushedId !== push.new_id) return refuse(`the push renames ${agentId} to ${push.new_id}, but its config says agent.id ${pushedId}`, pushed);
    if (push.new_id === undefined && pushedId !== agentId) {
      return refuse(`the pushed config would change agent.id from ${agentId} to ${pushedId}: sign it with --new-id ${pushedId} if that is meant`, pushed);
    }
    if (again && running !== undefined && compareVersions(pushed, running) === 0 && push.config === this.agent.text) return undefined;
    if (running !== undefined && compareVersions(pushed, running) <= 0) return refuse(`version ${pushed} is not newer than the running version ${running}`, pushed);

    try {
      const changed = await writeAndApply(this.agent, loaded, `a push (version ${pushed})`);
      return { agent: pushedId, status: 'applied', version: pushed, changed, at: Date.now() };
    } catch (err) {
      if (err instanceof NotWritten) return refuse(err.message, pushed);
      if (err instanceof ConfigError) return refuse(`invalid config: ${err.message}`, pushed);
      if (err instanceof RolledBack) return { agent: agentId, status: 'rolled-back', version: running, pushed_version: pushed, reason: err.message, at: Date.now() };
      throw err;
    }
  }

  private publish(result: PushResult): void {
    if (this.client.disconnecting) return; // replaced by a push that changed remote_config or agent.id
    this.client.publish(`${this.topic}/state`, JSON.stringify(result), { qos: 1, retain: true });
  }

  async close(): Promise<void> {
    await closeMqtt(this.client);
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
