import type { DeviceStatus, OutboxStatus, StepInstance, StreamStatus } from '../manage/managed-agent.js';
import { stateScope } from '../streams/build.js';
import type { StateStore } from '../streams/state.js';
import { noDrops, type Outbox } from '../outbox/outbox.js';
import type { LatestValues } from '../core/latest.js';
import type { RunningDevice, RunningStream, RunningUpstream } from './parts.js';

/** The status of the running parts as the API, metrics and status page show it. */
export function describeStream({ config, stream, deployed }: RunningStream): StreamStatus {
  return {
    name: config.name,
    from: config.from,
    steps: config.steps.map((step) => Object.keys(step)[0]),
    to: config.to.map((sink) => (typeof sink === 'string' ? sink : `action:${sink.action.device}.${sink.action.point}`)),
    deployed,
    readings_in: stream.readingsIn,
    readings_out: stream.readingsOut,
    errors: stream.errors,
    counters: Object.fromEntries(stream.counters),
  };
}

/** Each step of a running stream: readings it took, its counters, its state keys, when it last worked. */
export function describeInstances({ config, stream }: RunningStream, state: StateStore): StepInstance[] {
  return config.steps.map((step, index) => {
    const operator = Object.keys(step)[0];
    const prefix = `${index + 1}.${operator}.`;
    const counters: Record<string, number> = {};
    for (const [name, n] of stream.counters) if (name.startsWith(prefix)) counters[name.slice(prefix.length)] = n;
    return {
      step: index + 1,
      operator,
      readings_in: stream.stepReadings[index],
      counters,
      state_keys: state.keyCount(stateScope(config, index)),
      last_active: stream.stepActiveAt[index] || null,
    };
  });
}

/**
 * A device with the latest sample of each point and, beside it, the latest good value with its
 * time (`last_good`, null while none came): an offline device's points are `bad`, but what it
 * last held stays visible, as the stream platforms keep a device's state.
 */
export function describeDevice({ config, connector }: RunningDevice, latest: LatestValues): DeviceStatus {
  const good = latest.goodOf(config.id);
  const points: DeviceStatus['points'] = {};
  for (const [name, sample] of latest.samplesOf(config.id)) {
    const last = good.get(name);
    points[name] = { ...sample, last_good: last ? { value: last.value, ts: last.ts } : null };
  }
  return { id: config.id, protocol: config.protocol, online: connector.online, read_errors: connector.readErrors, points };
}

export function describeOutbox(upstreams: ReadonlyMap<string, RunningUpstream>, outbox: Outbox, now = Date.now()): OutboxStatus {
  return {
    upstreams: [...upstreams.entries()].map(([name, { config, upstream, forwarder }]) => ({
      name,
      type: config.type,
      connected: upstream.connected,
      retrying: forwarder.retrying,
      depth: outbox.depth(name),
      oldest_age_ms: outbox.oldestAge(name, now),
      drops: outbox.drops.get(name) ?? noDrops(),
      dead_lettered: outbox.deadLettered.get(name) ?? 0,
      sent: forwarder.sent,
      errors: forwarder.errors,
    })),
    last_seq: outbox.lastSeq,
  };
}
