import { ConfigError, type ConfigIssue } from '../core/config-error.js';
import type { LoadedConfig } from '../config/load.js';
import type { StreamConfig } from '../config/types.js';
import { TimerSchedule } from '../connectors/timer/timer.js';
import { connectors, type ConnectorPlugin } from '../connectors/index.js';
import { checkManagement } from '../config/management.js';
import { upstreams as upstreamPlugins, type UpstreamPlugin } from '../upstream/index.js';
import { operators as registry } from '../operators/index.js';
import { memoryState, type Operator } from '../operators/operator.js';
import { LatestValues } from '../core/latest.js';
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
            latest: runtime.latest,
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
    const { device, points, timer } = stream.from;
    if (timer) {
      if (device) issues.push(issueAt(['streams', s, 'from'], `stream ${stream.name}: "from" takes a device or a timer, not both`));
      try {
        new TimerSchedule(timer, config.agent.timezone);
      } catch (err) {
        issues.push(issueAt(['streams', s, 'from', 'timer'], `stream ${stream.name}: ${(err as Error).message}`));
      }
    } else if (!device) {
      issues.push(issueAt(['streams', s, 'from'], `stream ${stream.name}: "from" needs a device or a timer`));
    } else if (!devices.has(device)) {
      issues.push(issueAt(['streams', s, 'from', 'device'], `stream ${stream.name}: no device "${device}" (devices: ${[...devices.keys()].join(', ') || 'none'})`));
    } else {
      const known = new Set(devices.get(device)!.points.map((p) => p.name));
      points?.forEach((point, p) => {
        if (!known.has(point)) issues.push(issueAt(['streams', s, 'from', 'points', p], `stream ${stream.name}: device ${device} has no point "${point}"`));
      });
    }
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
