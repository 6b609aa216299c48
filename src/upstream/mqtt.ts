import mqtt, { type MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import type { MqttUpstreamConfig } from '../config/types.js';
import type { OutboxRow } from '../outbox/outbox.js';
import { tlsOptions } from './tls.js';
import { fillTemplate, type Upstream } from './upstream.js';

const MIN_RECONNECT = 1000;
const MAX_RECONNECT = 30_000;

/**
 * Publishes records to an MQTT broker: one message per record, or JSON arrays of up to
 * `batch` records per topic. At QoS 1 a send resolves on the broker's PUBACKs; the outbox
 * deletes the records only then.
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
  private reconnectDelay = MIN_RECONNECT;
  private down = false;

  constructor(
    private readonly config: MqttUpstreamConfig,
    private readonly agentId: string,
    private readonly log: Logger,
  ) {
    this.name = config.name;
    this.client = mqtt.connect(config.url, {
      clientId: config.client_id ?? `edge-agent-${agentId}-${config.name}`,
      username: config.username,
      password: config.password,
      keepalive: Math.round(config.keepalive / 1000),
      reconnectPeriod: MIN_RECONNECT,
      connectTimeout: 10_000,
      clean: true,
      queueQoSZero: false,
      ...tlsOptions(config.tls),
    });
    this.client.on('connect', () => {
      // Our messages go out at once instead of waiting for the broker's delayed ACK (Nagle).
      (this.client.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
      this.reconnectDelay = MIN_RECONNECT;
      this.client.options.reconnectPeriod = MIN_RECONNECT;
      if (this.down) log.info({ upstream: this.name }, `upstream ${this.name}: connected to ${config.url}`);
      this.down = false;
      for (const listener of this.listeners) listener();
    });
    this.client.on('close', () => {
      this.failPending(new Error(`connection to ${config.url} closed`));
      // Exponential backoff with jitter between reconnect attempts.
      this.reconnectDelay = Math.min(MAX_RECONNECT, this.reconnectDelay * 2);
      this.client.options.reconnectPeriod = Math.round(this.reconnectDelay / 2 + (Math.random() * this.reconnectDelay) / 2);
    });
    this.client.on('error', (err) => {
      if (!this.down) log.warn({ upstream: this.name, err: err.message }, `upstream ${this.name}: cannot reach ${config.url}: ${err.message}; retrying`);
      this.down = true;
    });
    this.client.on('offline', () => {
      if (!this.down) log.warn({ upstream: this.name }, `upstream ${this.name}: ${config.url} unreachable; records are kept in the outbox`);
      this.down = true;
    });
  }

  get connected(): boolean {
    return this.client.connected;
  }

  onConnect(listener: () => void): void {
    this.listeners.push(listener);
  }

  send(rows: OutboxRow[]): Promise<void> {
    if (!this.client.connected) return Promise.reject(new Error(`not connected to ${this.config.url}`));
    const { batch, topic } = this.config;
    const messages: Promise<void>[] = [];
    if (batch <= 1) {
      for (const row of rows) messages.push(this.publish(fillTemplate(topic, this.agentId, row.stream, row.device), row.payload));
    } else {
      const byTopic = new Map<string, string[]>();
      for (const row of rows) {
        const name = fillTemplate(topic, this.agentId, row.stream, row.device);
        let payloads = byTopic.get(name);
        if (!payloads) byTopic.set(name, (payloads = []));
        payloads.push(row.payload);
      }
      for (const [name, payloads] of byTopic) {
        for (let i = 0; i < payloads.length; i += batch) messages.push(this.publish(name, `[${payloads.slice(i, i + batch).join(',')}]`));
      }
    }
    return Promise.all(messages).then(() => undefined);
  }

  private publish(topic: string, payload: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const fail = (err: Error) => {
        this.pending.delete(fail);
        reject(err);
      };
      this.pending.add(fail);
      this.client.publish(topic, payload, { qos: this.config.qos }, (err) => {
        if (!this.pending.delete(fail)) return;
        if (err) reject(err);
        else resolve();
      });
    });
  }

  private failPending(err: Error): void {
    for (const fail of [...this.pending]) fail(err);
  }

  async close(): Promise<void> {
    await this.client.endAsync(false).catch(() => undefined);
    this.failPending(new Error('upstream closed'));
  }
}
