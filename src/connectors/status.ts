import { deviceStatusEvent, type ConnectorContext } from './connector.js';

/** Consecutive failed polls before a device is reported offline, where its config does not say. */
export const DEFAULT_OFFLINE_AFTER = 3;

/**
 * Whether a device answers, smoothed, for any connector: `offlineAfter` failures in a row make
 * it offline (DEVICE_OFFLINE, a warning), one success makes it online again (DEVICE_ONLINE, an
 * info line). A polled device that fails every other poll so stays online instead of raising
 * and clearing an event twice a minute; a connection-based one (MQTT, OPC UA) reports each
 * loss at once with `offlineAfter` 1. Until the device has first answered or been given up on,
 * it is neither: the first answer is the expected state, not news, and makes no event (one
 * info line).
 */
export class DeviceStatus {
  online = false;
  /** Failures since the last success. */
  failures = 0;
  private known = false;

  constructor(
    private readonly device: string,
    private readonly context: ConnectorContext,
    readonly offlineAfter = DEFAULT_OFFLINE_AFTER,
  ) {}

  /** An answer (a good poll, a connection made): online at once. */
  succeeded(description = `device ${this.device} answers again`): void {
    this.failures = 0;
    if (this.online) return;
    this.online = true;
    const first = !this.known;
    this.known = true;
    if (first) {
      // the expected state, not an event; but a person tailing the log wants to see it once
      this.context.log.info({ device: this.device }, `device ${this.device} online`);
      return;
    }
    this.context.log.info({ device: this.device }, description);
    this.context.report?.(deviceStatusEvent(this.device, true, description));
  }

  /** No usable answer (a failed poll, a lost or refused connection), with why: offline once `offlineAfter` fail in a row. */
  failed(reason: string, description = `device ${this.device} does not answer (${this.failures + 1} polls in a row): ${reason}`): void {
    this.failures++;
    if ((this.known && !this.online) || this.failures < this.offlineAfter) return;
    this.online = false;
    this.known = true;
    this.context.log.warn({ device: this.device }, description);
    this.context.report?.(deviceStatusEvent(this.device, false, description));
  }
}
