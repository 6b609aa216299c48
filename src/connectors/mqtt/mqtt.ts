import mqtt, { type MqttClient } from 'mqtt';
import { fillDefaults, type Value } from '../../config/kit.js';
import { mqttDeviceSchema, type MqttDeviceConfig, type MqttPoint } from './config.js';
import type { Reading } from '../../streams/reading.js';
import { tlsOptions } from '../../upstream/tls.js';
import { deviceStatusEvent, WriteError, type Connector, type ConnectorContext, type ConnectorFactory } from '../connector.js';
import { atPath, fillLevels, matchTopic, pathParts } from './topics.js';

export const createMqttDevice: ConnectorFactory = async (device, context) => new MqttDevice(fillDefaults(mqttDeviceSchema, structuredClone(device)), context);

/**
 * Sensors that publish to an MQTT broker (Zigbee2MQTT, Shelly, Tasmota, custom firmware).
 * Each point subscribes to a topic filter (`+`, `#`); its value comes from a JSON field path or
 * from the plain payload (a number, true/false/on/off, or text). An id with `{1}` `{2}` …
 * is a template: one device per value of the matched wildcard levels, so one entry covers a
 * fleet. Retained messages give the initial values. A payload that cannot be read is counted
 * and logged once per episode with its topic. Writes publish to the point's `command_topic`.
 */
class MqttDevice implements Connector {
  readonly id: string;
  online = false;
  malformed = 0;
  get readErrors(): number {
    return this.malformed;
  }
  private readonly client: MqttClient;
  private readonly points: MqttPoint[];
  /** Per point, parsed once: the filter's levels and the field paths. */
  private readonly compiled: { point: MqttPoint; filter: string[]; json?: string[]; ts?: string[] }[];
  private readonly template: boolean;
  /** Device ids of a template by the wildcard levels that made them. */
  private readonly deviceIds = new Map<string, string>();
  private readonly badTopics = new Set<string>();
  private deliver: (reading: Reading) => void = () => {};

  constructor(
    private readonly config: MqttDeviceConfig,
    private readonly context: ConnectorContext,
  ) {
    this.id = config.id;
    this.points = config.points;
    this.compiled = this.points.map((point) => ({
      point,
      filter: point.topic.split('/'),
      json: point.json === undefined ? undefined : pathParts(point.json),
      ts: point.ts === undefined ? undefined : pathParts(point.ts),
    }));
    this.template = /\{\d+\}/.test(config.id);
    this.client = mqtt.connect(config.broker, {
      clientId: config.client_id ?? `edge-agent-${context.agentId}-${config.id.replace(/[{}]/g, '')}`,
      username: config.username,
      password: config.password,
      reconnectPeriod: 2000,
      ...tlsOptions(config.tls),
    });
    this.client.on('connect', () => this.setOnline(true));
    this.client.on('offline', () => this.setOnline(false));
    this.client.on('error', (err) => {
      if (this.online || !this.badTopics.has('connection')) context.log.warn({ device: this.id, err: err.message }, `device ${this.id}: MQTT broker ${config.broker}: ${err.message}`);
      this.badTopics.add('connection');
    });
    this.client.on('message', (topic, payload) => this.receive(topic, payload));
  }

  start(deliver: (reading: Reading) => void): void {
    this.deliver = deliver;
    const filters = new Map<string, 0 | 1 | 2>();
    for (const point of this.points) filters.set(point.topic, Math.max(filters.get(point.topic) ?? 0, point.qos) as 0 | 1 | 2);
    this.client.on('connect', () => {
      for (const [filter, qos] of filters) this.client.subscribe(filter, { qos });
    });
    if (this.client.connected) for (const [filter, qos] of filters) this.client.subscribe(filter, { qos });
  }

