import Database from 'better-sqlite3';
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { Logger } from 'pino';
import { ConfigError, formatIssue } from './config/errors.js';
import { loadConfigFile, parseConfig, type LoadedConfig } from './config/load.js';
import type { AgentConfig, DeviceConfig, StreamConfig, UpstreamConfig, Value } from './config/types.js';
import type { Connector, WriteOutcome } from './connectors/connector.js';
import { createConnector } from './connectors/index.js';
import { startTimer, TimerSchedule } from './connectors/timer/timer.js';
import { startManagement, type Management } from './manage/index.js';
import { openDatabase } from './outbox/database.js';
import { Forwarder } from './outbox/forwarder.js';
import { Outbox } from './outbox/outbox.js';
import { ActionSink } from './streams/action.js';
import { buildProcessors } from './streams/build.js';
import { LatestValues } from './streams/latest.js';
import type { Reading } from './streams/reading.js';
import { StateStore } from './streams/state.js';
import { Stream } from './streams/stream.js';
import { createUpstream } from './upstream/index.js';
import type { Upstream } from './upstream/upstream.js';

/** The database, outbox and stream state: kept across reloads that leave data_dir and outbox alone. */
interface Store {
  db: Database.Database;
  state: StateStore;
  outbox: Outbox;
  key: string;
}

export interface RunningUpstream {
  config: UpstreamConfig;
  upstream: Upstream;
  forwarder: Forwarder;
}

export interface RunningDevice {
  config: DeviceConfig;
  connector: Connector;
}

export interface RunningStream {
  config: StreamConfig;
  stream: Stream;
  deployed: boolean;
  stopTimer?: () => void;
}

/** What an apply restarted, added or removed, by name. */
export interface ConfigChange {
  upstreams: string[];
  devices: string[];
  streams: string[];
}

/** A config that passed validation but failed to start: the previous one runs again. */
export class RolledBack extends Error {
  constructor(message: string, cause: Error) {
    super(message, { cause });
    this.name = 'RolledBack';
  }
}

const TICK_MS = 1000;
const EXPIRE_MS = 60_000;
/** Stream state unused for agent.state_ttl is looked for hourly. */
const PRUNE_MS = 3_600_000;
const RECENT_EVENTS = 50;

/**
 * Runs a config: devices, streams, upstreams, and the management API. A new config (the file
 * changed, SIGHUP, a signed push, the API) is validated, then only what differs is restarted:
 * a stream whose definition is unchanged keeps running, with its counters and state, while
 * the device or upstream beside it is replaced. A config that fails to start gives way to the
 * previous one.
 */
export class Agent {
  private store!: Store;
  readonly latest = new LatestValues();
  readonly upstreams = new Map<string, RunningUpstream>();
  readonly devices = new Map<string, RunningDevice>();
  readonly streamsByName = new Map<string, RunningStream>();
  /** The streams each device feeds, and the upstreams its status events go to. */
  private routes = new Map<string, Stream[]>();
  private deviceUpstreams = new Map<string, string[]>();
  private timers: NodeJS.Timeout[] = [];
  private management: Management | undefined;
  private watcher: FSWatcher | undefined;
  private stopped = false;
  private applying: Promise<unknown> = Promise.resolve();
  /** The time zone the running streams were built with (windows and timers depend on it). */
  private timezone = '';
  /** Events that went upstream lately, newest last (for the status page). */
  readonly recentEvents: Reading[] = [];
  appliedAt = Date.now();

