import type { Logger } from 'pino';
import type { Agent } from './agent/agent.js';

/** Totals since start, to print the difference since the last summary. */
interface Totals {
  readings: number;
  sent: number;
  dropped: number;
}

function totals(agent: Agent): Totals {
  let readings = 0;
  for (const stream of agent.streamStatus()) readings += stream.readings_in;
  let sent = 0;
  let dropped = 0;
  for (const upstream of agent.outboxStatus().upstreams) {
    sent += upstream.sent;
    for (const count of Object.values(upstream.drops)) dropped += count;
  }
  return { readings, sent, dropped };
}

/**
 * Every `agent.log_summary` (1m by default; 0s: never), one line that says the agent works:
 * `last 1m: 240 readings in, 480 records sent, 0 queued, 1/1 devices online, 0 dropped`.
 * Readings are counted per stream (one reading that two streams take counts twice); queued is
 * what the outbox holds for all upstreams now. Returns a stop function.
 */
export function startSummary(agent: Agent, log: Logger): () => void {
  let previous = totals(agent);
  let timer: NodeJS.Timeout | undefined;
  const schedule = () => {
    const every = agent.config.agent.log_summary;
    // a config applied meanwhile may turn it on again: look at the setting once a minute
    timer = setTimeout(tick, every > 0 ? every : 60_000, every);
    timer.unref();
  };
  const tick = (every: number) => {
    if (every > 0) {
      const now = totals(agent);
      const devices = agent.deviceStatus();
      const online = devices.filter((d) => d.online).length;
      const queued = agent.outboxStatus().upstreams.reduce((sum, u) => sum + u.depth, 0);
      const summary = { readings: now.readings - previous.readings, sent: now.sent - previous.sent, queued, online, devices: devices.length, dropped: now.dropped - previous.dropped };
      previous = now;
      log.info(
        { summary },
        `last ${formatInterval(every)}: ${summary.readings} readings in, ${summary.sent} records sent, ${queued} queued, ${online}/${devices.length} devices online, ${summary.dropped} dropped`,
      );
    }
    schedule();
  };
  schedule();
  return () => clearTimeout(timer);
}

function formatInterval(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  return `${ms / 1000}s`;
}
