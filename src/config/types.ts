/** The config after loading: durations in ms, sizes in bytes, defaults filled in. */

export type Value = number | boolean | string;

export interface AgentSection {
  id: string;
  data_dir: string;
  log_level: string;
  /** host:port of the management API, metrics and status page, or `off`. */
  http: string;
  /** Bearer token the API requires; needed when `http` is not on loopback. */
  http_token?: string;
  timezone: string;
  /** ms: a reading whose ts is further ahead of the agent's clock is not believed (quality bad). */
  max_future: number;
  /** ISO date: a reading before it is not believed (a device or agent clock that lost its time). */
  min_time: string;
  /** How to tell whether the system clock is synchronized: `auto`, `off`, or a file that exists when it is. */
  clock_sync: string;
  /** ms a stream step's per-key state may stay unused before it is pruned (unless still owed). */
  state_ttl: number;
  /** Keys of each stream step's state held in memory; the rest stay in SQLite until used. */
  state_cache: number;
  /** Devices whose latest values are kept (for expressions and the API). */
  max_latest_devices: number;
}

export interface PointConfig {
  name: string;
  writable?: boolean;
  [key: string]: unknown;
}

export interface DeviceConfig {
  id: string;
  protocol: 'modbus-tcp' | 'modbus-rtu' | 'opcua' | 'mqtt' | 'simulator';
  poll?: number;
  /** Failed polls in a row before DEVICE_OFFLINE (default 3; Modbus devices so far). */
  offline_after?: number;
  points: PointConfig[];
  [key: string]: unknown;
}

/** OPC UA device keys with a default; devices are not filled in by the loader, the connector applies these. */
export interface OpcuaDeviceOptions {
  /** ms a connection attempt (TCP, Hello, secure channel, session) may take; default 10 s */
  connect_timeout?: number;
  /** ms, the longest wait between two connection attempts; default 30 s */
  reconnect_max?: number;
  /** ms without an update before a monitored point is read to tell "unchanged" from "dead"; default 3 × max(sampling, publishing interval), at least 5 s; also on a point */
  stale_after?: number;
}

export interface SimulatorPointConfig extends PointConfig {
  signal?: 'sine' | 'counter' | 'random' | 'step' | 'constant';
  min?: number;
  max?: number;
  period?: number;
  rate?: number;
  start?: number;
  step?: number;
  value?: Value;
}

export type StepConfig = Record<string, unknown>;

export interface ActionSinkConfig {
  device: string;
  point: string;
  value: Value;
  on?: 'raise' | 'clear' | 'both';
  min_interval?: number;
}

export type SinkConfig = string | { action: ActionSinkConfig };

export interface StreamConfig {
  name: string;
  from: { device?: string; points?: string[]; timer?: { cron?: string; every?: number } };
  steps: StepConfig[];
  to: SinkConfig[];
}

export interface TlsConfig {
  ca?: string;
  cert?: string;
  key?: string;
  reject_unauthorized?: boolean;
}

export interface MqttUpstreamConfig {
  name: string;
  type: 'mqtt';
  url: string;
  topic: string;
  qos: 0 | 1;
  batch: number;
  username?: string;
  password?: string;
  client_id?: string;
  keepalive: number;
  protocol_version?: 4 | 5;
  tls?: TlsConfig;
}

export interface FileUpstreamConfig {
  name: string;
  type: 'file';
  path: string;
}

export interface KafkaUpstreamConfig {
  name: string;
  type: 'kafka';
  brokers: string[];
  topic: string;
  key: string;
  acks: 'all' | 0 | 1 | -1;
  idempotent: boolean;
  compression: 'none' | 'gzip' | 'snappy' | 'lz4' | 'zstd';
  batch: { max_records: number; max_wait: number };
  /** How long a request may go unanswered before it is an error, in ms (default 10 s). */
  timeout: number;
  client_id?: string;
  tls?: TlsConfig;
  sasl?: { mechanism: 'plain' | 'scram-sha-256' | 'scram-sha-512'; username: string; password: string };
}

export type UpstreamConfig = MqttUpstreamConfig | FileUpstreamConfig | KafkaUpstreamConfig;

export interface OutboxConfig {
  max_size: number;
  max_age: number;
  when_full: 'drop-oldest' | 'reject-new';
  durability: 'normal' | 'full';
  /** A group is committed when it holds this many records... */
  group_records: number;
  /** ...or this many ms after its first record, whichever comes first. */
  group_wait: number;
}

export interface AgentConfig {
  version?: string | number;
  agent: AgentSection;
  devices: DeviceConfig[];
  streams: StreamConfig[];
  upstream: UpstreamConfig[];
  outbox: OutboxConfig;
  remote_config?: {
    broker: string;
    topic: string;
    public_key: string;
    username?: string;
    password?: string;
    tls?: TlsConfig;
    /** Bytes; a larger push is dropped by the broker (MQTT 5 maximum packet size). */
    max_size: number;
    /** ms the broker keeps the agent's session (and pushes sent meanwhile) while it is away. */
    session_expiry: number;
    /** Accept pushes of the first format, which name no target gateway. */
    allow_untargeted: boolean;
  };
}
