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
  /** The streams each configured device feeds, and the upstreams its status events go to: found on first use. */
  private streamsOf = new Map<string, Stream[]>();
  private upstreamsOf = new Map<string, string[]>();
  private streams: { config: StreamConfig; stream: Stream; deployed: boolean }[] = [];
  /** Events that went upstream lately, newest last (for the status page). */
  readonly recentEvents: Reading[] = [];

  constructor(
    private readonly outbox: () => Outbox,
    private readonly connectorOf: (device: string) => Connector | undefined,
  ) {}

  /** Takes the running streams; the routes of each device are worked out at its first reading. */
  route(streams: Iterable<{ config: StreamConfig; stream: Stream; deployed: boolean }>): void {
    this.streams = [...streams];
    this.streamsOf = new Map();
    this.upstreamsOf = new Map();
  }

  /**
   * A reading of the configured device `device` (a template device's readings carry the ids it
   * makes), to every deployed stream that reads it.
   */
  deliver(device: string, reading: Reading): void {
    let streams = this.streamsOf.get(device);
    // keyed by configured ids only (a template's readings come under its id): a bounded map
    if (!streams) this.streamsOf.set(device, (streams = this.streams.filter((s) => s.deployed && s.stream.reads(device)).map((s) => s.stream)));
    for (const stream of streams) stream.push(reading);
  }

  /** A status event of the configured device `device`, to the upstreams of the streams that read it. */
  report(device: string, event: Reading): void {
    let upstreams = this.upstreamsOf.get(device);
    if (!upstreams) {
      const reading = this.streams.filter((s) => s.stream.reads(device));
      this.upstreamsOf.set(device, (upstreams = [...new Set(reading.flatMap((s) => s.config.to.filter((t): t is string => typeof t === 'string')))]));
    }
    if (upstreams.length > 0) this.send(upstreams, 'devices', event);
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
