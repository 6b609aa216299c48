import type { Logger } from 'pino';
import type { Parts, RunningDevice, RunningStream, RunningUpstream } from './parts.js';
import type { LoadedConfig } from '../config/load.js';
import type { AgentConfig, DeviceConfig, StreamConfig, UpstreamConfig } from '../config/types.js';
import type { Connector } from '../connectors/connector.js';
import { createConnector } from '../connectors/index.js';
import { startTimer, TimerSchedule } from '../connectors/timer/timer.js';
import type { ClockGuard } from '../core/clock.js';
import { Forwarder } from '../upstream/forwarder.js';
import type { Outbox } from '../outbox/outbox.js';
import { buildStreams, type StepRuntime } from '../streams/build.js';
import type { Reading } from '../core/reading.js';
import type { StateStore } from '../streams/state.js';
import type { Stream } from '../streams/stream.js';
import { wireStream, type StreamSinks } from '../streams/wiring.js';
import { createUpstream } from '../upstream/index.js';
import type { Upstream } from '../upstream/upstream.js';
import type { ConfigChange } from '../manage/managed-agent.js';
import type { LatestValues } from '../core/latest.js';
import { describeDevice } from './status.js';

export type { Parts, RunningDevice, RunningStream, RunningUpstream } from './parts.js';

/**
 * Stops and forgets each running part whose config is gone or differs from the wanted one
 * (compared as JSON), and names it in `changed`.
 */
export async function removeChanged<C, R extends { config: C }>(
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

function added(change: string[], name: string): void {
  if (!change.includes(name)) change.push(name);
}

export async function stopUpstream({ forwarder, upstream }: RunningUpstream): Promise<void> {
  await forwarder.stop();
  await upstream.close();
}

export function stopDevice({ connector }: RunningDevice, log: Logger): Promise<void> {
  return connector.stop().catch((err) => log.warn({ device: connector.id, err }, 'connector stop failed'));
}

/** Upstreams: each changed one stopped (its forwarder first), each new one started with a forwarder on the outbox. */
export async function reconcileUpstreams(parts: Parts, config: AgentConfig, outbox: Outbox, change: ConfigChange, log: Logger, latest?: LatestValues): Promise<void> {
  await removeChanged(parts.upstreams, config.upstream, (u) => u.name, change.upstreams, stopUpstream);
  for (const upstreamConfig of config.upstream) {
    if (parts.upstreams.has(upstreamConfig.name)) continue;
    const name = upstreamConfig.name;
    const upstream = await createUpstream(upstreamConfig, config.agent.id, log, {
      dataDir: config.agent.data_dir,
      lastSeq: () => outbox.lastSeq,
      device: (id) => parts.devices.get(id)?.config,
      write: (device, point, value) => {
        const running = parts.devices.get(device);
        return running ? running.connector.write(point, value) : Promise.reject(new Error(`device ${device} is not running`));
      },
      report: (event) => outbox.add([name], 'commands', event),
      deviceState: (id) => {
        const running = parts.devices.get(id);
        return running && latest ? describeDevice(running, latest) : undefined;
      },
    });
    const forwarder = new Forwarder(outbox, upstream, log);
    parts.upstreams.set(upstreamConfig.name, { config: upstreamConfig, upstream, forwarder });
    forwarder.start();
    added(change.upstreams, upstreamConfig.name);
  }
  outbox.removeCommitListeners();
  outbox.onCommitted(() => {
    for (const { forwarder } of parts.upstreams.values()) forwarder.wake();
  });
}

/**
 * Devices: each changed one stopped, each new one started, its readings going to `deliver`.
 * `strict`: a connector that cannot be built throws (at start it is logged and left out).
 */
export async function reconcileDevices(
  parts: Parts,
  config: AgentConfig,
  io: { deliver(device: string, reading: Reading): void; report(device: string, event: Reading): void },
  change: ConfigChange,
  strict: boolean,
  log: Logger,
): Promise<void> {
  await removeChanged(parts.devices, config.devices, (d) => d.id, change.devices, (device) => stopDevice(device, log));
  for (const device of config.devices) {
    if (parts.devices.has(device.id)) continue;
    let connector: Connector;
    try {
      connector = await createConnector(device, { log, agentId: config.agent.id, dataDir: config.agent.data_dir, report: (event) => io.report(device.id, event) });
    } catch (err) {
      if (strict) throw new Error(`device ${device.id}: ${(err as Error).message}`, { cause: err });
      log.error({ device: device.id }, (err as Error).message);
      continue;
    }
    parts.devices.set(device.id, { config: device, connector });
    connector.start((reading) => io.deliver(device.id, reading));
    added(change.devices, device.id);
  }
}

/** Streams: each changed one stopped, each new one built with its state and wired to its sinks. */
export async function reconcileStreams(
  parts: Parts,
  loaded: LoadedConfig,
  state: StateStore,
  runtime: StepRuntime,
  clockGuard: ClockGuard,
  sinks: StreamSinks,
  change: ConfigChange,
): Promise<void> {
  const { config } = loaded;
  await removeChanged(parts.streams, config.streams, (s) => s.name, change.streams, (running) => running.stopTimer?.());
  const toBuild = new Set(config.streams.filter((s) => !parts.streams.has(s.name)).map((s) => s.name));
  const built = buildStreams(loaded, runtime, state, toBuild);
  for (const streamConfig of config.streams) {
    const steps = built.get(streamConfig.name);
    if (!toBuild.has(streamConfig.name) || !steps) continue;
    const running: RunningStream = { config: streamConfig, stream: wireStream(streamConfig, steps, sinks), deployed: true };
    parts.streams.set(streamConfig.name, running);
    startStreamTimer(running, config.agent.timezone, clockGuard);
    added(change.streams, streamConfig.name);
  }
}

/** A timer stream's ticks, in the time zone of the config it was built with. */
export function startStreamTimer(running: RunningStream, timezone: string, clockGuard: ClockGuard): void {
  const { timer } = running.config.from;
  if (!timer || !running.deployed) return;
  const schedule = new TimerSchedule(timer, timezone);
  running.stopTimer = startTimer(schedule, (ts) => running.stream.push(clockGuard.admit({ device: 'timer', ts, values: {} })));
}
