import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import type { DeviceBase } from '../../connectors/connector.js';
import type { EventInfo, Quality, Value } from '../../core/reading.js';
import { closeMqtt, connectMqtt } from '../../mqtt/client.js';
import type { OutboxRow } from '../../outbox/outbox.js';
import type { SendResult, Upstream, UpstreamContext } from '../upstream.js';
import type { SparkplugUpstreamConfig } from './config.js';
import { DataType, decodePayload, encodePayload, type DataTypeCode, type Metric, type MetricValue } from './payload.js';

const NAMESPACE = 'spBv1.0';
const REBIRTH = 'Node Control/Rebirth';

/** What one record of the outbox holds (src/outbox/record.ts). */
interface UpstreamRecord {
  stream: string;
  device: string;
  ts: number;
  seq: number;
  values?: Record<string, Value | null>;
  quality?: Record<string, Quality>;
  event?: EventInfo;
}

/** A metric of a device as its last DBIRTH described it, with its latest value (the next DBIRTH's). */
interface KnownMetric {
  name: string;
  alias: number;
  datatype: DataTypeCode;
  value: MetricValue;
  timestamp: number;
  quality?: Quality;
  /** The device's writable point a DCMD of this metric writes. */
  point?: string;
}

interface DeviceSession {
  metrics: Map<string, KnownMetric>;
  /** A DBIRTH went out in this session and no DDEATH since. */
  born: boolean;
  /** Offline (its connector said so, and a DDEATH went out): no DBIRTH on a rebirth until it is back. */
  dead: boolean;
}

/**
 * The properties of a value that is not `good`: `Quality`, the Int32 that Sparkplug 3.0 defines
 * (0 bad, 192 good, 500 stale: the only codes it allows), and `edge_quality`, the agent's own word
 * for values it made up or doubts (`interpolated`, `estimated`, `partial`, `late`: usable, so 192).
 */
function qualityProperties(quality: Quality | undefined): Record<string, number | string> | undefined {
  if (quality === undefined || quality === 'good') return undefined;
  return { Quality: quality === 'bad' ? 0 : quality === 'stale' ? 500 : 192, edge_quality: quality };
}

/** Datatypes of Modbus point types, for values that are whole numbers (a scaled point is a Double). */
const POINT_TYPES: Record<string, DataTypeCode> = {
  int16: DataType.Int16,
  uint16: DataType.UInt16,
  int32: DataType.Int32,
  uint32: DataType.UInt32,
  int64: DataType.Int64,
  uint64: DataType.UInt64,
  float32: DataType.Float,
  float64: DataType.Double,
};

const INTEGER_RANGES: Partial<Record<DataTypeCode, [number, number]>> = {
  [DataType.Int8]: [-128, 127],
  [DataType.Int16]: [-32768, 32767],
  [DataType.Int32]: [-(2 ** 31), 2 ** 31 - 1],
  [DataType.UInt8]: [0, 255],
  [DataType.UInt16]: [0, 65535],
  [DataType.UInt32]: [0, 2 ** 32 - 1],
  [DataType.Int64]: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  [DataType.UInt64]: [0, Number.MAX_SAFE_INTEGER],
};

/** True when `value` can be sent as `datatype` without changing it. */
function fits(datatype: DataTypeCode, value: MetricValue): boolean {
  if (value === null) return true;
  if (datatype === DataType.Boolean) return typeof value === 'boolean';
  if (datatype === DataType.String || datatype === DataType.Text) return typeof value === 'string';
  if (typeof value !== 'number') return false;
  const range = INTEGER_RANGES[datatype];
  if (range) return Number.isInteger(value) && value >= range[0] && value <= range[1];
  if (datatype === DataType.Float) return Math.fround(value) === value || !Number.isFinite(value);
  return true;
}

