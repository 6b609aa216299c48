import { deviceStatusEvent, type ConnectorContext } from './connector.js';

/** Consecutive failed polls before a device is reported offline, where its config does not say. */
export const DEFAULT_OFFLINE_AFTER = 3;

/**
 * Whether a device answers, smoothed: one failed poll is a glitch, `offlineAfter` failed polls
 * in a row make it offline (DEVICE_OFFLINE, a warning), one good poll makes it online again
 * (DEVICE_ONLINE, an info line). A device that fails every other poll so stays online instead
 * of raising and clearing an event twice a minute. One per device, for any connector.
 */
export class DeviceStatus {
  online = true;
  /** Failed polls since the last good one. */
  failures = 0;

  constructor(
    private readonly device: string,
    private readonly context: ConnectorContext,
    readonly offlineAfter = DEFAULT_OFFLINE_AFTER,
  ) {}

  /** A poll that got an answer: online at once. */
  succeeded(): void {
    this.failures = 0;
    if (this.online) return;
    this.online = true;
    const description = `device ${this.device} answers again`;
    this.context.log.info({ device: this.device }, description);
    this.context.report?.(deviceStatusEvent(this.device, true, description));
  }

  /** A poll that got no usable answer, with why: offline once `offlineAfter` fail in a row. */
  failed(reason: string): void {
    this.failures++;
    if (!this.online || this.failures < this.offlineAfter) return;
    this.online = false;
    const description = `device ${this.device} does not answer (${this.failures} polls in a row): ${reason}`;
    this.context.log.warn({ device: this.device }, description);
    this.context.report?.(deviceStatusEvent(this.device, false, description));
  }
}
