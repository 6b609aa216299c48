import { resolve } from 'node:path';
import type { Logger } from 'pino';
import { ConfigError } from '../core/config-error.js';
import { loadConfigFile, parseConfig, type LoadedConfig } from '../config/load.js';
import type { AgentConfig } from '../config/types.js';
import { RolledBack, type ClockStatus, type ConfigChange, type ConfigStatus, type ManagedAgent } from '../manage/managed-agent.js';
import type { Forwarder } from '../upstream/forwarder.js';
import type { Outbox } from '../outbox/outbox.js';
import { validateConfig } from '../streams/build.js';
import { ClockGuard, ClockSync } from '../core/clock.js';
import { LatestValues } from '../core/latest.js';
import { Trends } from '../core/trends.js';
import type { Reading } from '../core/reading.js';
import {
  reconcileDevices,
  reconcileStreams,
  reconcileUpstreams,
  startStreamTimer,
  stopDevice,
  type Parts,
  type RunningStream,
} from './reconcile.js';
import { Router } from './router.js';
import { describeDevice, describeInstances, describeOutbox, describeStream } from './status.js';
import { closeStore, openStoreWhenPossible, storeKey, type Store } from './store.js';
import { watchConfigFile } from './watch.js';

/** What runs beside the agent (its management) follows it through these. */
export interface AgentHooks {
  /** After each config is applied, at start too; throwing rolls an apply back. */
  applied?(agent: Agent, config: AgentConfig, strict: boolean): Promise<void>;
  /** First thing on stop. */
  stopping?(): Promise<void>;
}

const TICK_MS = 1000;
const EXPIRE_MS = 60_000;
/** Stream state unused for agent.state_ttl is looked for hourly. */
const PRUNE_MS = 3_600_000;

/**
 * Runs a config: devices, streams, upstreams. A new config (the file changed, SIGHUP, a signed
 * push, the API) is validated, then only what differs is restarted: a stream whose definition
 * is unchanged keeps running, with its counters and state, while the device or upstream beside
 * it is replaced. A config that fails to start gives way to the previous one.
 */
export class Agent implements ManagedAgent {
  private store!: Store;
  /** The last 15 minutes of every point and stream output, for the status page (bounded rings). */
  readonly trends = new Trends();
  /** Hands each point to the trends as it goes over a reading: the reading is gone over once. */
  readonly latest = new LatestValues(undefined, undefined, this.trends);
  private readonly parts: Parts = { upstreams: new Map(), devices: new Map(), streams: new Map() };
  private readonly router = new Router(
    () => this.store.outbox,
    (device) => this.parts.devices.get(device)?.connector,
  );
  private timers: NodeJS.Timeout[] = [];
  private stopWatching = () => {};
  private stopped = false;
  private applying: Promise<unknown> = Promise.resolve();
  /** The time zone the running streams were built with (windows and timers depend on it). */
  private timezone = '';
  appliedAt = Date.now();
  /** Judges the time of every reading that enters the streams (see core/clock.ts). */
  readonly clockGuard: ClockGuard;
  private hooks: AgentHooks = {};

  private constructor(
    private loaded: LoadedConfig,
    readonly log: Logger,
    private readonly env: NodeJS.ProcessEnv,
  ) {
    this.clockGuard = new ClockGuard(loaded.config.agent, log, new ClockSync(log));
  }

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

  get upstreams() {
    return this.parts.upstreams;
  }

  get devices() {
    return this.parts.devices;
  }

  get streamsByName() {
    return this.parts.streams;
  }

  get forwarders(): Forwarder[] {
    return [...this.parts.upstreams.values()].map((u) => u.forwarder);
  }

  /**
   * False when a forwarding loop is stuck: sends in flight and none settled for `maxStall` ms
   * (a broker that takes messages and never acknowledges them). The watchdog stops pinging,
   * and systemd restarts the agent; the outbox keeps what was not acknowledged.
   */
  healthy(maxStall: number, now = performance.now()): boolean {
    return this.forwarders.every((f) => f.stalledFor(now) < maxStall);
  }

