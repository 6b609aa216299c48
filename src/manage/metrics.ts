import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { ManagedAgent } from './managed-agent.js';

/**
 * Prometheus metrics, read from the agent's own counters when scraped (nothing is counted
 * twice on the hot path). Process memory, CPU and event-loop lag come from prom-client's
 * default metrics (`process_resident_memory_bytes`, `nodejs_eventloop_lag_seconds`, …).
 */
export function createMetrics(agent: ManagedAgent): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 20 });

  // Each metric reads its values from the agent when scraped: `read` calls `set` per label set.
  type Read = (set: (labels: Record<string, string>, value: number) => void) => void;
  const counter = (name: string, help: string, labelNames: string[], read: Read) =>
    new Counter({ name, help, labelNames, registers: [registry], collect() {
      this.reset();
      read((labels, value) => this.inc(labels, value));
    } });
  const gauge = (name: string, help: string, labelNames: string[], read: Read) =>
    new Gauge({ name, help, labelNames, registers: [registry], collect() {
      this.reset();
      read((labels, value) => this.set(labels, value));
    } });

  counter('edge_stream_readings_in_total', 'Readings that entered a stream', ['stream'], (set) => {
    for (const stream of agent.streamStatus()) set({ stream: stream.name }, stream.readings_in);
  });
  counter('edge_stream_errors_total', 'Readings a step of the stream failed on (dropped, logged once per spell)', ['stream'], (set) => {
    for (const stream of agent.streamStatus()) set({ stream: stream.name }, stream.errors);
  });
  counter('edge_stream_readings_out_total', 'Readings a stream passed to its sinks', ['stream'], (set) => {
    for (const stream of agent.streamStatus()) set({ stream: stream.name }, stream.readings_out);
  });
  counter('edge_stream_step_events_total', 'What a step counted (drops, missing values, late readings), by step', ['stream', 'step', 'operator', 'kind'], (set) => {
    for (const stream of agent.streamStatus()) {
      for (const [key, value] of Object.entries(stream.counters)) {
        const [step, operator, kind] = key.split('.');
        set({ stream: stream.name, step, operator, kind }, value);
      }
    }
  });
  gauge('edge_stream_deployed', '1 while a stream is deployed', ['stream'], (set) => {
    for (const stream of agent.streamStatus()) set({ stream: stream.name }, stream.deployed ? 1 : 0);
  });
  gauge('edge_device_online', '1 while a device answers', ['device', 'protocol'], (set) => {
    for (const device of agent.deviceStatus()) set({ device: device.id, protocol: device.protocol }, device.online ? 1 : 0);
  });
  counter('edge_device_read_errors_total', 'Failed reads (Modbus) and malformed payloads (MQTT) of a device', ['device'], (set) => {
    for (const device of agent.deviceStatus()) if (device.read_errors !== undefined) set({ device: device.id }, device.read_errors);
  });
  gauge('edge_outbox_depth', 'Records waiting for an upstream', ['upstream'], (set) => {
    for (const upstream of agent.outboxStatus().upstreams) set({ upstream: upstream.name }, upstream.depth);
  });
  gauge('edge_outbox_oldest_age_seconds', 'Age of the oldest record waiting for an upstream', ['upstream'], (set) => {
    for (const upstream of agent.outboxStatus().upstreams) set({ upstream: upstream.name }, upstream.oldest_age_ms / 1000);
  });
  counter('edge_outbox_dropped_total', 'Records dropped before delivery (outbox full, too old)', ['upstream', 'reason'], (set) => {
    for (const { name, drops } of agent.outboxStatus().upstreams) for (const [reason, value] of Object.entries(drops)) set({ upstream: name, reason }, value);
  });
  counter('edge_outbox_dead_lettered_total', 'Records an upstream refused for good (moved to the dead-letter table)', ['upstream'], (set) => {
    for (const upstream of agent.outboxStatus().upstreams) set({ upstream: upstream.name }, upstream.dead_lettered);
  });
  counter('edge_upstream_sent_total', 'Records an upstream acknowledged', ['upstream'], (set) => {
    for (const upstream of agent.outboxStatus().upstreams) set({ upstream: upstream.name }, upstream.sent);
  });
  counter('edge_upstream_errors_total', 'Failed sends to an upstream (retried)', ['upstream'], (set) => {
    for (const upstream of agent.outboxStatus().upstreams) set({ upstream: upstream.name }, upstream.errors);
  });
  gauge('edge_upstream_connected', '1 while an upstream can take records', ['upstream'], (set) => {
    for (const upstream of agent.outboxStatus().upstreams) set({ upstream: upstream.name }, upstream.connected ? 1 : 0);
  });
  gauge('edge_upstream_retrying', '1 from a failed send until a send succeeds again', ['upstream'], (set) => {
    for (const upstream of agent.outboxStatus().upstreams) set({ upstream: upstream.name }, upstream.retrying ? 1 : 0);
  });
  counter('edge_readings_untimely_total', 'Readings whose ts was too far ahead (agent.max_future) or before agent.min_time: passed as bad', [], (set) => set({}, agent.clockStatus().untimely));
  counter('edge_readings_estimated_total', 'Readings marked estimated because the system clock was not synchronized', [], (set) => set({}, agent.clockStatus().estimated));
  counter('edge_clock_steps_total', 'Steps of the system clock seen (polls and timers re-aligned)', [], (set) => set({}, agent.clockStatus().steps));
  gauge('edge_clock_synchronized', '1 while the system clock is synchronized, 0 while not (absent when unknown)', [], (set) => {
    const { synchronized } = agent.clockStatus();
    if (synchronized !== undefined) set({}, synchronized ? 1 : 0);
  });
  gauge('edge_config_info', 'The running config version', ['version'], (set) => set({ version: String(agent.config.version ?? '') }, 1));
  return registry;
}
