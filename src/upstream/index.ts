import type { Logger } from 'pino';
import type { UpstreamConfig } from '../config/types.js';
import type { Upstream } from './upstream.js';

/** Upstreams by type; each imported only when the config uses it (the Kafka client is large). */
const factories: Record<UpstreamConfig['type'], (config: any, agentId: string, log: Logger) => Promise<Upstream>> = {
  mqtt: async (config, agentId, log) => new (await import('./mqtt.js')).MqttUpstream(config, agentId, log),
  file: async (config) => new (await import('./file.js')).FileUpstream(config),
  kafka: async (config, agentId, log) => new (await import('./kafka.js')).KafkaUpstream(config, agentId, log),
};

export async function createUpstream(config: UpstreamConfig, agentId: string, log: Logger): Promise<Upstream> {
  return factories[config.type](config, agentId, log);
}
