import { ConfigError, type ConfigIssue } from '../config/errors.js';
import type { LoadedConfig } from '../config/load.js';
import type { StreamConfig } from '../config/types.js';
import { hasConnector } from '../connectors/index.js';
import { TimerSchedule } from '../connectors/timer/timer.js';
import { hasUpstream } from '../upstream/index.js';
import { parseHostPort } from '../config/units.js';
import { processors as registry } from '../processors/index.js';
import type { Processor } from '../processors/processor.js';
import { LatestValues } from './latest.js';
import type { StateStore } from './state.js';

/** What steps need from the agent that runs them. */
export interface StepRuntime {
  now(): number;
  latest: LatestValues;
}

export interface BuiltStream {
  steps: Processor[];
  /** Per-step counts: `<step>.<operator>.<name>` (drops, missing values, late readings). */
  counters: Map<string, number>;
}

export interface BuiltProcessors {
  /** The processors of each stream that can run. */
  streams: Map<string, BuiltStream>;
  /**
   * Parts of the config that are valid but that this build cannot run yet (a protocol,
   * operator or upstream type whose issue has not landed): reported, and left out.
   */
  unavailable: ConfigIssue[];
}

/**
 * Checks what the schema cannot (names that refer to each other, operators this build has)
 * and builds each stream's processors. Throws one ConfigError with every issue found.
 */
export function buildProcessors(
  loaded: LoadedConfig,
  state: StateStore,
  runtime: StepRuntime = { now: Date.now, latest: new LatestValues() },
  /** Builds only these streams (a reload that leaves the others running); all are checked. */
  only?: ReadonlySet<string>,
): BuiltProcessors {
  const { issues, unavailable } = checkReferences(loaded);
  const built = new Map<string, BuiltStream>();
  loaded.config.streams.forEach((stream, s) => {
    if (only && !only.has(stream.name)) return;
    let runnable = true;
    const steps: Processor[] = [];
    const counters = new Map<string, number>();
    stream.steps.forEach((step, index) => {
      const [operator, params] = Object.entries(step)[0];
      const path = ['streams', s, 'steps', index];
      const factory = registry[operator];
      if (!factory) {
        unavailable.push(loaded.issueAt([...path, operator], `stream ${stream.name}, step ${index + 1}: operator "${operator}" is not available in this build yet; the stream will not run`));
        runnable = false;
        return;
      }
      try {
        steps.push(
          factory(params, {
            stream: stream.name,
            index,
            state: state.scope(stateScope(stream, index)),
            now: runtime.now,
            latest: runtime.latest,
            timezone: loaded.config.agent.timezone,
            maxFuture: loaded.config.agent.max_future,
            count: (name, n = 1) => {
              const counter = `${index + 1}.${operator}.${name}`;
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
    if (runnable) built.set(stream.name, { steps, counters });
  });
  if (issues.length > 0) throw new ConfigError(issues);
  return { streams: built, unavailable };
}

/** State survives a restart under the stream's name and the step's position and kind. */
export function stateScope(stream: StreamConfig, index: number): string {
  return `${stream.name}/${index}/${Object.keys(stream.steps[index])[0]}`;
}

function checkReferences({ config, issueAt }: LoadedConfig): { issues: ConfigIssue[]; unavailable: ConfigIssue[] } {
  const issues: ConfigIssue[] = [];
  const unavailable: ConfigIssue[] = [];
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
    if (!hasConnector(device.protocol)) {
      unavailable.push(issueAt(['devices', d, 'protocol'], `device ${device.id}: protocol ${device.protocol} is not available in this build yet; the device will not be read`));
    }
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

  const { http, http_token } = config.agent;
  if (http !== 'off' && !http_token && !isLoopback(http)) {
    issues.push(issueAt(['agent', 'http'], `the management API on ${http} is reachable from the network: set agent.http_token (16 characters or more), which clients send as "Authorization: Bearer <token>"`));
  }

  config.upstream.forEach((upstream, u) => {
    if (!hasUpstream(upstream.type)) {
      unavailable.push(issueAt(['upstream', u, 'type'], `upstream ${upstream.name}: type ${upstream.type} is not available in this build yet; its records wait in the outbox`));
    }
    if (upstream.type === 'kafka' && upstream.idempotent && upstream.acks !== 'all' && upstream.acks !== -1) {
      issues.push(issueAt(['upstream', u, 'idempotent'], `upstream ${upstream.name}: an idempotent producer needs acks: all (set idempotent: false to use acks: ${upstream.acks})`));
    }
  });
  return { issues, unavailable };
}

/** True for an address only this machine can reach: 127.0.0.0/8, ::1, localhost. */
export function isLoopback(hostPort: string): boolean {
  const { host } = parseHostPort(hostPort);
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