  /**
   * Loads `file` and starts everything it describes (`hooks.applied` included). Throws
   * ConfigError for a bad file.
   */
  static async start(file: string, log: Logger, env: NodeJS.ProcessEnv = process.env, hooks: AgentHooks = {}): Promise<Agent> {
    const agent = new Agent(loadConfigFile(file, env), log, env);
    agent.hooks = hooks;
    validateConfig(agent.loaded);
    log.level = agent.config.agent.log_level;
    agent.store = await openStoreWhenPossible(agent.config, log);
    // At start there is nothing to go back to: a device that cannot be built is logged and left out.
    await agent.reconcile(agent.loaded, false);
    agent.timers.push(
      setInterval(() => {
        const now = Date.now();
        for (const stream of agent.parts.streams.values()) if (stream.deployed) stream.stream.tick(now);
      }, TICK_MS),
      setInterval(() => agent.outbox.expire(), EXPIRE_MS),
      setInterval(() => void agent.pruneState(), PRUNE_MS),
    );
    agent.outbox.expire();
    void agent.pruneState();
    agent.clockGuard.sync.watchSteps();
    agent.stopWatching = watchConfigFile(
      file,
      async (text) => {
        await agent.applying;
        // the file as it runs already (a push writes it before applying it)
        if (text !== agent.loaded.text) await agent.reloadLogged('the config file changed', text);
      },
      log,
    );
    log.info({ devices: agent.devices.size, streams: agent.streamsByName.size, upstreams: agent.upstreams.size }, `agent ${agent.config.agent.id} running`);
    return agent;
  }

  parse(text: string): LoadedConfig {
    return parseConfig(text, this.loaded.file, this.env);
  }

