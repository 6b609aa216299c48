import type { MqttClient } from 'mqtt';
import { fillDefaults } from '../../core/config-kit.js';
import { closeMqtt, connectMqtt } from '../../mqtt/client.js';
import { mqttDeviceSchema, type MqttDeviceConfig, type MqttPoint } from './config.js';
import type { Reading, Value } from '../../core/reading.js';
import { Episodes } from '../../core/episodes.js';
import { writablePoint, WriteError, type Connector, type ConnectorContext, type ConnectorFactory } from '../connector.js';
import { DeviceStatus } from '../status.js';
import { atPath, fillLevels, matchTopic, pathParts } from './topics.js';
import { setOwn } from '../../operators/values.js';

export const createMqttDevice: ConnectorFactory = async (device, context) => new MqttDevice(fillDefaults(mqttDeviceSchema, structuredClone(device)), context);

/** Topics longer than this are remembered and logged by their start only (a topic may be 64 kB). */
const MAX_TOPIC_SHOWN = 200;

/**
 * Topics whose matching points are remembered (see `routes`), and the longest remembered: past
 * either a topic is matched afresh at each message, so a flood of topics costs no memory.
 */
const MAX_ROUTES = 10_000;
const MAX_ROUTE_TOPIC = 256;
/** Topics remembered whether or not they gave a reading, at most (see `routes`). */
const MAX_UNREAD_ROUTES = 1000;

/** A point compiled once: the filter's levels and the field paths. */
interface CompiledPoint {
  point: MqttPoint;
  filter: string[];
  json?: string[];
  ts?: string[];
}

/** A point whose filter matches a topic, with the levels its wildcards took there. */
interface Match {
  compiled: CompiledPoint;
  levels: string[];
  /** The device id for these levels, once made (a template's; the device's own otherwise). */
  device?: string;
}

/**
 * Sensors that publish to an MQTT broker (Zigbee2MQTT, Shelly, Tasmota, custom firmware).
 * Each point subscribes to a topic filter (`+`, `#`); its value comes from a JSON field path or
 * from the plain payload (a number, true/false/on/off, or text). An id with `{1}` `{2}` …
 * is a template: one device per value of the matched wildcard levels, so one entry covers a
 * fleet, up to `max_devices` of them: messages for a new id past that are dropped, counted in
 * `refusedDevices` and logged once. Retained messages give the initial values. A payload that
 * cannot be read (not JSON, a configured field missing) is counted and logged once per episode
 * of its topic; the episode ends when a message on that topic is read whole again. Writes
 * publish to the point's `command_topic`.
 */
class MqttDevice implements Connector {
  readonly id: string;
  /** Each lost connection reports at once (offlineAfter 1); the first connection is no news. */
  private readonly status: DeviceStatus;
  malformed = 0;
  /** Messages dropped because they would have made a template device past `max_devices`. */
  refusedDevices = 0;
  get readErrors(): number {
    return this.malformed;
  }
  private readonly client: MqttClient;
  private readonly points: MqttPoint[];
  /** Per point, parsed once: the filter's levels and the field paths. */
  private readonly compiled: CompiledPoint[];
  /**
   * Topic → the points it matches, worked out at its first message: a device of many points
   * otherwise split the topic and matched it against every filter for each message. The first
   * MAX_UNREAD_ROUTES topics are remembered whatever their payloads (a topic whose payload lacks
   * the configured field is not matched again at each message: 30 µs for a device of 200 points),
   * then only topics that gave a reading, up to MAX_ROUTES: a flood of distinct topics
   * (unreadable payloads, devices past max_devices) is matched afresh, not remembered. With
   * every topic remembered up to MAX_ROUTES, the flood test's two template devices held 20,000
   * routes and its peak RSS was 13 MB higher (median of six runs; test/flood.test.ts).
   */
  private readonly routes = new Map<string, Match[]>();
  private readonly template: boolean;
  /** Device ids of a template by the wildcard levels that made them; at most `maxDevices`. */
  private readonly deviceIds = new Map<string, string>();
  private readonly maxDevices: number;
  /** Only the broker connection's failure (`connection`); payload problems are in `malformedCauses`. */
  private readonly badTopics = new Set<string>();
  /** Topics whose payloads cannot be read now (bounded): one log line per episode each. */
  private readonly malformedCauses = new Episodes<string>(1000);
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
    this.maxDevices = config.max_devices;
    // reconnects with backoff and jitter, and logs each outage once (src/mqtt/client.ts)
    this.status = new DeviceStatus(this.id, context, 1);
    this.client = connectMqtt({
      who: `device ${this.id}: MQTT broker`,
      log: context.log,
      logFields: { device: this.id },
      url: config.broker,
      clientId: config.client_id ?? `edge-agent-${context.agentId}-${config.id.replace(/[{}]/g, '')}`,
      username: config.username,
      password: config.password,
      tls: config.tls,
    });
    this.client.on('connect', () => this.status.succeeded(`device ${this.id}: MQTT broker ${config.broker} reached`));
    this.client.on('offline', () => this.status.failed('unreachable', `device ${this.id}: MQTT broker ${config.broker} unreachable`));
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