/** The datatype of a value: the point's own type where it fits the value, else what the value is. */
function datatypeOf(value: MetricValue, point: DeviceBase['points'][number] | undefined): DataTypeCode {
  if (point && point.scale === undefined && point.offset === undefined) {
    const declared = point.type === 'bool' ? DataType.Boolean : point.type === 'string' ? DataType.String : POINT_TYPES[String(point.type)];
    if (declared !== undefined && fits(declared, value)) return declared;
  }
  if (typeof value === 'boolean') return DataType.Boolean;
  if (typeof value === 'string') return DataType.String;
  return DataType.Double;
}

/**
 * A Sparkplug B 3.0 edge node: the agent is the node, each device of the records routed here a
 * Sparkplug device, each value a metric named `<stream>/<value>`. Records come from the outbox
 * as for any upstream and leave it only once the broker has them: DATA goes at QoS 0 as the
 * specification wants, and a send resolves when the broker answered an UNSUBSCRIBE sent after
 * it on the same connection (the broker reads a connection in order, so it has read every
 * message before). See README.md for the session lifecycle and the conformance list.
 */
export class SparkplugUpstream implements Upstream {
  readonly name: string;
  /** One connection, read in order; a drop fails every send in flight: pipelining is safe. */
  readonly window = 4;
  private client!: MqttClient;
  private readonly listeners: (() => void)[] = [];
  private readonly nodeId: string;
  private readonly topics: { base: string; ncmd: string; dcmd: string; state?: string; fence: string };
  /** bdSeq of the connection (its NDEATH will), 0–255; the last one used is kept in `bdSeqFile`. */
  private bdSeq: number;
  private readonly bdSeqFile: string;
  /** seq of the next node message (0–255, wrapping); an NBIRTH is 0. */
  private seq = 0;
  /** down: not connected; waiting: connected, the primary host not online; born: NBIRTH sent. */
  private session: 'down' | 'waiting' | 'born' = 'down';
  /** Records up to this outbox seq were waiting when the session began: their data is historical. */
  private heldUpTo = 0;
  private hostOnline = false;
  private hostStateTimestamp = -Infinity;
  private readonly devices = new Map<string, DeviceSession>();
  /** Aliases are unique across the node; 0 is never handed out. */
  private nextAlias = 1;
  /** Fences awaiting the broker's UNSUBACK: failed at once when the connection closes. */
  private readonly fences = new Set<(err: Error) => void>();
  private closing = false;

  constructor(
    private readonly config: SparkplugUpstreamConfig,
    agentId: string,
    private readonly log: Logger,
    private readonly context: UpstreamContext,
  ) {
    this.name = config.name;
    this.nodeId = config.edge_node_id ?? agentId;
    const base = `${NAMESPACE}/${config.group_id}`;
    this.topics = {
      base,
      ncmd: `${base}/NCMD/${this.nodeId}`,
      dcmd: `${base}/DCMD/${this.nodeId}/+`,
      state: config.primary_host === undefined ? undefined : `${NAMESPACE}/STATE/${config.primary_host}`,
      fence: `${base}/FENCE/${this.nodeId}`,
    };
    this.bdSeqFile = join(context.dataDir, `sparkplug-${config.name}.bdseq`);
    this.bdSeq = this.nextBdSeq();
    this.connect(agentId);
  }

  private connect(agentId: string): void {
    this.client = connectMqtt({
      who: `upstream ${this.name}`,
      log: this.log,
      logFields: { upstream: this.name },
      url: this.config.url,
      clientId: this.config.client_id ?? `edge-agent-${agentId}-${this.config.name}`,
      username: this.config.username,
      password: this.config.password,
      tls: this.config.tls,
      keepalive: this.config.keepalive,
      whileDown: 'records are kept in the outbox',
      // a Sparkplug session is a clean MQTT session; subscriptions are made again, before the NBIRTH, on each connect
      extra: { clean: true, queueQoSZero: false, resubscribe: false, will: this.will() },
    });
    // each CONNECT carries the next bdSeq in its will
    this.client.on('reconnect', () => {
      this.bdSeq = this.nextBdSeq();
      this.client.options.will = this.will();
    });
    this.client.on('connect', () => this.startSession());
    this.client.on('close', () => this.onClose());
    this.client.on('message', (topic, payload) => this.onMessage(topic, payload));
  }

