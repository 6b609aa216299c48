import type { Connector, WriteOutcome } from '../connectors/connector.js';
import type { Outbox } from '../outbox/outbox.js';
import type { Reading, Value } from '../core/reading.js';
import type { Stream } from '../streams/stream.js';
import type { StreamConfig } from '../config/types.js';

const RECENT_EVENTS = 50;

/**
 * Where things go: a device's readings to the deployed streams that read it, a stream's
 * records and a device's status events to the outbox for their upstreams, an action's write to
 * the device's connector as it runs now.
 */
export class Router {
  /** The streams each device feeds, and the upstreams its status events go to. */
  private streamsOf = new Map<string, Stream[]>();
  private upstreamsOf = new Map<string, string[]>();
  /** Events that went upstream lately, newest last (for the status page). */
  readonly recentEvents: Reading[] = [];

  constructor(
    private readonly outbox: () => Outbox,
    private readonly connectorOf: (device: string) => Connector | undefined,
  ) {}

  /** Recomputes the routes from the running streams. */
  route(streams: Iterable<{ config: StreamConfig; stream: Stream; deployed: boolean }>): void {
    const streamsOf = new Map<string, Stream[]>();
    const upstreamsOf = new Map<string, string[]>();
    for (const { config, stream, deployed } of streams) {
      const device = config.from.device;
      if (!device) continue;
      if (deployed) streamsOf.set(device, [...(streamsOf.get(device) ?? []), stream]);
      const upstreams = config.to.filter((t): t is string => typeof t === 'string');
      upstreamsOf.set(device, [...new Set([...(upstreamsOf.get(device) ?? []), ...upstreams])]);
    }
    this.streamsOf = streamsOf;
    this.upstreamsOf = upstreamsOf;
  }

  /**
   * A reading of the configured device `device` (a template device's readings carry the ids it
   * makes), to every deployed stream that reads it.
   */
  deliver(device: string, reading: Reading): void {
    const streams = this.streamsOf.get(device);
    if (streams) for (const stream of streams) stream.push(reading);
  }

  /** A status event of the configured device `device`, to the upstreams of the streams that read it. */
  report(device: string, event: Reading): void {
    const upstreams = this.upstreamsOf.get(device);
    if (upstreams?.length) this.send(upstreams, 'devices', event);
  }

  send(upstreams: readonly string[], stream: string, reading: Reading): void {
    this.outbox().add(upstreams, stream, reading);
    if (reading.event) {
      this.recentEvents.push({ ...reading, stream } as Reading);
      if (this.recentEvents.length > RECENT_EVENTS) this.recentEvents.shift();
    }
  }

  /** Writes through the device's connector as it runs now (it may have been replaced since the action was built). */
  write(device: string, point: string, value: Value): Promise<WriteOutcome | void> {
    const connector = this.connectorOf(device);
    if (!connector) return Promise.reject(new Error(`device ${device} is not running`));
    return connector.write(point, value);
  }
}