  /** The points `topic` matches, in the config's order. */
  private match(topic: string): Match[] {
    const matches: Match[] = [];
    for (const compiled of this.compiled) {
      const levels = matchTopic(compiled.filter, topic);
      if (levels) matches.push({ compiled, levels });
    }
    return matches;
  }

  /** Remembers a topic's route while the routes are fewer than `limit` (see `routes`). */
  private remember(topic: string, matches: Match[], limit: number): void {
    if (this.routes.size < limit && topic.length <= MAX_ROUTE_TOPIC) this.routes.set(topic, matches);
  }

  private receive(topic: string, payload: Buffer): void {
    // One reading per message and device: every point whose filter matches the topic.
    const known = this.routes.get(topic);
    const matches = known ?? this.match(topic);
    if (!known) this.remember(topic, matches, MAX_UNREAD_ROUTES);
    if (matches.length === 0) return;
    let parsed: unknown;
    let parseFailed = false;
    let reading: Reading | undefined;
    let rejected = false;
    for (const match of matches) {
      const { point, json, ts: tsPath } = match.compiled;
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
        rejected = true;
        continue;
      }
      if (!reading) {
        let device = match.device;
        if (device === undefined) {
          device = this.template ? this.deviceId(match.levels) : this.id;
          // a new template device past max_devices: the message is dropped (counted in deviceId)
          if (device === undefined) return;
          match.device = device;
        }
        // a plain object (own properties through setOwn: `__proto__` is a point name too) rather
        // than Object.create(null), which V8 keeps as a slow dictionary: every step's reads and
        // the record's JSON.stringify then go through its hidden class instead
        reading = { device, ts: ts ?? Date.now(), values: {} };
      }
      if (typeof value === 'number' && !Number.isFinite(value)) {
        // 1e400 parses to Infinity: no value, and JSON upstream could not carry it anyway
        setOwn(reading.values, point.name, null);
        setOwn((reading.quality ??= {}), point.name, 'bad');
      } else setOwn(reading.values, point.name, value as Value | null);
    }
    // a message read whole (every field there) ends the topic's episode; one missing a field does not
    if (!rejected && this.malformedCauses.size > 0) this.recovered(topic);
    if (!reading) return;
    if (!known) this.remember(topic, matches, MAX_ROUTES);
    this.deliver(reading);
  }

  /**
   * The device id of a template for the matched levels, or undefined when it would be a new
   * device past `max_devices` (then the message is dropped, counted and logged once).
   */
  private deviceId(levels: string[]): string | undefined {
    const key = levels.length === 1 ? levels[0] : levels.join('/');
    const id = this.deviceIds.get(key);
    if (id !== undefined) return id;
    if (this.deviceIds.size >= this.maxDevices) {
      if (this.refusedDevices++ === 0) {
        this.context.log.warn(
          { device: this.id, max_devices: this.maxDevices, refused: shortTopic(fillLevels(this.id, levels)) },
          `device ${this.id}: already ${this.maxDevices} devices from this template (max_devices); messages for new ones such as ${shortTopic(fillLevels(this.id, levels))} are dropped and counted, not logged again`,
        );
      }
      return undefined;
    }
    const made = fillLevels(this.id, levels);
    this.deviceIds.set(key, made);
    return made;
  }

  /** Counts a payload that cannot be read; logs it once per episode of its topic. */
  private reject(topic: string, why: string): void {
    this.malformed++;
    const shown = shortTopic(topic);
    if (!this.malformedCauses.begin(shown)) return;
    if (this.malformedCauses.untracked === 1 && !this.malformedCauses.has(shown)) {
      this.context.log.warn(
        { device: this.id, tracked: this.malformedCauses.max },
        `device ${this.id}: malformed payloads on more than ${this.malformedCauses.max} topics at once; the others are counted (read errors), not logged`,
      );
      return;
    }
    this.context.log.warn({ device: this.id, topic: shown }, `device ${this.id}: malformed payload on ${shown}: ${why}`);
  }

  /** A topic read whole again: ends its episode, logged once. */
  private recovered(topic: string): void {
    const shown = shortTopic(topic);
    const count = this.malformedCauses.end(shown);
    if (count > 0) this.context.log.info({ device: this.id, topic: shown, malformed: count }, `device ${this.id}: ${shown} readable again after ${count} malformed payloads`);
  }

  get online(): boolean {
    return this.status.online;
  }

  async write(name: string, value: Value): Promise<void> {
    const needs = ' (it needs writable: true and a command_topic)';
    const point = writablePoint(this.id, this.points, name, needs);
    if (!point.command_topic) throw new WriteError(this.id, name, `the point is not writable${needs}`);
    if (!this.client.connected) throw new WriteError(this.id, name, `not connected to ${this.config.broker}`);
    const payload = typeof value === 'string' ? value : JSON.stringify(value);
    try {
      await this.client.publishAsync(point.command_topic, payload, { qos: 1 });
    } catch (err) {
      throw new WriteError(this.id, name, `publishing to ${point.command_topic} failed: ${(err as Error).message}`);
    }
  }

  async stop(): Promise<void> {
    await closeMqtt(this.client);
  }
}

function shortTopic(topic: string): string {
  return topic.length <= MAX_TOPIC_SHOWN ? topic : `${topic.slice(0, MAX_TOPIC_SHOWN)}…(${topic.length} chars)`;
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
