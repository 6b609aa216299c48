import { ConfigError, type ConfigIssue } from '../core/config-error.js';
import type { LoadedConfig } from '../config/load.js';
import type { StreamConfig } from '../config/types.js';
import { TimerSchedule } from '../connectors/timer/timer.js';
import { connectors, type ConnectorPlugin } from '../connectors/index.js';
import { checkManagement } from '../config/management.js';
import { upstreams as upstreamPlugins, type UpstreamPlugin } from '../upstream/index.js';
import { operators as registry } from '../operators/index.js';
import { memoryState, type Operator } from '../operators/operator.js';
import { FreshLatest, LatestValues } from '../core/latest.js';
import { deviceMatcher, isGlob } from './source.js';
import type { StateStore } from './state.js';

/** What steps need from the agent that runs them. */
export interface StepRuntime {
  now(): number;
  latest: LatestValues;
}

export interface BuiltStream {
  steps: Operator[];
  /** Per-step counts: `<step>.<operator>.<name>` (drops, missing values, late readings). */
  counters: Map<string, number>;
}

/**
 * Checks what the schema cannot (names that refer to each other, step parameters) and builds
 * each stream's steps, with their state in `state` (without one, in memory: validation needs
 * no database). Throws one ConfigError with every issue found.
 */
export function buildStreams(
  loaded: LoadedConfig,
  runtime: StepRuntime = { now: Date.now, latest: new LatestValues() },
  state?: StateStore,
  /** Builds only these streams (a reload that leaves the others running); all are checked. */
  only?: ReadonlySet<string>,
): Map<string, BuiltStream> {
  const issues = checkReferences(loaded);
  const built = new Map<string, BuiltStream>();
  const scopeOf = (name: string) => (state ? state.scope(name) : memoryState());
  loaded.config.streams.forEach((stream, s) => {
    if (only && !only.has(stream.name)) return;
    const steps: Operator[] = [];
    const counters = new Map<string, number>();
    const reads = deviceMatcher(stream.from);
    const devices = loaded.config.devices.map((d) => d.id).filter(reads);
    const latest = stream.from.max_age === undefined ? runtime.latest : new FreshLatest(runtime.latest, stream.from.max_age);
    stream.steps.forEach((step, index) => {
      const [operator, params] = Object.entries(step)[0];
      const path = ['streams', s, 'steps', index];
      // built once per name: a step may count per reading (change's `unchanged`)
      const counterNames = new Map<string, string>();
      try {
        steps.push(
          registry[operator](params, {
            stream: stream.name,
            index,
            state: scopeOf(stateScope(stream, index)),
            now: runtime.now,
            latest,
            devices,
            timezone: loaded.config.agent.timezone,
            maxFuture: loaded.config.agent.max_future,
            count: (name, n = 1) => {
              let counter = counterNames.get(name);
              if (counter === undefined) counterNames.set(name, (counter = `${index + 1}.${operator}.${name}`));
              counters.set(counter, (counters.get(counter) ?? 0) + n);
            },
            issue: (message, key) =>
              loaded.issueAt(key ? [...path, operator, key] : [...path, operator], `stream ${stream.name}, step ${index + 1} (${operator}): ${message}`),
          }),
        );
      } catch (err) {
        if (err instanceof ConfigError) issues.push(...err.issues);
        else issues.push(loaded.issueAt(path, `stream ${stream.name}, step ${index + 1} (${operator}): ${(err as Error).message}`));
      }
    });
    built.set(stream.name, { steps, counters });
  });
  if (issues.length > 0) throw new ConfigError(issues);
  return built;
}

/** Checks everything about a loaded config that the schema cannot; throws ConfigError. Needs no database. */
export function validateConfig(loaded: LoadedConfig): void {
  try {
    buildStreams(loaded);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    // whatever a config makes a step throw is the config's fault: rejected, not a crash
    throw new ConfigError([{ file: loaded.file, path: '', message: `cannot build the streams: ${(err as Error)?.message ?? String(err)}` }]);
  }
}

/** State survives a restart under the stream's name and the step's position and kind. */
export function stateScope(stream: StreamConfig, index: number): string {
  return `${stream.name}/${index}/${Object.keys(stream.steps[index])[0]}`;
}

