import type { Logger } from 'pino';
import type { Reading, Value } from '../core/reading.js';

/**
 * Owns the one connection to a device or bus: reads (polls or subscriptions) and writes go
 * through it, so a write never collides with a poll.
 */
export interface Connector {
  readonly id: string;
  readonly online: boolean;
  /** Failed reads (Modbus) or malformed payloads (MQTT) since start, where the connector counts them. */
  readonly readErrors?: number;
  /** Starts reading; every reading goes to `deliver`. */
  start(deliver: (reading: Reading) => void): void;
  /**
   * Writes a `writable` point; rejects with an error naming the device and point. Resolves
   * with what was really written, and what the device held afterwards where it is read back.
   */
  write(point: string, value: Value): Promise<WriteOutcome | void>;
  stop(): Promise<void>;
}

/** What a write did: the value as the device received it (after encoding), and a read-back. */
export interface WriteOutcome {
  written: Value;
  /** The point's value read from the device after the write (null: read back, but unreadable). */
  readBack?: Value | null;
}

export interface ConnectorContext {
  log: Logger;
  agentId: string;
  /** agent.data_dir: where a connector keeps files of its own (OPC UA certificates). */
  dataDir?: string;
  /** Sends a device event (DEVICE_OFFLINE, DEVICE_ONLINE) to the upstreams of the device's streams. */
  report?(event: Reading): void;
}

/** What every device's config has; each connector reads the rest through its own schema (config.ts). */
export interface DeviceBase {
  id: string;
  protocol: string;
  points: { name: string; writable?: boolean; [key: string]: unknown }[];
  [key: string]: unknown;
}

export type ConnectorFactory = (device: DeviceBase, context: ConnectorContext) => Promise<Connector>;

/** The DEVICE_ONLINE or DEVICE_OFFLINE event of a device, as connectors report it upstream. */
export function deviceStatusEvent(device: string, online: boolean, description: string): Reading {
  return {
    device,
    ts: Date.now(),
    values: {},
    event: { code: online ? 'DEVICE_ONLINE' : 'DEVICE_OFFLINE', severity: online ? 'info' : 'major', description, state: online ? 'cleared' : 'raised' },
  };
}

/** The point `name` of a device, if it may be written; else a WriteError saying why. */
export function writablePoint<P extends { name: string; writable?: boolean }>(device: string, points: readonly P[], name: string, hint = ''): P {
  const point = points.find((p) => p.name === name);
  if (!point) throw new WriteError(device, name, 'no such point');
  if (!point.writable) throw new WriteError(device, name, `the point is not writable${hint}`);
  return point;
}

export class WriteError extends Error {
  constructor(device: string, point: string, reason: string) {
    super(`device ${device}, point ${point}: ${reason}`);
    this.name = 'WriteError';
  }
}