  private constructor(
    private loaded: LoadedConfig,
    readonly log: Logger,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  get config(): AgentConfig {
    return this.loaded.config;
  }

  get file(): string {
    return this.loaded.file;
  }

  get text(): string {
    return this.loaded.text;
  }

  get outbox(): Outbox {
    return this.store.outbox;
  }

  get forwarders(): Forwarder[] {
    return [...this.upstreams.values()].map((u) => u.forwarder);
  }

  /**
   * False when a forwarding loop is stuck: sends in flight and none settled for `maxStall` ms
   * (a broker that takes messages and never acknowledges them). The watchdog stops pinging,
   * and systemd restarts the agent; the outbox keeps what was not acknowledged.
   */
  healthy(maxStall: number, now = Date.now()): boolean {
    return this.forwarders.every((f) => f.stalledFor(now) < maxStall);
  }

  /** Loads `file` and starts everything it describes. Throws ConfigError for a bad file. */
  static async start(file: string, log: Logger, env: NodeJS.ProcessEnv = process.env): Promise<Agent> {
    const agent = new Agent(loadConfigFile(file, env), log, env);
    check(agent.loaded);
    log.level = agent.config.agent.log_level;
    agent.store = agent.openStore(agent.config);
    // At start there is nothing to go back to: a device that cannot be built is logged and left out.
    await agent.reconcile(agent.loaded, false);
    agent.timers.push(
      setInterval(() => {
        const now = Date.now();
        for (const stream of agent.streamsByName.values()) if (stream.deployed) stream.stream.tick(now);
      }, TICK_MS),
      setInterval(() => agent.outbox.expire(), EXPIRE_MS),
      setInterval(() => void agent.prunedState(), PRUNE_MS),
    );
    agent.outbox.expire();
    void agent.prunedState();
    agent.watchConfigFile();
    log.info({ devices: agent.devices.size, streams: agent.streamsByName.size, upstreams: agent.upstreams.size }, `agent ${agent.config.agent.id} running`);
    return agent;
  }

  /** A config text as if it were the config file (its directory, the agent's environment); throws ConfigError. */
  parse(text: string): LoadedConfig {
    return parseConfig(text, this.loaded.file, this.env);
  }

  /** Applies the config file (see `apply`); `text` is its content when the caller read it already. */
  async reload(text?: string): Promise<ConfigChange> {
    const { file } = this.loaded;
    return this.apply(text === undefined ? loadConfigFile(file, this.env) : this.parse(text), `file ${file}`);
  }

  /**
   * SIGHUP and a change of the config file: reload, and when the file is rejected or fails to
   * start, say why in the log while the running config goes on.
   */
  async reloadLogged(why: string, text?: string): Promise<void> {
    try {
      await this.reload(text);
    } catch (err) {
      if (err instanceof ConfigError) this.log.error({ file: this.file }, `${why}: config ${this.file} rejected; the running config stays:\n${err.message}`);
      else if (err instanceof RolledBack) this.log.error({ file: this.file }, `${why}: ${err.message}`);
      else throw err;
    }
  }

  /** Applies the config file when it changes on disk (after it has been quiet for 300 ms). */
  private watchConfigFile(): void {
    const file = this.loaded.file;
    let quiet: NodeJS.Timeout | undefined;
    try {
      this.watcher = watch(dirname(file), (_event, name) => {
        if (name !== basename(file)) return;
        clearTimeout(quiet);
        quiet = setTimeout(async () => {
          await this.applying;
          let text: string;
          try {
            text = readFileSync(file, 'utf8');
          } catch {
            return; // being replaced: the rename will be seen too
          }
          // the file as it runs already (a push writes it before applying it)
          if (text !== this.loaded.text) await this.reloadLogged('the config file changed', text);
        }, 300);
      });
      this.watcher.on('error', (err) => this.log.warn({ err: err.message }, `cannot watch ${file} for changes: ${err.message}; SIGHUP reloads it`));
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, `cannot watch ${file} for changes: ${(err as Error).message}; SIGHUP reloads it`);
    }
  }

