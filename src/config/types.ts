/**
 * The config after loading: durations in ms, sizes in bytes, defaults filled in. Each part's
 * type is derived from its schema, declared beside its code (a plugin's config.ts, the agent's
 * sections in schema.ts); this file only puts them together.
 */
import type { Static } from '@sinclair/typebox';
import type { connectors } from '../connectors/index.js';
import type { RemoteConfig } from './management.js';
import type { OutboxConfig } from '../outbox/config.js';
import type { upstreams } from '../upstream/index.js';
import type { AgentSection, StreamConfig } from './schema.js';

export type { TlsConfig } from '../core/config-kit.js';
export type { ActionSinkConfig, AgentSection, SinkConfig, StepConfig, StreamConfig } from './schema.js';
export type { OutboxConfig } from '../outbox/config.js';

/** What the agent knows of every device, whatever its protocol (the connector has its exact type). */
export interface PointConfig {
  name: string;
  writable?: boolean;
  [key: string]: unknown;
}

export interface DeviceConfig {
  id: string;
  protocol: keyof typeof connectors;
  poll?: number;
  points: PointConfig[];
  [key: string]: unknown;
}

/** One of the upstreams in src/upstream/index.ts. */
export type UpstreamConfig = { [T in keyof typeof upstreams]: Static<(typeof upstreams)[T]['schema']> }[keyof typeof upstreams];

export interface AgentConfig {
  version?: string | number;
  agent: AgentSection;
  devices: DeviceConfig[];
  streams: StreamConfig[];
  upstream: UpstreamConfig[];
  outbox: OutboxConfig;
  remote_config?: RemoteConfig;
}
