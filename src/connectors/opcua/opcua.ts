import { X509Certificate } from 'node:crypto';
import { copyFileSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  AttributeIds,
  ClientMonitoredItem,
  ClientSubscription,
  DataType,
  MessageSecurityMode,
  OPCUACertificateManager,
  OPCUAClient,
  SecurityPolicy,
  StatusCodes,
  TimestampsToReturn,
  UserTokenType,
  Variant,
  type ClientSession,
  type DataValue,
} from 'node-opcua';
import { fillDefaults, type Value } from '../../config/kit.js';
import { opcuaSchema, type OpcuaConfig, type OpcuaPoint } from './config.js';
import type { Quality, Reading } from '../../streams/reading.js';
import { deviceStatusEvent, WriteError, type Connector, type ConnectorContext, type ConnectorFactory } from '../connector.js';

export const createOpcuaDevice: ConnectorFactory = async (device, context) => new OpcuaDevice(fillDefaults(opcuaSchema, structuredClone(device)), context);

/**
 * An OPC UA server: points with `sampling` are monitored items of one subscription, the others
 * are read at the device's `poll`. The reading's ts is the value's source timestamp (else the
 * server's, else arrival); status codes map to quality (Bad → bad with no value, Uncertain →
 * estimated). node-opcua reconnects by itself with backoff and restores the session and its
 * subscription (or recreates them after a server restart); the device is offline meanwhile.
 * The agent's application certificate lives in data_dir/opcua/pki, created on first start.
 */
class OpcuaDevice implements Connector {
  readonly id: string;
  online = false;
  /** Whether the device was ever reached or found unreachable. */
  private known = false;
  private readonly client: OPCUAClient;
  private session: ClientSession | undefined;
  private subscription: ClientSubscription | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private readonly points: OpcuaPoint[];
  private deliver: (reading: Reading) => void = () => {};
  private stopped = false;
  private readonly dataTypes = new Map<string, DataType>();
  private readonly certificates: OPCUACertificateManager;

  constructor(
    private readonly config: OpcuaConfig,
    private readonly context: ConnectorContext,
  ) {
    this.id = config.id;
    this.points = config.points;
    const mode = config.security?.mode ?? 'None';
    const policy = config.security?.policy ?? (mode === 'None' ? 'None' : 'Basic256Sha256');
    const pki = join(context.dataDir ?? '.', 'opcua', 'pki');
    const trusted = join(pki, 'trusted', 'certs');
    mkdirSync(trusted, { recursive: true });
    // Server certificates the operator put in trust_dir are trusted as they are.
    if (config.trust_dir) {
      for (const file of readdirSync(config.trust_dir)) if (/\.(pem|der|crt|cer)$/i.test(file)) copyFileSync(join(config.trust_dir, file), join(trusted, file));
    }
    // Trust on first use: accept a server certificate only while none is trusted yet; once one
    // is (it is kept in the PKI), a different one is refused, even after a restart.
    this.certificates = new OPCUACertificateManager({
      rootFolder: pki,
      automaticallyAcceptUnknownCertificate: config.trust_on_first_use && readdirSync(trusted).length === 0,
    });
    this.client = OPCUAClient.create({
      applicationName: `edge-agent ${context.agentId}`,
      securityMode: MessageSecurityMode[mode],
      securityPolicy: SecurityPolicy[policy as keyof typeof SecurityPolicy],
      endpointMustExist: false,
      keepSessionAlive: true,
      requestedSessionTimeout: 60_000,
      connectionStrategy: { initialDelay: 500, maxDelay: 10_000, maxRetry: Number.MAX_SAFE_INTEGER, randomisationFactor: 0.2 },
      clientCertificateManager: this.certificates,
    });
    this.client.on('connection_lost', () => this.setOnline(false, 'connection lost'));
    this.client.on('connection_reestablished', () => this.setOnline(true));
    this.client.on('backoff', (count, delay) => {
      if (count === 1) context.log.warn({ device: this.id }, `device ${this.id}: cannot reach ${config.endpoint}; retrying (next in ${delay} ms)`);
    });
  }

  start(deliver: (reading: Reading) => void): void {
    this.deliver = deliver;
    void this.open();
  }

  private async open(): Promise<void> {
    try {
      await this.client.connect(this.config.endpoint);
      this.session = await this.client.createSession(this.identity());
      // the first server certificate is now trusted: no other will be accepted by itself
      this.certificates.automaticallyAcceptUnknownCertificate = false;
      if (this.stopped) return;
      this.setOnline(true);
      this.subscribe(this.session);
      this.schedulePolls();
    } catch (err) {
      if (this.stopped) return;
      this.context.log.error({ device: this.id, err: (err as Error).message }, `device ${this.id}: cannot open ${this.config.endpoint}: ${(err as Error).message}; trying again`);
      setTimeout(() => void this.open(), 2000).unref();
    }
  }

  /** Anonymous, user name and password, or a user certificate (`certificate`, `private_key`: PEM files). */
  private identity() {
    const { user, password, certificate, private_key } = this.config;
    if (certificate && private_key) {
      return {
        type: UserTokenType.Certificate as const,
        certificateData: new X509Certificate(readFileSync(certificate)).raw,
        privateKey: readFileSync(private_key, 'utf8'),
      };
    }
    if (user) return { type: UserTokenType.UserName as const, userName: user, password: password ?? '' };
    return { type: UserTokenType.Anonymous as const };
  }

