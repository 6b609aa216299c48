import { X509Certificate } from 'node:crypto';
import { copyFileSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { format } from 'node:util';
import {
  AttributeIds,
  ClientMonitoredItem,
  ClientSubscription,
  DataChangeFilter,
  DataChangeTrigger,
  DataType,
  DeadbandType,
  MessageSecurityMode,
  OPCUAClient,
  SecurityPolicy,
  setDebugLogger,
  setErrorLogger,
  setWarningLogger,
  TimestampsToReturn,
  UserTokenType,
  Variant,
  type ClientSession,
  type DataValue,
} from 'node-opcua';
import type { Logger } from 'pino';
import { fillDefaults } from '../../core/config-kit.js';
import { Backoff } from '../../core/backoff.js';
import { Episodes } from '../../core/episodes.js';
import { opcuaSchema, type OpcuaConfig, type OpcuaPoint } from './config.js';
import type { Quality, Reading, Value } from '../../core/reading.js';
import { writablePoint, WriteError, type Connector, type ConnectorContext, type ConnectorFactory, type WriteOutcome } from '../connector.js';
import { DeviceStatus } from '../status.js';
import { DeviceTrust, legacyPins } from './trust.js';
import { valueForType } from './write-value.js';
import { everyTick, schedule } from '../../core/schedule.js';

const CONNECT_TIMEOUT = 10_000;
const RECONNECT_MAX = 30_000;
/** A connection that held this long resets the reconnect backoff. */
const STABLE_AFTER = 10_000;
/** A stop never waits longer than this for a server to answer the goodbyes. */
const STOP_GRACE = 2_000;
/** Below this, checking a silent monitored item would cost more reads than it is worth. */
const MIN_STALE_AFTER = 5_000;
/** Status codes that say a monitored item lost its node: it is created again. */
const LOST_NODE = new Set(['BadNodeIdUnknown', 'BadNodeIdInvalid', 'BadAttributeIdInvalid', 'BadNotFound', 'BadObjectDeleted', 'BadMonitoredItemIdInvalid']);

export const createOpcuaDevice: ConnectorFactory = async (device, context) => new OpcuaDevice(fillDefaults(opcuaSchema, structuredClone(device)), context);

let libraryLog: Logger | undefined;
/**
 * node-opcua writes its warnings and errors to the console, colored, by the hundred when a
 * server misbehaves: they go to our log at debug level instead (the connector logs what matters
 * once per episode). Installed once per process; the first device's logger is used.
 */
function routeLibraryLogs(log: Logger): void {
  if (libraryLog) return;
  libraryLog = log.child({ lib: 'node-opcua' });
  const to = (level: 'debug') => (context: unknown, ...args: unknown[]) => {
    if (libraryLog!.isLevelEnabled(level)) libraryLog![level]({ source: (context as { filename?: string } | undefined)?.filename }, format(...args));
  };
  setDebugLogger(to('debug'));
  setWarningLogger(to('debug'));
  setErrorLogger(to('debug'));
}

/** A monitored point: its item, and what is known of its updates. */
interface Watch {
  point: OpcuaPoint;
  item?: ClientMonitoredItem;
  staleAfter: number;
  /** when the last notification came, or a read confirmed the value unchanged (monotonic ms) */
  lastUpdate: number;
  value?: Value | null;
  /** the status code name of the last notification */
  status?: string;
  /** a read disagreed with the last notification once: the next disagreement makes it stale */
  suspect: boolean;
  stale: boolean;
  /** the item failed because its node was gone: a good read of the node means it is back */
  nodeMissing: boolean;
  backoff: Backoff;
  retry?: NodeJS.Timeout;
}

/**
 * An OPC UA server: points with `sampling` are monitored items of one subscription, the others
 * are read at the device's `poll`. The reading's ts is the value's source timestamp (else the
 * server's, else arrival); status codes map to quality (Bad → bad with no value, Uncertain →
 * estimated).
 *
 * The connector does its own reconnecting, not node-opcua's: every failed attempt (refused TCP,
 * a server that never answers, a refused certificate, a failed session) and every lost
 * connection ends that client, waits a capped exponential backoff with jitter, and opens a new
 * client, session and subscription. node-opcua's own retry loops bypass their backoff on some
 * paths (a certificate refusal retries at once), which is how one changed certificate made
 * thousands of sockets a minute.
 */
class OpcuaDevice implements Connector {
  readonly id: string;
  /** Each lost or failed connection reports at once (offlineAfter 1); the first connection is no news. */
  private readonly status: DeviceStatus;
  private client: OPCUAClient | undefined;
  private session: ClientSession | undefined;
  private subscription: ClientSubscription | undefined;
  private stopPolls: (() => void) | undefined;
  private staleTimer: NodeJS.Timeout | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private stableTimer: NodeJS.Timeout | undefined;
  private readonly points: OpcuaPoint[];
  private readonly watches: Watch[];
  private deliver: (reading: Reading) => void = () => {};
  private stopped = false;
  private readonly dataTypes = new Map<string, DataType>();
  private readonly certificates: DeviceTrust;
  private readonly backoff: Backoff;
  /** failing causes: connection attempts, monitored items, stale points, each logged once */
  private readonly episodes = new Episodes();
  private readonly openCauses = new Set<string>();
  /** the connection attempt, or the connected client's life; a newer one makes older handlers no-ops */
  private generation = 0;

  constructor(
    private readonly config: OpcuaConfig,
    private readonly context: ConnectorContext,
  ) {
    this.id = config.id;
    this.status = new DeviceStatus(config.id, context, 1);
    this.points = config.points;
    routeLibraryLogs(context.log);
    const opcuaDir = join(context.dataDir ?? '.', 'opcua');
    const legacy = legacyPins(opcuaDir);
    const pki = join(opcuaDir, 'pki');
    const trusted = join(pki, 'trusted', 'certs');
    mkdirSync(trusted, { recursive: true });
    // Server certificates the operator put in trust_dir are trusted as they are.
    if (config.trust_dir) {
      for (const file of readdirSync(config.trust_dir)) if (/\.(pem|der|crt|cer)$/i.test(file)) copyFileSync(join(config.trust_dir, file), join(trusted, file));
    }
    const deviceDir = join(opcuaDir, 'devices', config.id.replace(/^\.+$/, (dots) => `_${dots}`));
    this.certificates = new DeviceTrust(pki, deviceDir, this.id, config.trust_on_first_use ?? false, context.log, legacy);
    this.backoff = new Backoff(500, config.reconnect_max ?? RECONNECT_MAX);
    const monitored = this.points.filter((p) => p.sampling !== undefined);
    const publishing = monitored.length ? Math.min(...monitored.map((p) => p.sampling!)) : 0;
    this.watches = monitored.map((point) => ({
      point,
      staleAfter: point.stale_after ?? config.stale_after ?? Math.max(MIN_STALE_AFTER, 3 * Math.max(point.sampling!, publishing)),
      lastUpdate: 0,
      suspect: false,
      stale: false,
      nodeMissing: false,
      backoff: new Backoff(500, RECONNECT_MAX),
    }));
  }

  start(deliver: (reading: Reading) => void): void {
    this.deliver = deliver;
    void this.open();
  }

  /** One connection attempt: a new client, its secure channel and a session, within connect_timeout. */
  private async open(): Promise<void> {
    if (this.stopped) return;
    const generation = ++this.generation;
    const mode = this.config.security?.mode ?? 'None';
    const policy = this.config.security?.policy ?? (mode === 'None' ? 'None' : 'Basic256Sha256');
    const client = OPCUAClient.create({
      applicationName: `edge-agent ${this.context.agentId}`,
      securityMode: MessageSecurityMode[mode],
      securityPolicy: SecurityPolicy[policy as keyof typeof SecurityPolicy],
      endpointMustExist: false,
      keepSessionAlive: true,
      requestedSessionTimeout: 60_000,
      // no retries inside node-opcua: a failure comes back here and waits our backoff
      connectionStrategy: { maxRetry: 0, initialDelay: 500, maxDelay: RECONNECT_MAX },
      clientCertificateManager: this.certificates,
    });
    this.client = client;
    const timeout = this.config.connect_timeout ?? CONNECT_TIMEOUT;
    let timer: NodeJS.Timeout | undefined;
    try {
      const connected = (async () => {
        await client.connect(this.config.endpoint);
        return client.createSession(this.identity());
      })();
      connected.catch(() => undefined); // a late failure after the timeout is already handled
      const session = await Promise.race([
        connected,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within ${timeout} ms`)), timeout);
        }),
      ]);
      clearTimeout(timer);
      if (this.stopped || generation !== this.generation) {
        await bounded(session.close(), STOP_GRACE);
        await this.retire(client);
        return;
      }
      this.session = session;
      // a reconnection may meet a changed address space (a PLC program download)
      this.dataTypes.clear();
      client.on('connection_lost', () => this.lost(generation, 'connection lost'));
      client.on('close', (err?: Error | null) => this.lost(generation, `connection closed${err ? `: ${err.message}` : ''}`));
      session.on('session_closed', () => this.lost(generation, 'session closed by the server'));
      session.on('keepalive_failure', () => this.lost(generation, 'session keep-alive failed'));
      // the backoff starts again from the bottom only once the connection has held a while: a
      // server that takes sessions and drops them at once is not hammered
      this.stableTimer = setTimeout(() => this.backoff.reset(), STABLE_AFTER);
      for (const cause of this.openCauses) {
        const count = this.episodes.end(cause);
        if (count > 1) this.context.log.info({ device: this.id }, `device ${this.id}: ${cause} (${count} attempts) is over`);
      }
      this.openCauses.clear();
      this.setOnline(true);
      this.subscribe(session, generation);
      this.schedulePolls();
    } catch (err) {
      clearTimeout(timer);
      if (this.stopped || generation !== this.generation) return;
      if (this.client === client) this.client = undefined;
      void this.retire(client);
      const cause = describe(err);
      const delay = this.backoff.next();
      // one episode per kind of failure: numbers (ports, transport counters) do not make a new one
      const kind = cause.replace(/\d+/g, '#');
      if (this.episodes.begin(kind)) {
        this.openCauses.add(kind);
        this.context.log.warn({ device: this.id, endpoint: this.config.endpoint }, `device ${this.id}: cannot open ${this.config.endpoint}: ${cause}; trying again with backoff (next in ${delay} ms)`);
      }
      this.setOnline(false, `unreachable: ${cause}`);
      this.reconnectTimer = setTimeout(() => void this.open(), delay);
    }
  }

  /** The connection of `generation` is gone: everything on it ends, and a new attempt follows the backoff. */
  private lost(generation: number, why: string): void {
    if (this.stopped || generation !== this.generation) return;
    this.generation++;
    this.teardown();
    this.setOnline(false, why);
    this.reconnectTimer = setTimeout(() => void this.open(), this.backoff.next());
  }

  private teardown(): void {
    clearTimeout(this.stableTimer);
    this.stopPolls?.();
    this.stopPolls = undefined;
    clearTimeout(this.staleTimer);
    for (const watch of this.watches) {
      clearTimeout(watch.retry);
      watch.retry = undefined;
      watch.item = undefined;
    }
    this.subscription = undefined;
    const client = this.client;
    const session = this.session;
    this.session = undefined;
    this.client = undefined;
    void (async () => {
      await bounded(session?.close(), STOP_GRACE);
      await this.retire(client);
    })();
  }

  /** Ends a client whatever its state; a server that does not answer does not hold it. */
  private async retire(client: OPCUAClient | undefined): Promise<void> {
    if (!client) return;
    client.removeAllListeners('connection_lost');
    client.removeAllListeners('close');
    await bounded(client.disconnect(), STOP_GRACE);
    breakChannel(client);
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

  private subscribe(session: ClientSession, generation: number): void {
    if (this.watches.length === 0) return;
    const fastest = Math.min(...this.watches.map((w) => w.point.sampling!));
    const subscription = ClientSubscription.create(session, {
      requestedPublishingInterval: fastest,
      requestedLifetimeCount: 600,
      requestedMaxKeepAliveCount: 20,
      maxNotificationsPerPublish: 1000,
      publishingEnabled: true,
      priority: 10,
    });
    this.subscription = subscription;
    subscription.on('error', (err: Error) => this.lost(generation, `subscription failed: ${err.message}`));
    subscription.on('internal_error', (err: Error) => this.lost(generation, `subscription failed: ${err.message}`));
    subscription.on('terminated', () => {
      if (this.subscription === subscription) this.lost(generation, 'subscription terminated by the server');
    });
    const now = performance.now();
    for (const watch of this.watches) {
      watch.lastUpdate = now;
      watch.suspect = false;
      this.monitor(watch, subscription);
    }
    this.scheduleStaleChecks(generation);
  }

  private monitor(watch: Watch, subscription: ClientSubscription): void {
    const { point } = watch;
    const item = ClientMonitoredItem.create(
      subscription,
      { nodeId: point.node, attributeId: AttributeIds.Value },
      {
        samplingInterval: point.sampling,
        queueSize: point.queue_size ?? 10,
        discardOldest: true,
        filter: point.deadband ? deadbandFilter(point.deadband) : undefined,
      },
      TimestampsToReturn.Both,
    );
    watch.item = item;
    item.on('changed', (dataValue: DataValue) => {
      if (watch.item !== item) return;
      const reading = readingOf(this.id, [[point, dataValue]]);
      this.deliver(reading);
      watch.lastUpdate = performance.now();
      watch.suspect = false;
      watch.value = reading.values[point.name];
      const status = dataValue.statusCode.name;
      watch.status = status;
      if (LOST_NODE.has(status)) {
        this.itemFailed(watch, status);
        return;
      }
      watch.backoff.reset();
      this.itemRecovered(watch);
    });
    item.on('err', (message: string) => {
      if (watch.item !== item) return;
      this.itemFailed(watch, message);
    });
  }

  /** The item lost its node, or could not be created: it is created again after a backoff. */
  private itemFailed(watch: Watch, why: string): void {
    const cause = `monitoring ${watch.point.node}`;
    if (this.episodes.begin(cause)) {
      this.context.log.warn({ device: this.id, node: watch.point.node }, `device ${this.id}: monitoring ${watch.point.node} (point ${watch.point.name}) failed: ${why}; creating it again with backoff`);
    }
    watch.nodeMissing = [...LOST_NODE].some((status) => why.includes(status));
    const old = watch.item;
    watch.item = undefined;
    old?.terminate().catch(() => undefined);
    if (watch.retry) return;
    watch.retry = setTimeout(() => {
      watch.retry = undefined;
      if (this.subscription && !this.stopped) this.monitor(watch, this.subscription);
    }, watch.backoff.next());
  }

  private itemRecovered(watch: Watch): void {
    const count = this.episodes.end(`monitoring ${watch.point.node}`);
    if (count) this.context.log.info({ device: this.id, node: watch.point.node }, `device ${this.id}: monitoring ${watch.point.node} works again`);
    if (watch.stale) {
      watch.stale = false;
      this.episodes.end(`stale ${watch.point.name}`);
      this.context.log.info({ device: this.id, point: watch.point.name }, `device ${this.id}: point ${watch.point.name} updates again`);
    }
  }

  /**
   * OPC UA sends a value only when it changes, so silence may mean "unchanged" or "dead item".
   * A point silent for stale_after is read: the same value (within the point's deadband) and
   * status as last notified means unchanged (it counts as an update, also for a Bad status that
   * stays); a lost node, or a different value or status twice in a row with no notification
   * between, means the item is dead: the point is marked stale (once per episode) and its item
   * created again.
   */
  private scheduleStaleChecks(generation: number): void {
    const every = Math.max(250, Math.min(...this.watches.map((w) => w.staleAfter)) / 2);
    const check = async () => {
      if (this.stopped || generation !== this.generation || !this.session) return;
      const now = performance.now();
      const due = this.watches.filter((w) => now - w.lastUpdate >= w.staleAfter);
      if (due.length) {
        try {
          const values = await this.session.read(due.map((w) => ({ nodeId: w.point.node, attributeId: AttributeIds.Value })));
          if (generation !== this.generation) return;
          due.forEach((watch, i) => this.judge(watch, values[i]));
        } catch (err) {
          this.context.log.debug({ device: this.id, err: describe(err) }, `device ${this.id}: stale check read failed`);
        }
      }
      if (generation === this.generation && !this.stopped) this.staleTimer = setTimeout(check, every);
    };
    this.staleTimer = setTimeout(check, every);
  }

  private judge(watch: Watch, dataValue: DataValue): void {
    // the node is back: no need to wait out the item's backoff
    if (watch.retry && watch.nodeMissing && dataValue.statusCode.isGood() && this.subscription) {
      clearTimeout(watch.retry);
      watch.retry = undefined;
      watch.nodeMissing = false;
      this.monitor(watch, this.subscription);
      return;
    }
    const read = readingOf(this.id, [[watch.point, dataValue]]);
    const status = dataValue.statusCode.name;
    // a point that stays Bad the same way (a failed sensor) is unchanged too; a lost node is not
    const unchanged = status === watch.status && !LOST_NODE.has(status) && withinDeadband(watch.point, read.values[watch.point.name], watch.value);
    if (unchanged) {
      watch.lastUpdate = performance.now();
      watch.suspect = false;
      if (watch.item) this.itemRecovered(watch);
      return;
    }
    // a change may be on its way in the next publish, a read may fail once: a second look
    // before calling the item dead (a lost node needs none)
    if (!LOST_NODE.has(status) && !watch.suspect) {
      watch.suspect = true;
      return;
    }
    watch.suspect = false;
    if (!watch.stale) {
      watch.stale = true;
      this.deliver({ device: this.id, ts: Date.now(), values: { [watch.point.name]: watch.value ?? null }, quality: { [watch.point.name]: 'stale' } });
      if (this.episodes.begin(`stale ${watch.point.name}`)) {
        this.context.log.warn(
          { device: this.id, point: watch.point.name, node: watch.point.node },
          `device ${this.id}: point ${watch.point.name} (${watch.point.node}) had no update for ${Math.round(watch.staleAfter)} ms and its item is not alive (${dataValue.statusCode.name}); marked stale, monitoring it again`,
        );
      }
    }
    if (!watch.retry) this.itemFailed(watch, `no update for ${Math.round(watch.staleAfter)} ms (${status})`);
  }

  private schedulePolls(): void {
    const polled = this.points.filter((p) => p.sampling === undefined);
    if (polled.length === 0) return;
    const every = this.config.poll ?? 1000;
    this.stopPolls?.();
    // once now (the session is up), then aligned to the wall clock, waited for on the monotonic one (see core/schedule.ts)
    this.stopPolls = schedule(everyTick(every), async () => {
      if (this.stopped || !this.session || !this.online) return;
      try {
        const values = await this.session.read(polled.map((p) => ({ nodeId: p.node, attributeId: AttributeIds.Value })));
        this.deliver(readingOf(this.id, polled.map((p, i) => [p, values[i]])));
      } catch (err) {
        this.context.log.warn({ device: this.id, err: describe(err) }, `device ${this.id}: read failed: ${describe(err)}`);
      }
    }, { atStart: true });
  }

  get online(): boolean {
    return this.status.online;
  }

  private setOnline(online: boolean, why?: string): void {
    if (online) this.status.succeeded(`device ${this.id}: ${this.config.endpoint} answers`);
    else this.status.failed(why ?? 'unreachable', `device ${this.id}: ${this.config.endpoint} ${why}`);
  }

  /**
   * Writes exactly the value asked for, checked against the node's data type first (read once
   * per node), and reads the node back.
   */
  async write(name: string, value: Value): Promise<WriteOutcome> {
    const point = writablePoint(this.id, this.points, name);
    const session = this.session;
    if (!session || !this.online) throw new WriteError(this.id, name, `not connected to ${this.config.endpoint}`);
    try {
      let dataType = this.dataTypes.get(point.node);
      if (dataType === undefined) {
        const type = await session.read({ nodeId: point.node, attributeId: AttributeIds.DataType });
        if (!type.statusCode.isGood()) throw new WriteError(this.id, name, `node ${point.node}: cannot read its data type: ${statusText(type.statusCode)}`);
        const id = type.value.value as { namespace: number; value: unknown } | undefined;
        // a standard type is ns=0;i=<DataType>; a custom (ns≠0) type is refused below as unsupported
        dataType = id && id.namespace === 0 && typeof id.value === 'number' ? (id.value as DataType) : DataType.Null;
        this.dataTypes.set(point.node, dataType);
      }
      const checked = valueForType(value, dataType);
      if ('refused' in checked) throw new WriteError(this.id, name, `node ${point.node} is ${DataType[dataType] ?? 'of an unsupported type'}: ${checked.refused}; not written`);
      // Int64 as text, so that a negative value keeps its sign on the way to the wire
      const wire = dataType === DataType.Int64 || dataType === DataType.UInt64 ? String(checked.value) : checked.value;
      const status = await session.write({ nodeId: point.node, attributeId: AttributeIds.Value, value: { value: new Variant({ dataType, value: wire }) } });
      if (!status.isGood()) throw new WriteError(this.id, name, `node ${point.node}: ${statusText(status)}`);
      const after = await session.read({ nodeId: point.node, attributeId: AttributeIds.Value });
      const readBack = readingOf(this.id, [[point, after]]).values[name];
      return { written: checked.value, readBack: after.statusCode.name.startsWith('Bad') ? null : readBack };
    } catch (err) {
      if (err instanceof WriteError) throw err;
      throw new WriteError(this.id, name, `node ${point.node}: ${describe(err)}`);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.generation++;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.stableTimer);
    this.stopPolls?.();
    clearTimeout(this.staleTimer);
    for (const watch of this.watches) clearTimeout(watch.retry);
    const { client, session, subscription } = this;
    this.client = undefined;
    this.session = undefined;
    this.subscription = undefined;
    // A server that stopped answering must not hold the agent's shutdown: the goodbyes get
    // STOP_GRACE in all, then the socket is closed under them.
    const goodbye = (async () => {
      await subscription?.terminate().catch(() => undefined);
      await session?.close().catch(() => undefined);
      await client?.disconnect().catch(() => undefined);
    })();
    await bounded(goodbye, STOP_GRACE);
    if (client) {
      client.removeAllListeners('connection_lost');
      client.removeAllListeners('close');
      breakChannel(client);
      await bounded(client.disconnect(), STOP_GRACE / 4);
    }
    await bounded(this.certificates.dispose(), STOP_GRACE / 4);
  }
}

/**
 * Closes the client's socket at once: after a bounded goodbye to a server that does not answer,
 * its pending requests would otherwise keep the socket and their timers (and the process) alive.
 */
function breakChannel(client: OPCUAClient): void {
  const channel = (client as unknown as { _secureChannel?: { forceConnectionBreak?: () => void } | null })._secureChannel;
  try {
    channel?.forceConnectionBreak?.();
  } catch {
    // already closed
  }
}

/**
 * Whether a read value is one the item would not have notified: equal, or within an absolute
 * deadband; with a percent deadband (of a range the agent does not know) any value of the same
 * type is taken as unchanged, so such a point goes stale only by status or a lost node.
 */
function withinDeadband(point: OpcuaPoint, read: Value | null | undefined, notified: Value | null | undefined): boolean {
  if (read === notified) return true;
  if (!point.deadband || typeof read !== 'number' || typeof notified !== 'number') return false;
  if (point.deadband.type === 'percent') return true;
  return Math.abs(read - notified) <= point.deadband.value;
}

/** Waits for `promise` at most `ms`, ignoring its failure. */
async function bounded(promise: Promise<unknown> | undefined, ms: number): Promise<void> {
  if (!promise) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([promise.catch(() => undefined), new Promise((done) => (timer = setTimeout(done, ms)))]);
  clearTimeout(timer);
}

function statusText(status: { name: string; description: string; value: number }): string {
  return `${status.name} (0x${status.value.toString(16).padStart(8, '0')}: ${status.description || 'no description'})`;
}

/** An error's message, never empty. */
function describe(err: unknown): string {
  if (err instanceof Error) return (err.message || err.name || 'unknown error').split('\n')[0];
  return String(err) || 'unknown error';
}

function readingOf(device: string, values: [OpcuaPoint, DataValue][]): Reading {
  const reading: Reading = { device, ts: 0, values: Object.create(null) }; // `__proto__` is a point name too
  for (const [point, dataValue] of values) {
    const ts = dataValue.sourceTimestamp?.getTime() ?? dataValue.serverTimestamp?.getTime() ?? Date.now();
    if (ts > reading.ts) reading.ts = ts;
    const quality = qualityOf(dataValue);
    const raw = scalarOf(dataValue);
    const usable = quality !== 'bad' && (typeof raw === 'number' || typeof raw === 'boolean' || typeof raw === 'string');
    reading.values[point.name] = usable ? (raw as Value) : typeof raw === 'bigint' ? Number(raw) : null;
    if (quality !== 'good' || !usable) (reading.quality ??= {})[point.name] = usable ? quality : 'bad';
  }
  return reading;
}

/** The value of a DataValue; Int64 and UInt64 come as [high, low] 32-bit words. */
function scalarOf(dataValue: DataValue): unknown {
  const variant = dataValue.value;
  const raw = variant?.value;
  if ((variant?.dataType === DataType.Int64 || variant?.dataType === DataType.UInt64) && Array.isArray(raw) && raw.length === 2) {
    const [high, low] = raw as [number, number];
    const unsigned = BigInt(high >>> 0) * 2n ** 32n + BigInt(low >>> 0);
    const value = variant.dataType === DataType.Int64 && high & 0x80000000 ? unsigned - 2n ** 64n : unsigned;
    return Number(value);
  }
  return raw;
}

function qualityOf(dataValue: DataValue): Quality {
  const name = dataValue.statusCode.name;
  if (name.startsWith('Bad')) return 'bad';
  if (name.startsWith('Uncertain')) return 'estimated';
  return 'good';
}

/** A real DataChangeFilter: a plain object made node-opcua throw while encoding the request, outside any promise. */
function deadbandFilter(deadband: { type: 'absolute' | 'percent'; value: number }): DataChangeFilter {
  return new DataChangeFilter({
    trigger: DataChangeTrigger.StatusValue,
    deadbandType: deadband.type === 'absolute' ? DeadbandType.Absolute : DeadbandType.Percent,
    deadbandValue: deadband.value,
  });
}