  /**
   * Applies a loaded config: validates it (ConfigError, and nothing changes), restarts what
   * differs, and when that fails (a connector or upstream that cannot be built) goes back to
   * the running config and throws RolledBack. One apply at a time.
   */
  apply(loaded: LoadedConfig, source: string): Promise<ConfigChange> {
    const run = this.applying.then(async () => {
      check(loaded);
      const previous = this.loaded;
      try {
        const change = await this.reconcile(loaded, true);
        this.loaded = loaded;
        this.log.level = loaded.config.agent.log_level;
        this.appliedAt = Date.now();
        this.log.info({ version: loaded.config.version, ...change }, `config from ${source} applied (restarted: ${describe(change)})`);
        return change;
      } catch (err) {
        // the caller logs the RolledBack, with where the config came from
        await this.reconcile(previous, false);
        throw new RolledBack(`the config failed to start (${(err as Error).message}); the previous config${previous.config.version === undefined ? '' : ` (version ${previous.config.version})`} runs again`, err as Error);
      }
    });
    this.applying = run.catch(() => undefined);
    return run;
  }

  /** Stops feeding a stream (its definition and state stay); `deploy` starts it again. */
  setDeployed(name: string, deployed: boolean): RunningStream | undefined {
    const running = this.streamsByName.get(name);
    if (!running) return undefined;
    if (running.deployed !== deployed) {
      running.deployed = deployed;
      if (deployed) this.startTimer(running);
      else running.stopTimer?.();
      this.route();
      this.log.info({ stream: name }, `stream ${name} ${deployed ? 'deployed' : 'undeployed'}`);
    }
    return running;
  }

  /** Stops reading devices and timers and commits what was accepted; forwarding goes on. */
  async stopSources(): Promise<void> {
    for (const stream of this.streamsByName.values()) stream.stopTimer?.();
    await Promise.all([...this.devices.values()].map(({ connector: c }) => c.stop().catch((err) => this.log.warn({ device: c.id, err }, 'connector stop failed'))));
    this.store.outbox.commit();
  }

