import type { DeviceConfig, StreamConfig, UpstreamConfig } from '../config/types.js';
import type { Connector } from '../connectors/connector.js';
import type { Stream } from '../streams/stream.js';
import type { Forwarder } from '../upstream/forwarder.js';
import type { Upstream } from '../upstream/upstream.js';

export interface RunningUpstream {
  config: UpstreamConfig;
  upstream: Upstream;
  forwarder: Forwarder;
}

export interface RunningDevice {
  config: DeviceConfig;
  connector: Connector;
}

export interface RunningStream {
  config: StreamConfig;
  stream: Stream;
  deployed: boolean;
  stopTimer?: () => void;
}

/** The running parts of an agent, by name; each is replaced only when its own config changes. */
export interface Parts {
  upstreams: Map<string, RunningUpstream>;
  devices: Map<string, RunningDevice>;
  streams: Map<string, RunningStream>;
}