  private receive(topic: string, payload: Buffer): void {
    // One reading per message and device: every point whose filter matches the topic.
    let parsed: unknown;
    let parseFailed = false;
    let reading: Reading | undefined;
    for (const { point, filter, json, ts: tsPath } of this.compiled) {
      const levels = matchTopic(filter, topic);
      if (!levels) continue;
      let value: unknown;
      let ts: number | undefined;
      if (point.json !== undefined || point.ts !== undefined) {
        if (parsed === undefined && !parseFailed) {
          try {
            parsed = JSON.parse(payload.toString());
          } catch {
            parseFailed = true;
          }
        }
        if (parseFailed) {
          this.reject(topic, 'the payload is not JSON');
          return;
        }
        value = json === undefined ? plainValue(payload.toString()) : atPath(parsed, json);
        if (tsPath !== undefined) ts = timestampOf(atPath(parsed, tsPath));
      } else {
        value = plainValue(payload.toString());
      }
      if (value === undefined || (typeof value === 'object' && value !== null)) {
        this.reject(topic, point.json === undefined ? 'the payload is not a value' : `no value at "${point.json}"`);
        continue;
      }
      const device = this.template ? this.deviceId(levels) : this.id;
      reading ??= { device, ts: ts ?? Date.now(), values: Object.create(null) }; // `__proto__` is a point name too
      if (typeof value === 'number' && !Number.isFinite(value)) {
        // 1e400 parses to Infinity: no value, and JSON upstream could not carry it anyway
        reading.values[point.name] = null;
        (reading.quality ??= {})[point.name] = 'bad';
      } else reading.values[point.name] = value as Value | null;
    }
    if (reading) {
      this.badTopics.delete(topic);
      this.deliver(reading);
    }
  }

  private deviceId(levels: string[]): string {
    const key = levels.join('/');
    let id = this.deviceIds.get(key);
    if (id === undefined) {
      id = fillLevels(this.id, levels);
      // a topic level of unbounded values must not grow this without end
      if (this.deviceIds.size < 100_000) this.deviceIds.set(key, id);
    }
    return id;
  }

  /** Counts a payload that cannot be read; logs it once until that topic brings a good one. */
  private reject(topic: string, why: string): void {
    this.malformed++;
    if (this.badTopics.has(topic)) return;
    this.badTopics.add(topic);
    this.context.log.warn({ device: this.id, topic }, `device ${this.id}: malformed payload on ${topic}: ${why}`);
  }

  private setOnline(online: boolean): void {
    if (online === this.online) return;
    this.online = online;
    if (online) this.badTopics.delete('connection');
    this.context.report?.(deviceStatusEvent(this.id, online, `MQTT broker ${this.config.broker} ${online ? 'reached' : 'unreachable'}`));
  }

  async write(name: string, value: Value): Promise<void> {
    const point = this.points.find((p) => p.name === name);
    if (!point) throw new WriteError(this.id, name, 'no such point');
    if (!point.writable || !point.command_topic) throw new WriteError(this.id, name, 'the point is not writable (it needs writable: true and a command_topic)');
    if (!this.client.connected) throw new WriteError(this.id, name, `not connected to ${this.config.broker}`);
    const payload = typeof value === 'string' ? value : JSON.stringify(value);
    try {
      await this.client.publishAsync(point.command_topic, payload, { qos: 1 });
    } catch (err) {
      throw new WriteError(this.id, name, `publishing to ${point.command_topic} failed: ${(err as Error).message}`);
    }
  }

  async stop(): Promise<void> {
    await Promise.race([this.client.endAsync(false), new Promise((r) => setTimeout(r, 1000).unref())]);
    await this.client.endAsync(true).catch(() => undefined);
  }
}

/** A plain payload: a number, true/false/on/off, or the text itself. */
function plainValue(text: string): Value | undefined {
  const trimmed = text.trim();
  if (trimmed === '') return undefined;
  const lower = trimmed.toLowerCase();
  if (lower === 'true' || lower === 'on') return true;
  if (lower === 'false' || lower === 'off') return false;
  const number = Number(trimmed);
  return Number.isFinite(number) ? number : trimmed;
}

/** epoch seconds or ms (a number under 10^11 is seconds), or an ISO 8601 string. */
function timestampOf(value: unknown): number | undefined {
  if (typeof value === 'number' && Number.isFinite(value)) return value < 1e11 ? Math.round(value * 1000) : value;
  if (typeof value === 'string') {
    const parsed = Date.parse(value);
    return Number.isFinite(parsed) ? parsed : undefined;
  }
  return undefined;
}