  private subscribe(session: ClientSession): void {
    const monitored = this.points.filter((p) => p.sampling !== undefined);
    if (monitored.length === 0) return;
    const fastest = Math.min(...monitored.map((p) => p.sampling!));
    this.subscription = ClientSubscription.create(session, {
      requestedPublishingInterval: fastest,
      requestedLifetimeCount: 600,
      requestedMaxKeepAliveCount: 20,
      maxNotificationsPerPublish: 1000,
      publishingEnabled: true,
      priority: 10,
    });
    for (const point of monitored) {
      const item = ClientMonitoredItem.create(
        this.subscription,
        { nodeId: point.node, attributeId: AttributeIds.Value },
        {
          samplingInterval: point.sampling,
          queueSize: point.queue_size,
          discardOldest: true,
          filter: point.deadband ? deadbandFilter(point.deadband) : undefined,
        },
        TimestampsToReturn.Both,
      );
      item.on('changed', (dataValue: DataValue) => this.deliver(readingOf(this.id, [[point, dataValue]])));
      item.on('err', (message: string) => this.context.log.warn({ device: this.id, node: point.node }, `device ${this.id}: monitoring ${point.node} failed: ${message}`));
    }
  }

  private schedulePolls(): void {
    const polled = this.points.filter((p) => p.sampling === undefined);
    if (polled.length === 0) return;
    const every = this.config.poll;
    const tick = async () => {
      if (this.stopped) return;
      this.pollTimer = setTimeout(tick, every - (Date.now() % every));
      if (!this.session || !this.online) return;
      try {
        const values = await this.session.read(polled.map((p) => ({ nodeId: p.node, attributeId: AttributeIds.Value })));
        this.deliver(readingOf(this.id, polled.map((p, i) => [p, values[i]])));
      } catch (err) {
        this.context.log.warn({ device: this.id, err: (err as Error).message }, `device ${this.id}: read failed: ${(err as Error).message}`);
      }
    };
    this.pollTimer = setTimeout(tick, every - (Date.now() % every));
  }

  private setOnline(online: boolean, why?: string): void {
    if (online === this.online && this.known) return;
    // the first connection is the expected state, not news: no event for it
    const first = !this.known && online;
    this.known = true;
    this.online = online;
    if (first) return;
    const description = online ? `device ${this.id}: ${this.config.endpoint} answers` : `device ${this.id}: ${this.config.endpoint} ${why}`;
    if (online) this.context.log.info({ device: this.id }, description);
    else this.context.log.warn({ device: this.id }, description);
    this.context.report?.(deviceStatusEvent(this.id, online, description));
  }

  async write(name: string, value: Value): Promise<void> {
    const point = this.points.find((p) => p.name === name);
    if (!point) throw new WriteError(this.id, name, 'no such point');
    if (!point.writable) throw new WriteError(this.id, name, 'the point is not writable');
    if (!this.session || !this.online) throw new WriteError(this.id, name, `not connected to ${this.config.endpoint}`);
    let dataType = this.dataTypes.get(point.node);
    if (dataType === undefined) {
      // the node's own data type, so that 1 goes to a Double as a Double and to an Int16 as one
      const type = await this.session.read({ nodeId: point.node, attributeId: AttributeIds.DataType });
      dataType = (type.value.value?.value as DataType | undefined) ?? DataType.Null;
      this.dataTypes.set(point.node, dataType);
    }
    const status = await this.session.write({ nodeId: point.node, attributeId: AttributeIds.Value, value: { value: new Variant({ dataType, value }) } });
    if (status !== StatusCodes.Good) throw new WriteError(this.id, name, `node ${point.node}: ${status.name} (${status.description})`);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.pollTimer);
    await this.subscription?.terminate().catch(() => undefined);
    await this.session?.close().catch(() => undefined);
    await this.client.disconnect().catch(() => undefined);
  }
}

function readingOf(device: string, values: [OpcuaPoint, DataValue][]): Reading {
  const reading: Reading = { device, ts: 0, values: Object.create(null) }; // `__proto__` is a point name too
  for (const [point, dataValue] of values) {
    const ts = dataValue.sourceTimestamp?.getTime() ?? dataValue.serverTimestamp?.getTime() ?? Date.now();
    if (ts > reading.ts) reading.ts = ts;
    const quality = qualityOf(dataValue);
    const raw = dataValue.value?.value;
    const usable = quality !== 'bad' && (typeof raw === 'number' || typeof raw === 'boolean' || typeof raw === 'string');
    reading.values[point.name] = usable ? (raw as Value) : typeof raw === 'bigint' ? Number(raw) : null;
    if (quality !== 'good' || !usable) (reading.quality ??= {})[point.name] = usable ? quality : 'bad';
  }
  return reading;
}

function qualityOf(dataValue: DataValue): Quality {
  const name = dataValue.statusCode.name;
  if (name.startsWith('Bad')) return 'bad';
  if (name.startsWith('Uncertain')) return 'estimated';
  return 'good';
}

function deadbandFilter(deadband: { type: 'absolute' | 'percent'; value: number }) {
  // DataChangeFilter: trigger StatusValue (1), deadband type Absolute (1) or Percent (2)
  return { trigger: 1, deadbandType: deadband.type === 'absolute' ? 1 : 2, deadbandValue: deadband.value } as never;
}