  /** Stops reading, commits what was accepted, lets sends in flight finish, closes. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.watcher?.close();
    await this.applying;
    for (const timer of this.timers) clearInterval(timer);
    await this.management?.close();
    this.management = undefined;
    await this.stopAll();
    this.closeStore();
  }

  private async stopAll(): Promise<void> {
    await this.stopSources();
    this.devices.clear();
    this.streamsByName.clear();
    this.routes = new Map();
    await Promise.all([...this.upstreams.values()].map((u) => u.forwarder.stop()));
    await Promise.all([...this.upstreams.values()].map((u) => u.upstream.close()));
    this.upstreams.clear();
  }

  /**
   * Makes the running parts match `loaded`: each device, upstream and stream whose config
   * differs from the one it runs with is stopped and built again; the rest are left alone.
   * `strict`: a part that cannot be built throws (at start it is logged and left out).
   */
  private async reconcile(loaded: LoadedConfig, strict: boolean): Promise<ConfigChange> {
    const { config } = loaded;
    const change: ConfigChange = { upstreams: [], devices: [], streams: [] };
    if (storeKey(config) !== this.store.key || config.agent.timezone !== this.timezone) {
      // another database, agent id or clock: everything starts again
      await this.stopAll();
      if (storeKey(config) !== this.store.key) {
        this.closeStore();
        this.store = this.openStore(config);
      }
    }
    const { outbox } = this.store;

    await removeChanged(this.upstreams, config.upstream, (u) => u.name, change.upstreams, async ({ forwarder, upstream }) => {
      await forwarder.stop();
      await upstream.close();
    });
    for (const upstreamConfig of config.upstream) {
      if (this.upstreams.has(upstreamConfig.name)) continue;
      const upstream = await createUpstream(upstreamConfig, config.agent.id, this.log);
      if (!upstream) continue;
      const forwarder = new Forwarder(outbox, upstream, this.log);
      this.upstreams.set(upstreamConfig.name, { config: upstreamConfig, upstream, forwarder });
      forwarder.start();
      if (!change.upstreams.includes(upstreamConfig.name)) change.upstreams.push(upstreamConfig.name);
    }
    outbox.removeCommitListeners();
    outbox.onCommitted(() => {
      for (const { forwarder } of this.upstreams.values()) forwarder.wake();
    });

    await removeChanged(this.devices, config.devices, (d) => d.id, change.devices, ({ connector }) =>
      connector.stop().catch((err) => this.log.warn({ device: connector.id, err }, 'connector stop failed')),
    );
    for (const device of config.devices) {
      if (this.devices.has(device.id)) continue;
      const report = (event: Reading) => {
        const upstreams = this.deviceUpstreams.get(device.id);
        if (upstreams?.length) this.send(upstreams, 'devices', event);
      };
      let connector: Connector;
      try {
        connector = await createConnector(device, { log: this.log, agentId: config.agent.id, dataDir: config.agent.data_dir, report });
      } catch (err) {
        if (strict) throw new Error(`device ${device.id}: ${(err as Error).message}`, { cause: err });
        this.log.error({ device: device.id }, (err as Error).message);
        continue;
      }
      this.devices.set(device.id, { config: device, connector });
      connector.start((reading) => {
        this.latest.update(reading);
        const streams = this.routes.get(device.id);
        if (streams) for (const stream of streams) stream.push(reading);
      });
      if (!change.devices.includes(device.id)) change.devices.push(device.id);
    }

    await removeChanged(this.streamsByName, config.streams, (s) => s.name, change.streams, (running) => running.stopTimer?.());
    this.timezone = config.agent.timezone;
    this.latest.limit(config.agent.max_latest_devices, this.log);
    const toBuild = new Set(config.streams.filter((s) => !this.streamsByName.has(s.name)).map((s) => s.name));
    const { streams: processors, unavailable } = buildProcessors(loaded, this.store.state, { now: Date.now, latest: this.latest }, toBuild);
    for (const issue of unavailable) this.log.error(formatIssue(issue));
    for (const streamConfig of config.streams) {
      const built = processors.get(streamConfig.name);
      if (!toBuild.has(streamConfig.name) || !built) continue;
      const upstreams = streamConfig.to.filter((sink): sink is string => typeof sink === 'string');
      const toUpstreams = (reading: Reading) => {
        if (upstreams.length > 0) this.send(upstreams, streamConfig.name, reading);
      };
      const actions = streamConfig.to.flatMap((sink) =>
        typeof sink === 'string' ? [] : [new ActionSink(sink.action, (point, value) => this.write(sink.action.device, point, value), toUpstreams, this.log)],
      );
      const stream = new Stream(
        streamConfig,
        built.steps,
        (reading) => {
          toUpstreams(reading);
          for (const action of actions) action.handle(reading);
        },
        built.counters,
      );
      const running: RunningStream = { config: streamConfig, stream, deployed: true };
      this.streamsByName.set(streamConfig.name, running);
      this.startTimer(running);
      if (!change.streams.includes(streamConfig.name)) change.streams.push(streamConfig.name);
    }
    this.route();

    const orphans = outbox.orphans(config.upstream.map((u) => u.name));
    if (orphans.length) this.log.warn({ upstreams: orphans }, `the outbox holds records for upstreams no longer configured (${orphans.join(', ')}); they are kept`);
    this.management = await startManagement(this, config, this.management, strict, this.log);
    return change;
  }

  private startTimer(running: RunningStream): void {
    const { timer } = running.config.from;
    if (!timer || !running.deployed) return;
    // the zone of the config being built (this.config is still the one it replaces)
    const schedule = new TimerSchedule(timer, this.timezone);
    running.stopTimer = startTimer(schedule, (ts) => running.stream.push({ device: 'timer', ts, values: {} }));
  }

