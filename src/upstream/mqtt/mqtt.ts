import type { MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { availabilityTemplate, deviceStateTemplate, type MqttUpstreamConfig } from './config.js';
import { closeMqtt, connectMqtt } from '../../mqtt/client.js';
import type { OutboxRow } from '../../outbox/outbox.js';
import { fillTemplate, RefusedTopics, type SendResult, type Upstream, type UpstreamContext } from '../upstream.js';

interface Refusal {
  reason: string;
}

/** A message of a send: `answered(index, …)` once the broker answered it, `reject` when it failed. */
interface Outgoing {
  topic: string;
  payload: string;
  index: number;
  answered: (index: number, refusal: Refusal | undefined) => void;
  reject: (err: Error) => void;
}

/** Suspect topics remembered at most (see `suspects`). */
const MAX_SUSPECTS = 10_000;

/** Devices whose state is published at most (ids from a template device are bounded by its max_devices too). */
const MAX_STATE_DEVICES = 10_000;

/** Topics remembered by stream and device (see `topicOf`). */
const MAX_TOPICS = 10_000;

/** 0x97: the broker asks us to slow down, not to give up. */
const QUOTA_EXCEEDED = 0x97;

/**
 * Publishes records to an MQTT broker: one message per record, or JSON arrays of up to
 * `batch` records per topic. At QoS 1 a send resolves on the broker's PUBACKs; the outbox
 * deletes the records only then. With `protocol_version: 5`, a PUBACK reason code >= 0x80
 * (not authorized, topic name invalid, payload format invalid, …; but not 0x97, quota
 * exceeded) refuses the message for good: its records go to the dead-letter table.
 */
export class MqttUpstream implements Upstream {
  readonly name: string;
  /**
   * One connection acknowledges in order, and when it drops every send in flight fails, so
   * several sends may be in flight. Pipelining also keeps a broker without TCP_NODELAY from
   * holding its PUBACKs for our delayed ACK (about 40 ms per send).
   */
  readonly window = 4;
  private readonly client: MqttClient;
  private readonly listeners: (() => void)[] = [];
  /** The topic has `{point}`: one message per value. */
  private readonly perPoint: boolean;
  /** device_state: the topic template, and what was last published of each device. */
  private readonly stateTopic: string | undefined;
  private readonly states = new Map<string, { online: boolean | undefined; ts: number; published: number }>();
  private stateTimer: NodeJS.Timeout | undefined;
  /** Where `online` / `offline` go (retained), when the config asks for it. */
  private readonly availability: string | undefined;

  constructor(
    private readonly config: MqttUpstreamConfig,
    private readonly agentId: string,
    private readonly log: Logger,
    private readonly context?: UpstreamContext,
  ) {
    this.name = config.name;
    this.stateTopic = context?.deviceState ? deviceStateTemplate(config) : undefined;
    if (this.stateTopic !== undefined) this.stateTimer = setInterval(() => this.publishStates(), 1000).unref();
    this.perPoint = config.topic.includes('{point}');
    // the same options for every message (MQTT.js copies them)
    this.publishOptions = { qos: config.qos, retain: config.retain ?? false };
    const availability = availabilityTemplate(config);
    this.availability = availability === undefined ? undefined : fillTemplate(availability, agentId, '', '');
    // reconnects with backoff and jitter, and logs each outage once (src/mqtt/client.ts)
    this.client = connectMqtt({
      who: `upstream ${this.name}`,
      log,
      logFields: { upstream: this.name },
      url: config.url,
      clientId: config.client_id ?? `edge-agent-${agentId}-${config.name}`,
      username: config.username,
      password: config.password,
      tls: config.tls,
      keepalive: config.keepalive,
      protocolVersion: config.protocol_version,
      whileDown: 'records are kept in the outbox',
      extra: {
        clean: true,
        queueQoSZero: false,
        // the broker says `offline` for us when the connection is lost without a goodbye
        will: this.availability === undefined ? undefined : { topic: this.availability, payload: Buffer.from('offline'), qos: 1, retain: true },
      },
    });
    this.client.on('connect', () => {
      // Our messages go out at once instead of waiting for the broker's delayed ACK (Nagle).
      (this.client.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
      if (this.availability !== undefined) this.client.publish(this.availability, 'online', { qos: 1, retain: true });
      for (const listener of this.listeners) listener();
    });
    this.client.on('close', () => this.failPending(new Error(`connection to ${config.url} closed`)));
  }

  get connected(): boolean {
    return this.client.connected;
  }

  onConnect(listener: () => void): void {
    this.listeners.push(listener);
  }

  async send(rows: OutboxRow[]): Promise<SendResult> {
    if (!this.client.connected) throw new Error(`not connected to ${this.config.url}`);
    const { batch } = this.config;
    const topics: string[] = [];
    const payloads: string[] = [];
    /** The records of each message; with one message per record (batch 1, no {point}) they are `rows`. */
    let sent: OutboxRow[][] | undefined;
    if (this.stateTopic !== undefined) for (const row of rows) this.watchState(row.device);
    if (this.perPoint) {
      sent = [];
      // one message per value, the value alone as its payload (the Home Assistant / zigbee2mqtt layout)
      for (const row of rows) {
        const base = this.topicOf(row.stream, row.device);
        for (const [point, payload] of pointMessages(row.payload)) {
          topics.push(base.replaceAll('{point}', point));
          payloads.push(payload);
          sent.push([row]);
        }
      }
    } else if (batch <= 1) {
      for (const row of rows) {
        topics.push(this.topicOf(row.stream, row.device));
        payloads.push(row.payload);
      }
    } else {
      sent = [];
      const byTopic = new Map<string, OutboxRow[]>();
      for (const row of rows) {
        const name = this.topicOf(row.stream, row.device);
        let group = byTopic.get(name);
        if (!group) byTopic.set(name, (group = []));
        group.push(row);
      }
      for (const [name, group] of byTopic) {
        for (let i = 0; i < group.length; i += batch) {
          const chunk = group.slice(i, i + batch);
          topics.push(name);
          payloads.push(`[${chunk.map((r) => r.payload).join(',')}]`);
          sent.push(chunk);
        }
      }
    }
    // One promise for the send, not one per message: it resolves once every message is
    // answered and rejects at the first that fails (what Promise.all over them did)
    const refusals: (Refusal | undefined)[] = new Array(topics.length);
    await new Promise<void>((resolve, reject) => {
      let pending = topics.length;
      if (pending === 0) return resolve();
      const answered = (index: number, refusal: Refusal | undefined) => {
        refusals[index] = refusal;
        if (--pending === 0) resolve();
      };
      for (let i = 0; i < topics.length; i++) this.publish({ topic: topics[i], payload: payloads[i], index: i, answered, reject });
    });
    const rejected: SendResult['rejected'] = [];
    const refused = new Set<number>();
    for (let i = 0; i < refusals.length; i++) {
      const refusal = refusals[i];
      // acknowledged (nearly always): nothing to do, nothing allocated
      if (!refusal) continue;
      // a record of several messages (one per point) is refused once
      const ids = (sent ? sent[i] : [rows[i]]).map((r) => r.id).filter((id) => !refused.has(id));
      for (const id of ids) refused.add(id);
      if (ids.length > 0) rejected.push({ ids, reason: refusal.reason });
    }
    return { rejected };
  }

  /** Topics by stream and device, filled in once (bounded: past MAX_TOPICS, filled in each time). */
  private readonly topics = new Map<string, Map<string, string>>();
  private topicCount = 0;

  private topicOf(stream: string, device: string): string {
    let byDevice = this.topics.get(stream);
    const known = byDevice?.get(device);
    if (known !== undefined) return known;
    const filled = fillTemplate(this.config.topic, this.agentId, stream, device);
    if (this.topicCount < MAX_TOPICS) {
      if (!byDevice) this.topics.set(stream, (byDevice = new Map()));
      byDevice.set(device, filled);
      this.topicCount++;
    }
    return filled;
  }

  /**
   * Topics the broker refused lately. Mosquitto closes the connection after refusing a publish
   * (eclipse-mosquitto/mosquitto#2579): without this, every record of a refused topic would
   * cost a reconnect, and the queue behind it would crawl.
   */
  private readonly refusedTopics = new RefusedTopics();
  /**
   * Topics with a message in flight when the connection closed. When the broker closes the
   * connection on a refusal while later messages are still unread, the socket is reset and the
   * refusal is lost with it: sent again in a pipeline, the same message would close the
   * connection again, for ever. A message to a suspect topic (or a probe of a refused one) goes
   * out alone, after every message before it is answered, so its answer cannot be lost.
   */
  private readonly suspects = new Set<string>();
  /** Published and not yet answered; failed at once when the connection closes. */
  private readonly inFlight = new Set<Outgoing>();
  /** Messages held back, in order, while a suspect's message waits to go or is out alone. */
  private readonly held: Outgoing[] = [];
  private alone = false;
  private readonly publishOptions: { qos: 0 | 1; retain: boolean };

  /** `answered` when acknowledged, or with the refusal when the broker refused the message for good (MQTT 5); `reject` when it failed. */
  private publish(message: Outgoing): void {
    const refused = this.refusedTopics.recall(message.topic);
    if (refused) return message.answered(message.index, { reason: refused });
    if (this.held.length === 0 && this.mayGo(message.topic)) this.transmit(message);
    else this.held.push(message);
  }

  private isSuspect(topic: string): boolean {
    return (this.suspects.size > 0 && this.suspects.has(topic)) || this.refusedTopics.has(topic);
  }

  private mayGo(topic: string): boolean {
    return !this.alone && (this.inFlight.size === 0 || !this.isSuspect(topic));
  }

  private transmit(message: Outgoing): void {
    const { topic } = message;
    const suspect = this.isSuspect(topic);
    if (suspect) this.alone = true;
    this.inFlight.add(message);
    this.client.publish(topic, message.payload, this.publishOptions, (err) => {
      if (!this.inFlight.delete(message)) return;
      if (suspect) this.alone = false;
      const code = (err as { code?: unknown } | undefined)?.code;
      if (err && typeof code === 'number' && code >= 0x80 && code !== QUOTA_EXCEEDED) {
        const reason = `${err.message} (reason code 0x${code.toString(16)}) on ${topic}`;
        this.refusedTopics.remember(topic, reason);
        this.suspects.delete(topic);
        message.answered(message.index, { reason });
      } else if (err) message.reject(err);
      else {
        this.suspects.delete(topic);
        if (this.refusedTopics.forget(topic)) this.log.info({ upstream: this.name, topic }, `upstream ${this.name}: the broker takes messages on ${topic} again`);
        message.answered(message.index, undefined);
      }
      while (this.held.length > 0 && this.mayGo(this.held[0].topic)) this.transmit(this.held.shift()!);
    });
  }

  /** The connection closed: every message not answered fails (the outbox sends it again), and its topic becomes suspect. */
  private failPending(err: Error): void {
    for (const message of [...this.inFlight]) {
      if (this.suspects.size < MAX_SUSPECTS) this.suspects.add(message.topic);
      this.inFlight.delete(message);
      message.reject(err);
    }
    for (const message of this.held.splice(0)) message.reject(err);
    this.alone = false;
    // MQTT.js would publish them again on reconnect, behind the outbox's back: the outbox alone retries
    for (const id of Object.keys(this.client.outgoing)) this.client.removeOutgoingMessage(Number(id));
  }

  /** A device whose records come here: its state is published from now on. */
  private watchState(device: string): void {
    if (this.states.size < MAX_STATE_DEVICES && !this.states.has(device)) this.states.set(device, { online: undefined, ts: -Infinity, published: -Infinity });
  }

  /**
   * Each second: the state of each watched device whose online status changed, or whose points
   * have newer samples and whose last state is older than device_state_interval, retained at
   * QoS 1. Not through the outbox: a state is superseded by the next one, and one lost with a
   * connection is sent again (it counts as published only once the broker acknowledged it).
   */
  private publishStates(): void {
    if (!this.client.connected) return;
    const now = Date.now();
    const interval = this.config.device_state_interval ?? 10_000;
    for (const [device, last] of this.states) {
      const state = this.context!.deviceState!(device);
      if (!state) continue;
      let ts = -Infinity;
      for (const name in state.points) ts = Math.max(ts, state.points[name].ts);
      const due = state.online !== last.online || (ts > last.ts && now - last.published >= interval);
      if (!due) continue;
      const topic = fillTemplate(this.stateTopic!, this.agentId, '', device);
      this.client.publish(topic, JSON.stringify({ ...state, at: now }), { qos: 1, retain: true }, (err) => {
        if (err) return;
        last.online = state.online;
        last.ts = ts;
        last.published = now;
      });
    }
  }

  /** Disconnects cleanly when the broker answers within a second, else drops the connection (the outbox keeps what was not acknowledged). */
  async close(): Promise<void> {
    clearInterval(this.stateTimer);
    // a clean DISCONNECT drops the will: say `offline` first (a second at most)
    if (this.availability !== undefined && this.client.connected) {
      const said = new Promise<void>((resolve) => this.client.publish(this.availability!, 'offline', { qos: 1, retain: true }, () => resolve()));
      await Promise.race([said, new Promise((resolve) => setTimeout(resolve, 1000).unref())]);
    }
    await closeMqtt(this.client);
    this.failPending(new Error('upstream closed'));
  }
}

/**
 * The messages of a record for a topic with `{point}`: each value as JSON text (`12.5`, `true`,
 * `"on"`, `null`), and an event as its whole record under its code.
 */
function pointMessages(payload: string): [string, string][] {
  const record = JSON.parse(payload) as { values?: Record<string, unknown>; event?: { code: string } };
  const messages: [string, string][] = [];
  for (const point in record.values) messages.push([point, JSON.stringify(record.values[point])]);
  if (record.event) messages.push([record.event.code, payload]);
  return messages;
}