  /** The bdSeq after the one last used, saved before the CONNECT that uses it (so a restart goes on from it). */
  private nextBdSeq(): number {
    let last = -1;
    try {
      const n = Number(readFileSync(this.bdSeqFile, 'utf8').trim());
      if (Number.isInteger(n) && n >= 0 && n <= 255) last = n;
    } catch {
      // first start (or an unreadable file): start at 0
    }
    const next = (last + 1) % 256;
    try {
      mkdirSync(this.context.dataDir, { recursive: true });
      writeFileSync(`${this.bdSeqFile}.tmp`, `${next}\n`);
      renameSync(`${this.bdSeqFile}.tmp`, this.bdSeqFile);
    } catch (err) {
      this.log.warn({ upstream: this.name, err: (err as Error).message }, `upstream ${this.name}: cannot save the Sparkplug bdSeq in ${this.bdSeqFile} (${(err as Error).message}); a restart may repeat it`);
    }
    return next;
  }

  private deathPayload(): Buffer {
    return encodePayload({ timestamp: Date.now(), metrics: [{ name: 'bdSeq', datatype: DataType.Int64, value: this.bdSeq }] });
  }

  private will() {
    return { topic: `${this.topics.base}/NDEATH/${this.nodeId}`, payload: this.deathPayload(), qos: 1 as const, retain: false };
  }

  get connected(): boolean {
    return this.session === 'born';
  }

  onConnect(listener: () => void): void {
    this.listeners.push(listener);
  }