  /** Which deployed streams each device feeds, and where its status events go. */
  private route(): void {
    const routes = new Map<string, Stream[]>();
    const deviceUpstreams = new Map<string, string[]>();
    for (const { config: streamConfig, stream, deployed } of this.streamsByName.values()) {
      const device = streamConfig.from.device;
      if (!device) continue;
      if (deployed) routes.set(device, [...(routes.get(device) ?? []), stream]);
      const upstreams = streamConfig.to.filter((t): t is string => typeof t === 'string');
      deviceUpstreams.set(device, [...new Set([...(deviceUpstreams.get(device) ?? []), ...upstreams])]);
    }
    this.routes = routes;
    this.deviceUpstreams = deviceUpstreams;
  }

  private send(upstreams: readonly string[], stream: string, reading: Reading): void {
    this.store.outbox.add(upstreams, stream, reading);
    if (reading.event) {
      this.recentEvents.push({ ...reading, stream } as Reading);
      if (this.recentEvents.length > RECENT_EVENTS) this.recentEvents.shift();
    }
  }

  /** Writes through the device's connector as it runs now (it may have been replaced since the action was built). */
  private write(device: string, point: string, value: Value): Promise<WriteOutcome | void> {
    const running = this.devices.get(device);
    if (!running) return Promise.reject(new Error(`device ${device} is not running`));
    return running.connector.write(point, value);
  }

  private openStore(config: AgentConfig): Store {
    const { db, path, quarantined } = openDatabase(config.agent.data_dir, { durability: config.outbox.durability, maxSize: config.outbox.max_size }, this.log);
    let outbox: Outbox | undefined;
    const state = new StateStore(db, () => outbox?.scheduleCommit(), { ttl: config.agent.state_ttl, cacheKeys: config.agent.state_cache, log: this.log });
    outbox = new Outbox(db, config.outbox, config.agent.id, state, this.log);
    if (quarantined) {
      outbox.add(config.upstream.map((u) => u.name), 'agent', {
        device: config.agent.id,
        ts: Date.now(),
        values: {},
        event: {
          code: 'OUTBOX_QUARANTINED',
          severity: 'major',
          description: `database ${path} could not be used; moved to ${quarantined} and started afresh: records it held were not sent`,
          state: 'raised',
        },
      });
    }
    this.log.info({ path, seq: outbox.lastSeq }, `outbox ${path} open`);
    return { db, state, outbox, key: storeKey(config) };
  }

  /** Prunes unused stream state; a failure (the database closed by a reload meanwhile) is logged, never thrown. */
  private async prunedState(): Promise<void> {
    try {
      await this.store.state.prune();
    } catch (err) {
      this.log.warn({ err }, `state: pruning failed: ${(err as Error).message}`);
    }
  }

  private closeStore(): void {
    this.store.outbox.removeCommitListeners();
    this.store.outbox.close();
    this.store.db.close();
  }
}

/** Everything the schema cannot see, checked against a scratch state store: throws ConfigError. */
function check(loaded: LoadedConfig): void {
  buildProcessors(loaded, new StateStore(new Database(':memory:')));
}

/**
 * Stops and forgets each running part whose config is gone or differs from the wanted one
 * (compared as JSON), and names it in `changed`.
 */
async function removeChanged<C, R extends { config: C }>(
  running: Map<string, R>,
  wanted: readonly C[],
  keyOf: (config: C) => string,
  changed: string[],
  stop: (part: R) => unknown,
): Promise<void> {
  const byKey = new Map(wanted.map((config) => [keyOf(config), JSON.stringify(config)]));
  for (const [key, part] of running) {
    if (byKey.get(key) === JSON.stringify(part.config)) continue;
    await stop(part);
    running.delete(key);
    changed.push(key);
  }
}

function describe(change: ConfigChange): string {
  const parts = Object.entries(change)
    .filter(([, names]) => names.length)
    .map(([kind, names]) => `${kind} ${names.join(', ')}`);
  return parts.join('; ') || 'nothing';
}

/** A reload that changes these needs the database reopened. */
function storeKey(config: AgentConfig): string {
  return JSON.stringify([config.agent.data_dir, config.agent.id, config.outbox]);
}

export { ConfigError };
