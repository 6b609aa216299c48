import { execFile } from 'node:child_process';
import type { Logger } from 'pino';

/**
 * sd_notify through the `systemd-notify` tool: Node cannot send unix datagrams itself, and a
 * native module for two messages is not worth its build. The unit sets NotifyAccess=all.
 */
export function notifySystemd(state: string, log: Logger): void {
  if (!process.env.NOTIFY_SOCKET) return;
  execFile('systemd-notify', [`--pid=${process.pid}`, state], (err) => {
    if (err) log.warn({ err: err.message }, `systemd-notify ${state} failed`);
  });
}

/**
 * Pings the watchdog at half its interval while `healthy(interval ms)` says so; returns a stop
 * function. A stalled event loop stops the pings by itself.
 */
export function startWatchdog(healthy: (interval: number) => boolean, log: Logger): () => void {
  const usec = Number(process.env.WATCHDOG_USEC);
  if (!process.env.NOTIFY_SOCKET || !(usec > 0)) return () => {};
  const interval = usec / 1000;
  const timer = setInterval(() => {
    if (healthy(interval)) notifySystemd('WATCHDOG=1', log);
  }, interval / 2);
  timer.unref();
  return () => clearInterval(timer);
}
