import Database from 'better-sqlite3';
import type { Logger } from 'pino';
import { formatIssue } from './config/errors.js';
import { loadConfigFile, type LoadedConfig } from './config/load.js';
import type { AgentConfig } from './config/types.js';
import type { Connector } from './connectors/connector.js';
import { createConnector } from './connectors/index.js';
import { startTimer, TimerSchedule } from './connectors/timer/timer.js';
import { openDatabase } from './outbox/database.js';
import { Forwarder } from './outbox/forwarder.js';
import { Outbox } from './outbox/outbox.js';
import { ActionSink } from './streams/action.js';
import { buildProcessors } from './streams/build.js';
import type { Reading } from './streams/reading.js';
import { LatestValues } from './streams/latest.js';
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

/** What one config builds: torn down and built anew on reload. */
interface Runtime {
  connectors: Map<string, Connector>;
  streams: Stream[];
  upstreams: Upstream[];
  forwarders: Forwarder[];
  timers: NodeJS.Timeout[];
  /** Stops the timer sources. */
  stopTimers: (() => void)[];
}

const TICK_MS = 1000;
const EXPIRE_MS = 60_000;

/** Builds the runtime from a config file, reloads it, and shuts it down. */
export class Agent {
  private store!: Store;
  private runtime!: Runtime;

  private constructor(
    private loaded: LoadedConfig,
    readonly log: Logger,
  ) {}

  get config(): AgentConfig {
    return this.loaded.config;
  }

  get outbox(): Outbox {
    return this.store.outbox;
  }

  get streams(): readonly Stream[] {
    return this.runtime.streams;
  }

  get forwarders(): readonly Forwarder[] {
    return this.runtime.forwarders;
  }

  /**
   * False when a forwarding loop is stuck: sends in flight and none settled for `maxStall` ms
   * (a broker that takes messages and never acknowledges them). The watchdog stops pinging,
   * and systemd restarts the agent; the outbox keeps what was not acknowledged.
   */
  healthy(maxStall: number, now = Date.now()): boolean {
    return this.runtime.forwarders.every((f) => f.stalledFor(now) < maxStall);
  }

  /** Loads `file` and starts everything it describes. Throws ConfigError for a bad file. */
  static async start(file: string, log: Logger, env: NodeJS.ProcessEnv = process.env): Promise<Agent> {
    const agent = new Agent(loadConfigFile(file, env), log);
    log.level = agent.config.agent.log_level;
    agent.store = agent.openStore(agent.config);
    agent.runtime = await agent.build(agent.loaded);
    return agent;
  }

  /**
   * Reads the config file again. A bad file throws (ConfigError) and the running config
   * stays; a good one replaces the running one. The outbox and stream state carry over.
   */
  async reload(env: NodeJS.ProcessEnv = process.env): Promise<void> {
    const loaded = loadConfigFile(this.loaded.file, env);
    // Checked against a scratch state store before anything running is touched.
    buildProcessors(loaded, new StateStore(new Database(':memory:')));
    await this.teardown(this.runtime);
    if (storeKey(loaded.config) !== this.store.key) {
      this.closeStore();
      this.store = this.openStore(loaded.config);
    }
    this.loaded = loaded;
    this.log.level = loaded.config.agent.log_level;
    this.runtime = await this.build(loaded);
    this.log.info({ version: loaded.config.version }, `config ${loaded.file} reloaded`);
  }

  /** Stops reading devices and timers and commits what was accepted; forwarding goes on. */
  async stopSources(): Promise<void> {
    const { runtime } = this;
    for (const stop of runtime.stopTimers) stop();
    await Promise.all([...runtime.connectors.values()].map((c) => c.stop().catch((err) => this.log.warn({ device: c.id, err }, 'connector stop failed'))));
    this.store.outbox.commit();
  }

  /** Stops reading, commits what was accepted, lets sends in flight finish, closes. */
  async stop(): Promise<void> {
    await this.teardown(this.runtime);
    this.closeStore();
  }

