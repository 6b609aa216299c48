import type { MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import type { MqttUpstreamConfig } from './config.js';
import { closeMqtt, connectMqtt } from '../../mqtt/client.js';
import type { OutboxRow } from '../../outbox/outbox.js';
import { fillTemplate, RefusedTopics, type SendResult, type Upstream } from '../upstream.js';

interface Refusal {
  reason: string;
}

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
  /** Sends waiting for acknowledgement; failed at once when the connection closes. */
  private readonly pending = new Set<(err: Error) => void>();

  constructor(
    private readonly config: MqttUpstreamConfig,
    private readonly agentId: string,
    private readonly log: Logger,
  ) {
    this.name = config.name;
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
      extra: { clean: true, queueQoSZero: false },
    });
    this.client.on('connect', () => {
      // Our messages go out at once instead of waiting for the broker's delayed ACK (Nagle).
      (this.client.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
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
    const { batch, topic } = this.config;
    const messages: Promise<Refusal | undefined>[] = [];
    const sent: OutboxRow[][] = [];
    if (batch <= 1) {
      for (const row of rows) {
        messages.push(this.publish(fillTemplate(topic, this.agentId, row.stream, row.device), row.payload));
        sent.push([row]);
      }
    } else {
      const byTopic = new Map<string, OutboxRow[]>();
      for (const row of rows) {
        const name = fillTemplate(topic, this.agentId, row.stream, row.device);
        let group = byTopic.get(name);
        if (!group) byTopic.set(name, (group = []));
        group.push(row);
      }
      for (const [name, group] of byTopic) {
        for (let i = 0; i < group.length; i += batch) {
          const chunk = group.slice(i, i + batch);
          messages.push(this.publish(name, `[${chunk.map((r) => r.payload).join(',')}]`));
          sent.push(chunk);
        }
      }
    }
    const refusals = await Promise.all(messages);
    const rejected: SendResult['rejected'] = [];
    refusals.forEach((refusal, i) => {
      if (refusal) rejected.push({ ids: sent[i].map((r) => r.id), reason: refusal.reason });
    });
    return { rejected };
  }

  /**
   * Topics the broker refused lately. Mosquitto closes the connection after refusing a publish
   * (eclipse-mosquitto/mosquitto#2579): without this, every record of a refused topic would
   * cost a reconnect, and the queue behind it would crawl.
   */
  private readonly refusedTopics = new RefusedTopics();

  /** Resolves when acknowledged, or with the refusal when the broker refused the message for good (MQTT 5). */
  private publish(topic: string, payload: string): Promise<Refusal | undefined> {
    const refused = this.refusedTopics.recall(topic);
    if (refused) return Promise.resolve({ reason: refused });
    return new Promise((resolve, reject) => {
      const fail = (err: Error) => {
        this.pending.delete(fail);
        reject(err);
      };
      this.pending.add(fail);
      this.client.publish(topic, payload, { qos: this.config.qos }, (err) => {
        if (!this.pending.delete(fail)) return;
        const code = (err as { code?: unknown } | undefined)?.code;
        if (err && typeof code === 'number' && code >= 0x80 && code !== QUOTA_EXCEEDED) {
          const reason = `${err.message} (reason code 0x${code.toString(16)}) on ${topic}`;
          this.refusedTopics.remember(topic, reason);
          resolve({ reason });
        } else if (err) reject(err);
        else {
          if (this.refusedTopics.forget(topic)) this.log.info({ upstream: this.name, topic }, `upstream ${this.name}: the broker takes messages on ${topic} again`);
          resolve(undefined);
        }
      });
    });
  }

  private failPending(err: Error): void {
    for (const fail of [...this.pending]) fail(err);
  }

  /** Disconnects cleanly when the broker answers within a second, else drops the connection (the outbox keeps what was not acknowledged). */
  async close(): Promise<void> {
    await closeMqtt(this.client);
    this.failPending(new Error('upstream closed'));
  }
}