  private startSession(): void {
    (this.client.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
    this.session = 'waiting';
    // the host's state is learnt again on each connection (its retained STATE comes after the SUBACK)
    this.hostOnline = false;
    const topics = [this.topics.ncmd, this.topics.dcmd];
    if (this.topics.state) topics.push(this.topics.state);
    // commands are subscribed before the NBIRTH, so that no Rebirth request after it is missed
    this.client.subscribe(topics, { qos: 1 }, (err, granted) => {
      // the connection went away before the SUBACK: MQTT.js connects again (with the backoff)
      if (err || !this.client.connected) return;
      const refused = (granted ?? []).filter((g) => g.qos === 0x80).map((g) => g.topic);
      if (refused.length > 0) {
        // data still flows; commands (Rebirth, DCMD) or the host's STATE cannot come
        this.log.warn({ upstream: this.name, topics: refused }, `upstream ${this.name}: the broker refused the subscription to ${refused.join(', ')} (ACL?): commands${this.topics.state ? ' and the primary host STATE' : ''} on them will not arrive`);
      }
      if (!this.topics.state || this.hostOnline) this.birth();
      else this.log.info({ upstream: this.name, host: this.config.primary_host }, `upstream ${this.name}: waiting for primary host ${this.config.primary_host} to be online; records are kept in the outbox`);
    });
  }

  private onClose(): void {
    this.session = 'down';
    for (const device of this.devices.values()) device.born = false;
    this.failPending(new Error(`connection to ${this.config.url} closed`));
  }

  /** NBIRTH (seq 0, bdSeq, Rebirth), then a DBIRTH for each device known and alive. */
  private birth(): void {
    if (this.session === 'down') return;
    const first = this.session !== 'born';
    // what the outbox held when the session began is historical (a rebirth within the session changes nothing)
    if (first) this.heldUpTo = this.context.lastSeq();
    this.publish('NBIRTH', undefined, [
      { name: 'bdSeq', datatype: DataType.Int64, value: this.bdSeq },
      { name: REBIRTH, datatype: DataType.Boolean, value: false },
    ]);
    this.session = 'born';
    for (const [id, device] of this.devices) {
      device.born = false;
      // a device that died (DDEATH) is born again when it is back, not now
      if (!device.dead && device.metrics.size > 0) this.deviceBirth(id, device);
    }
    if (first) for (const listener of this.listeners) listener();
  }

  private deviceBirth(id: string, device: DeviceSession): void {
    const metrics: Metric[] = [];
    for (const m of device.metrics.values()) {
      metrics.push({
        name: m.name,
        alias: this.config.aliases ? m.alias : undefined,
        timestamp: m.timestamp,
        datatype: m.datatype,
        value: m.value,
        properties: qualityProperties(m.quality),
      });
    }
    this.publish('DBIRTH', id, metrics);
    device.born = true;
    device.dead = false;
  }

  /** Publishes a node or device message with the next seq (an NBIRTH with 0): QoS 0, not retained. */
  private publish(kind: 'NBIRTH' | 'DBIRTH' | 'DDATA' | 'DDEATH', device: string | undefined, metrics: Metric[]): void {
    const seq = kind === 'NBIRTH' ? 0 : this.seq;
    this.seq = (seq + 1) % 256;
    const topic = device === undefined ? `${this.topics.base}/${kind}/${this.nodeId}` : `${this.topics.base}/${kind}/${this.nodeId}/${device}`;
    this.client.publish(topic, encodePayload({ timestamp: Date.now(), metrics, seq }), { qos: 0, retain: false });
  }

  async send(rows: OutboxRow[]): Promise<SendResult> {
    if (this.session !== 'born' || !this.client.connected) throw new Error(`no Sparkplug session on ${this.config.url}`);
    const rejected: SendResult['rejected'] = [];
    const records: UpstreamRecord[] = [];
    let described = true;
    for (const row of rows) {
      let record: UpstreamRecord;
      try {
        record = JSON.parse(row.payload) as UpstreamRecord;
      } catch (err) {
        rejected.push({ ids: [row.id], reason: `not a record: ${(err as Error).message}` });
        continue;
      }
      records.push(record);
      if (!this.learn(record)) described = false;
    }
    // A device or metric the births did not describe: the whole birth sequence again, once for
    // the batch (Sparkplug wants every DBIRTH right after the NBIRTH, and every metric in them)
    if (!described) this.birth();
    for (const record of records) this.publishRecord(record);
    await this.fence();
    return { rejected };
  }

  /** The metrics of a record and what it tells of a device: each value and event of a data record. */
  private forEachMetric(record: UpstreamRecord, visit: (name: string, value: MetricValue, quality: Quality | undefined, point: string | undefined) => void): void {
    for (const key in record.values) visit(`${record.stream}/${key}`, record.values[key], record.quality?.[key], key);
    const { event } = record;
    if (event) {
      visit(`${record.stream}/${event.code}`, event.state === 'raised', undefined, undefined);
      visit(`${record.stream}/${event.code}/description`, event.description, undefined, undefined);
    }
  }

  private isStatus(record: UpstreamRecord): boolean {
    return record.stream === 'devices' && (record.event?.code === 'DEVICE_OFFLINE' || record.event?.code === 'DEVICE_ONLINE');
  }

  /**
   * Takes a record's metrics into its device's description, with their latest values (the next
   * birth's). False when the description changed: a new device, a new metric, or a value that
   * no longer fits its metric's datatype (a fraction in an integer metric: it becomes what the
   * value is).
   */
  private learn(record: UpstreamRecord): boolean {
    if (this.isStatus(record)) return true;
    const id = record.device;
    let device = this.devices.get(id);
    let described = true;
    const config = this.context.device(id);
    this.forEachMetric(record, (name, value, quality, pointName) => {
      if (!device) this.devices.set(id, (device = { metrics: new Map(), born: false, dead: false }));
      let known = device.metrics.get(name);
      if (!known) {
        const point = pointName === undefined ? undefined : config?.points.find((p) => p.name === pointName);
        known = { name, alias: this.nextAlias++, datatype: datatypeOf(value, point), value, timestamp: record.ts, point: point?.writable ? point.name : undefined };
        device.metrics.set(name, known);
        described = false;
      } else if (!fits(known.datatype, value)) {
        known.datatype = datatypeOf(value, undefined);
        described = false;
      }
      // an older (historical) value does not replace a newer one as the current value
      if (record.ts >= known.timestamp) {
        known.value = value;
        known.timestamp = record.ts;
        known.quality = quality;
      }
    });
    return described;
  }

  /** One record: a device's death or birth for its status events, else a DDATA (after a DBIRTH for a device that was dead). */
  private publishRecord(record: UpstreamRecord): void {
    const id = record.device;
    const device = this.devices.get(id);
    if (this.isStatus(record)) {
      if (!device) return;
      if (record.event!.code === 'DEVICE_OFFLINE') {
        if (device.born) this.publish('DDEATH', id, []);
        device.born = false;
        device.dead = true;
      } else {
        device.dead = false;
        if (!device.born && device.metrics.size > 0) this.deviceBirth(id, device);
      }
      return;
    }
    if (!device) return;
    const historical = record.seq <= this.heldUpTo;
    const metrics: Metric[] = [];
    this.forEachMetric(record, (name, value, quality) => {
      const known = device.metrics.get(name)!;
      metrics.push({
        name: this.config.aliases ? undefined : name,
        alias: this.config.aliases ? known.alias : undefined,
        timestamp: record.ts,
        datatype: known.datatype,
        isHistorical: historical,
        value,
        properties: qualityProperties(quality),
      });
    });
    if (metrics.length === 0) return;
    // data of a device that died: its session starts again (Sparkplug 3.0, device session establishment)
    if (!device.born) this.deviceBirth(id, device);
    this.publish('DDATA', id, metrics);
  }

  /** Resolves once the broker has read everything published before (its UNSUBACK comes after). */
  private fence(): Promise<void> {
    return new Promise((resolve, reject) => {
      // MQTT.js would queue the UNSUBSCRIBE for the next connection, whose UNSUBACK says nothing of this one
      if (!this.client.connected) return reject(new Error(`connection to ${this.config.url} lost`));
      const fail = (err: Error) => {
        this.fences.delete(fail);
        reject(err);
      };
      this.fences.add(fail);
      this.client.unsubscribe(this.topics.fence, (err) => {
        if (!this.fences.delete(fail)) return;
        if (err) reject(err);
        else resolve();
      });
    });
  }

  private onMessage(topic: string, payload: Buffer): void {
    try {
      if (topic === this.topics.state) this.onHostState(payload);
      else if (topic === this.topics.ncmd) this.onNodeCommand(payload);
      else if (topic.startsWith(`${this.topics.base}/DCMD/${this.nodeId}/`)) this.onDeviceCommand(topic.slice(this.topics.base.length + 7 + this.nodeId.length), payload);
    } catch (err) {
      this.log.warn({ upstream: this.name, topic, err: (err as Error).message }, `upstream ${this.name}: ignored a message on ${topic}: ${(err as Error).message}`);
    }
  }

  /**
   * The primary host's STATE: Sparkplug 3.0's JSON (`online`, `timestamp`; one older than the
   * last is ignored), or the text ONLINE / OFFLINE of hosts written to earlier drafts.
   */
  private onHostState(payload: Buffer): void {
    const text = payload.toString('utf8').trim();
    const state = (text === 'ONLINE' || text === 'OFFLINE' ? { online: text === 'ONLINE' } : JSON.parse(text)) as { online?: unknown; timestamp?: unknown };
    if (typeof state.online !== 'boolean') throw new Error('a STATE without online');
    const timestamp = typeof state.timestamp === 'number' ? state.timestamp : -Infinity;
    if (timestamp < this.hostStateTimestamp) return;
    this.hostStateTimestamp = timestamp;
    const was = this.hostOnline;
    this.hostOnline = state.online;
    if (state.online && !was) {
      this.log.info({ upstream: this.name, host: this.config.primary_host }, `upstream ${this.name}: primary host ${this.config.primary_host} is online`);
      if (this.session === 'waiting') this.birth();
    } else if (!state.online && was) {
      this.log.warn({ upstream: this.name, host: this.config.primary_host }, `upstream ${this.name}: primary host ${this.config.primary_host} is offline; records are kept in the outbox until it is back`);
      if (this.session === 'born') void this.restartSession();
    }
  }

  /** The primary host went offline: NDEATH, disconnect, connect again (with the next bdSeq) and wait for it. */
  private async restartSession(): Promise<void> {
    this.session = 'waiting';
    await this.sayDeath();
    await closeMqtt(this.client);
    if (!this.closing) this.client.reconnect();
  }

  private onNodeCommand(payload: Buffer): void {
    const { metrics } = decodePayload(payload);
    for (const metric of metrics) {
      if (metric.name === REBIRTH && metric.value === true) {
        this.log.info({ upstream: this.name }, `upstream ${this.name}: Rebirth requested; NBIRTH and DBIRTHs sent again`);
        if (this.session === 'born') this.birth();
      } else {
        this.log.warn({ upstream: this.name, metric: metric.name ?? metric.alias }, `upstream ${this.name}: NCMD for unknown node metric ${metric.name ?? `alias ${metric.alias}`} refused`);
      }
    }
  }

  /** Writes each metric of a DCMD that names a writable point of the device, as an action does; the rest is refused and logged. */
  private onDeviceCommand(id: string, payload: Buffer): void {
    const { metrics } = decodePayload(payload);
    const device = this.devices.get(id);
    for (const metric of metrics) {
      const label = metric.name ?? `alias ${metric.alias}`;
      let known: KnownMetric | undefined;
      if (device) for (const m of device.metrics.values()) if (m.name === metric.name || (metric.name === undefined && m.alias === metric.alias)) known = m;
      const refusal = !known ? 'no such metric' : known.point === undefined ? 'not a writable point' : metric.value === null ? 'no value' : undefined;
      if (refusal || !known?.point) {
        this.log.warn({ upstream: this.name, device: id, metric: label }, `upstream ${this.name}: DCMD ${id} ${label} refused: ${refusal}`);
        continue;
      }
      this.write(id, known.point, metric.value as Value);
    }
  }

  private write(device: string, point: string, value: Value): void {
    const target = `${device}.${point}`;
    const report = (severity: 'info' | 'major', description: string, error?: string, extra: Record<string, unknown> = {}) =>
      this.context.report({
        device,
        ts: Date.now(),
        values: {},
        event: { code: 'ACTION', severity, description, state: 'raised', point, value, ok: error === undefined, error, source: `sparkplug ${this.name}`, ...extra },
      });
    this.context.write(device, point, value).then(
      (outcome) => {
        const extra = outcome ? { written: outcome.written, ...(outcome.readBack === undefined ? {} : { read_back: outcome.readBack }) } : {};
        report('info', `DCMD: wrote ${JSON.stringify(outcome ? outcome.written : value)} to ${target}`, undefined, extra);
      },
      (err: Error) => {
        this.log.error({ upstream: this.name, device, point, err: err.message }, `upstream ${this.name}: DCMD writing ${JSON.stringify(value)} to ${target} failed: ${err.message}`);
        report('major', `DCMD: writing ${JSON.stringify(value)} to ${target} failed: ${err.message}`, err.message);
      },
    );
  }

  private failPending(err: Error): void {
    for (const fail of [...this.fences]) fail(err);
    // MQTT.js would send them again on reconnect, behind the outbox's back: the outbox alone retries
    for (const id of Object.keys(this.client.outgoing)) this.client.removeOutgoingMessage(Number(id));
  }

  /** The NDEATH of an intentional end (a clean DISCONNECT drops the will), as the will would be: QoS 1, waited for a second at most. */
  private async sayDeath(): Promise<void> {
    const sent = new Promise<void>((resolve) => this.client.publish(this.will().topic, this.deathPayload(), { qos: 1, retain: false }, () => resolve()));
    await Promise.race([sent, new Promise((resolve) => setTimeout(resolve, 1000).unref())]);
  }

  /** Says NDEATH (an intentional end, Sparkplug 3.0), then disconnects; the outbox keeps what was not acknowledged. */
  async close(): Promise<void> {
    this.closing = true;
    if (this.session === 'born') await this.sayDeath();
    this.session = 'down';
    await closeMqtt(this.client);
    this.failPending(new Error('upstream closed'));
  }
}