  private openStore(config: AgentConfig): Store {
    const { db, path, quarantined } = openDatabase(config.agent.data_dir, { durability: config.outbox.durability, maxSize: config.outbox.max_size }, this.log);
    let outbox: Outbox | undefined;
    const state = new StateStore(db, () => outbox?.scheduleCommit());
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

  private closeStore(): void {
    this.store.outbox.close();
    this.store.db.close();
  }

  private async build(loaded: LoadedConfig): Promise<Runtime> {
    const { config } = loaded;
    const { outbox } = this.store;
    const latest = new LatestValues();
    const { streams: processors, unavailable } = buildProcessors(loaded, this.store.state, { now: Date.now, latest });
    for (const issue of unavailable) this.log.error(formatIssue(issue));
    const orphans = outbox.orphans(config.upstream.map((u) => u.name));
    if (orphans.length) this.log.warn({ upstreams: orphans }, `the outbox holds records for upstreams no longer configured (${orphans.join(', ')}); they are kept`);

    const runtime: Runtime = { connectors: new Map(), streams: [], upstreams: [], forwarders: [], timers: [], stopTimers: [] };
    for (const upstreamConfig of config.upstream) {
      const upstream = await createUpstream(upstreamConfig, config.agent.id, this.log);
      if (!upstream) continue;
      const forwarder = new Forwarder(outbox, upstream, this.log);
      runtime.upstreams.push(upstream);
      runtime.forwarders.push(forwarder);
    }

    for (const device of config.devices) {
      // Device events go to the upstreams of the streams that read the device.
      const upstreams = [
        ...new Set(config.streams.filter((s) => s.from.device === device.id).flatMap((s) => s.to.filter((t): t is string => typeof t === 'string'))),
      ];
      const report = (event: Reading) => {
        if (upstreams.length > 0) outbox.add(upstreams, 'devices', event);
      };
      try {
        runtime.connectors.set(device.id, await createConnector(device, { log: this.log, agentId: config.agent.id, dataDir: config.agent.data_dir, report }));
      } catch (err) {
        this.log.error({ device: device.id }, (err as Error).message);
      }
    }

    for (const streamConfig of config.streams) {
      const built = processors.get(streamConfig.name);
      if (!built) continue;
      const upstreams = streamConfig.to.filter((sink): sink is string => typeof sink === 'string');
      const toUpstreams = (reading: Reading) => {
        if (upstreams.length > 0) outbox.add(upstreams, streamConfig.name, reading);
      };
      const actions: ActionSink[] = [];
      for (const sink of streamConfig.to) {
        if (typeof sink === 'string') continue;
        const connector = runtime.connectors.get(sink.action.device);
        if (connector) actions.push(new ActionSink(sink.action, (point, value) => connector.write(point, value), toUpstreams, this.log));
        else this.log.error(`stream ${streamConfig.name}: action on device ${sink.action.device}, which is not running`);
      }
      const stream = new Stream(
        streamConfig,
        built.steps,
        (reading) => {
          toUpstreams(reading);
          for (const action of actions) action.handle(reading);
        },
        built.counters,
      );
      runtime.streams.push(stream);
      const { timer } = streamConfig.from;
      if (timer) {
        const schedule = new TimerSchedule(timer, config.agent.timezone);
        runtime.stopTimers.push(startTimer(schedule, (ts) => stream.push({ device: 'timer', ts, values: {} })));
      }
    }

    const byDevice = new Map<string, Stream[]>();
    for (const stream of runtime.streams) {
      if (!stream.device) continue;
      byDevice.set(stream.device, [...(byDevice.get(stream.device) ?? []), stream]);
    }
    const wakeForwarders = () => {
      for (const forwarder of runtime.forwarders) forwarder.wake();
    };
    outbox.onCommitted(wakeForwarders);
    for (const forwarder of runtime.forwarders) forwarder.start();
    for (const [id, connector] of runtime.connectors) {
      const streams = byDevice.get(id) ?? [];
      connector.start((reading) => {
        latest.update(reading);
        for (const stream of streams) stream.push(reading);
      });
    }
    outbox.expire();
    runtime.timers.push(
      setInterval(() => {
        const now = Date.now();
        for (const stream of runtime.streams) stream.tick(now);
      }, TICK_MS),
      setInterval(() => outbox.expire(), EXPIRE_MS),
    );
    this.log.info(
      { devices: runtime.connectors.size, streams: runtime.streams.length, upstreams: runtime.upstreams.length },
      `agent ${config.agent.id} running`,
    );
    return runtime;
  }

  private async teardown(runtime: Runtime): Promise<void> {
    for (const timer of runtime.timers) clearInterval(timer);
    await this.stopSources();
    this.store.outbox.removeCommitListeners();
    await Promise.all(runtime.forwarders.map((f) => f.stop()));
    await Promise.all(runtime.upstreams.map((u) => u.close()));
  }
}

/** A reload that changes these needs the database reopened. */
function storeKey(config: AgentConfig): string {
  return JSON.stringify([config.agent.data_dir, config.agent.id, config.outbox]);
}