function checkReferences({ config, issueAt }: LoadedConfig): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const unique = (section: 'devices' | 'streams' | 'upstream', key: 'id' | 'name', names: string[]) => {
    const seen = new Set<string>();
    names.forEach((name, i) => {
      if (seen.has(name)) issues.push(issueAt([section, i, key], `${key} "${name}" is used twice in ${section}`));
      seen.add(name);
    });
  };
  unique('devices', 'id', config.devices.map((d) => d.id));
  unique('streams', 'name', config.streams.map((s) => s.name));
  unique('upstream', 'name', config.upstream.map((u) => u.name));

  const devices = new Map(config.devices.map((d) => [d.id, d]));
  const upstreams = new Set(config.upstream.map((u) => u.name));
  config.devices.forEach((device, d) => {
    const points = new Set<string>();
    device.points.forEach((point, p) => {
      if (points.has(point.name)) issues.push(issueAt(['devices', d, 'points', p, 'name'], `device ${device.id}: point "${point.name}" is defined twice`));
      points.add(point.name);
    });
  });

  config.streams.forEach((stream, s) => {
    issues.push(...checkSource(stream, s, config.agent.timezone, devices, issueAt));
    stream.to.forEach((sink, k) => {
      if (typeof sink === 'string') {
        if (!upstreams.has(sink)) issues.push(issueAt(['streams', s, 'to', k], `stream ${stream.name}: no upstream "${sink}" (upstreams: ${[...upstreams].join(', ') || 'none'})`));
        return;
      }
      const { device: target, point } = sink.action;
      const path = ['streams', s, 'to', k, 'action'];
      const targetDevice = devices.get(target);
      const targetPoint = targetDevice?.points.find((p) => p.name === point);
      if (!targetDevice) issues.push(issueAt([...path, 'device'], `stream ${stream.name}: action on unknown device "${target}"`));
      else if (!targetPoint) issues.push(issueAt([...path, 'point'], `stream ${stream.name}: device ${target} has no point "${point}"`));
      else if (!targetPoint.writable) issues.push(issueAt([...path, 'point'], `stream ${stream.name}: point ${target}.${point} is not writable (set writable: true on the point)`));
    });
  });

  issues.push(...checkManagement(config.agent, issueAt));
  config.devices.forEach((device, d) => {
    const plugin: ConnectorPlugin = connectors[device.protocol];
    issues.push(...(plugin.check?.(device, ['devices', d], issueAt) ?? []));
  });
  config.upstream.forEach((upstream, u) => {
    const plugin: UpstreamPlugin = upstreamPlugins[upstream.type];
    issues.push(...(plugin.check?.(upstream, ['upstream', u], issueAt) ?? []));
  });
  return issues;
}

/** A stream's `from`: a timer, or devices that exist (an id, a glob that matches some, a list), and points they offer. */
function checkSource(
  stream: StreamConfig,
  s: number,
  timezone: string,
  devices: ReadonlyMap<string, { points: { name: string }[] }>,
  issueAt: LoadedConfig['issueAt'],
): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const { device, devices: listed, points, timer } = stream.from;
  const at = (...path: (string | number)[]) => ['streams', s, 'from', ...path];
  const known = () => [...devices.keys()].join(', ') || 'none';
  if (timer) {
    if (device || listed) issues.push(issueAt(at(), `stream ${stream.name}: "from" takes devices or a timer, not both`));
    try {
      new TimerSchedule(timer, timezone);
    } catch (err) {
      issues.push(issueAt(at('timer'), `stream ${stream.name}: ${(err as Error).message}`));
    }
    return issues;
  }
  if (device !== undefined && listed) issues.push(issueAt(at(), `stream ${stream.name}: "from" takes "device" (an id or a glob) or "devices" (a list), not both`));
  if (device === undefined && !listed) issues.push(issueAt(at(), `stream ${stream.name}: "from" needs a device, devices or a timer`));
  const read: string[] = [];
  if (listed) {
    listed.forEach((id, i) => {
      if (devices.has(id)) read.push(id);
      else issues.push(issueAt(at('devices', i), `stream ${stream.name}: no device "${id}" (devices: ${known()})`));
    });
  } else if (device !== undefined && isGlob(device)) {
    read.push(...[...devices.keys()].filter(deviceMatcher(stream.from)));
    if (read.length === 0) issues.push(issueAt(at('device'), `stream ${stream.name}: "${device}" matches no device (devices: ${known()})`));
  } else if (device !== undefined) {
    if (devices.has(device)) read.push(device);
    else issues.push(issueAt(at('device'), `stream ${stream.name}: no device "${device}" (devices: ${known()})`));
  }
  if (read.length === 0) return issues;
  const offered = new Set(read.flatMap((id) => devices.get(id)!.points.map((p) => p.name)));
  const whose = read.length === 1 ? `device ${read[0]} has` : `none of its devices (${read.join(', ')}) has`;
  points?.forEach((point, p) => {
    if (!offered.has(point)) issues.push(issueAt(at('points', p), `stream ${stream.name}: ${whose} no point "${point}"`));
  });
  return issues;
}