  validate(loaded: LoadedConfig): void {
    validateConfig(loaded);
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
      // anything else is a fault of ours, but a file on disk must never stop the agent
      else this.log.error({ file: this.file, err }, `${why}: config ${this.file} could not be applied (${(err as Error)?.message}); the running config stays`);
    }
  }

  /**
   * Applies a loaded config: validates it (ConfigError, and nothing changes), restarts what
   * differs, and when that fails (a connector or upstream that cannot be built) goes back to
   * the running config and throws RolledBack. One apply at a time.
   */
  apply(loaded: LoadedConfig, source: string): Promise<ConfigChange> {
    return this.oneAtATime(() => this.applyInQueue(loaded, source));
  }

  /**
   * Runs `step` in the one-at-a-time apply queue, so that what it checks against the running
   * config (a push's version and target) still holds when it applies: no other apply runs in
   * between. `step` applies with `applyInQueue`, never with `apply` (that would wait for itself).
   */
  oneAtATime<T>(step: () => Promise<T>): Promise<T> {
    const run = this.applying.then(step);
    this.applying = run.catch(() => undefined);
    return run;
  }

  /** `apply` for a step already in the queue (see `oneAtATime`). */
  async applyInQueue(loaded: LoadedConfig, source: string): Promise<ConfigChange> {
    validateConfig(loaded);
    const previous = this.loaded;
    try {
      const change = await this.reconcile(loaded, true);
      this.loaded = loaded;
      this.clockGuard.configure(loaded.config.agent);
      this.log.level = loaded.config.agent.log_level;
      this.appliedAt = Date.now();
      this.log.info({ version: loaded.config.version, ...change }, `config from ${source} applied (restarted: ${describe(change)})`);
      return change;
    } catch (err) {
      // the caller logs the RolledBack, with where the config came from
      await this.reconcile(previous, false);
      throw new RolledBack(`the config failed to start (${(err as Error).message}); the previous config${previous.config.version === undefined ? '' : ` (version ${previous.config.version})`} runs again`, err as Error);
    }
  }

  /** Stops feeding a stream (its definition and state stay); `deploy` starts it again. */
  setDeployed(name: string, deployed: boolean): RunningStream | undefined {
    const running = this.parts.streams.get(name);
    if (!running) return undefined;
    if (running.deployed !== deployed) {
      running.deployed = deployed;
      if (deployed) startStreamTimer(running, this.timezone, this.clockGuard);
      else running.stopTimer?.();
      this.router.route(this.parts.streams.values());
      this.log.info({ stream: name }, `stream ${name} ${deployed ? 'deployed' : 'undeployed'}`);
    }
    return running;
  }

  streamStatus() {
    return [...this.parts.streams.values()].map(describeStream);
  }

  streamInstances(name: string) {
    const running = this.parts.streams.get(name);
    return running && describeInstances(running, this.store.state);
  }

  deviceStatus() {
    return [...this.parts.devices.values()].map((device) => describeDevice(device, this.latest));
  }

  outboxStatus() {
    return describeOutbox(this.parts.upstreams, this.store.outbox);
  }

  configStatus(): ConfigStatus {
    return { agent: this.config.agent.id, version: this.config.version ?? null, file: resolve(this.file), applied_at: this.appliedAt };
  }

  clockStatus(): ClockStatus {
    const { rejected, estimated, sync } = this.clockGuard;
    return { untimely: rejected, estimated, steps: sync.steps, synchronized: sync.synchronized };
  }

  events(): readonly Reading[] {
    return this.router.recentEvents;
  }

  /** Prunes unused stream state; a failure (the database closed by a reload meanwhile) is logged, never thrown. */
  private async pruneState(): Promise<void> {
    try {
      await this.store.state.prune();
    } catch (err) {
      this.log.warn({ err }, `state: pruning failed: ${(err as Error).message}`);
    }
  }

  /** Stops reading devices and timers and commits what was accepted; forwarding goes on. */
  async stopSources(): Promise<void> {
    for (const stream of this.parts.streams.values()) stream.stopTimer?.();
    await Promise.all([...this.parts.devices.values()].map((device) => stopDevice(device, this.log)));
    this.store.outbox.commit();
  }

  /** Stops reading, commits what was accepted, lets sends in flight finish, closes. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.stopWatching();
    await this.applying;
    for (const timer of this.timers) clearInterval(timer);
    this.clockGuard.sync.stop();
    await this.hooks.stopping?.();
    await this.stopAll();
    closeStore(this.store);
  }

  private async stopAll(): Promise<void> {
    await this.stopSources();
    this.parts.devices.clear();
    this.parts.streams.clear();
    this.router.route([]);
    await Promise.all([...this.parts.upstreams.values()].map((u) => u.forwarder.stop()));
    await Promise.all([...this.parts.upstreams.values()].map((u) => u.upstream.close()));
    this.parts.upstreams.clear();
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
        // another data_dir holds another database: its seq goes on from ours, so that
        // (agent, seq) still names one record only
        const lastSeq = this.store.outbox.lastSeq;
        closeStore(this.store);
        this.store = await openStoreWhenPossible(config, this.log);
        this.store.outbox.continueAfter(lastSeq);
      }
    }
    const { outbox, state } = this.store;
    await reconcileUpstreams(this.parts, config, outbox, change, this.log, this.latest);
    await reconcileDevices(
      this.parts,
      config,
      {
        deliver: (device, received) => {
          const reading = this.clockGuard.admit(received);
          this.latest.update(reading);
          this.router.deliver(device, reading);
        },
        report: (device, event) => this.router.report(device, event),
      },
      change,
      strict,
      this.log,
    );
    this.timezone = config.agent.timezone;
    this.latest.limit(config.agent.max_latest_devices, this.log);
    const router = this.router;
    const trends = this.trends;
    await reconcileStreams(this.parts, loaded, state, { now: Date.now, latest: this.latest }, this.clockGuard, {
      send: (upstreams, stream, reading) => {
        router.send(upstreams, stream, reading);
        trends.appendOutput(stream, reading);
      },
      write: (device, point, value) => router.write(device, point, value),
      log: this.log,
      containErrors: true,
    }, change);
    this.router.route(this.parts.streams.values());
    // the trends of what was removed go with it (a template device's ids stay, bounded by the series cap)
    const configured = new Set(config.devices.map((d) => d.id));
    this.trends.keepDevices((id) => configured.has(id) || !change.devices.includes(id));
    this.trends.keepStreams(new Set(this.parts.streams.keys()));

    const orphans = outbox.orphans(config.upstream.map((u) => u.name));
    if (orphans.length) this.log.warn({ upstreams: orphans }, `the outbox holds records for upstreams no longer configured (${orphans.join(', ')}); they are kept`);
    await this.hooks.applied?.(this, config, strict);
    return change;
  }
}

function describe(change: ConfigChange): string {
  const parts = Object.entries(change)
    .filter(([, names]) => names.length)
    .map(([kind, names]) => `${kind} ${names.join(', ')}`);
  return parts.join('; ') || 'nothing';
}

export { ConfigError, RolledBack };
