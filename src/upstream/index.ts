import type { TObject } from '@sinclair/typebox';
import type { Logger } from 'pino';
import type { ConfigIssue } from '../core/config-error.js';
import type { IssueAt } from '../core/config-kit.js';
import { fileUpstreamSchema } from './file/config.js';
import { checkKafkaUpstream, kafkaUpstreamSchema, prepareKafkaUpstream } from './kafka/config.js';
import { checkMqttUpstream, mqttUpstreamSchema } from './mqtt/config.js';
import { sparkplugUpstreamSchema } from './sparkplug/config.js';
import type { Upstream, UpstreamContext } from './upstream.js';

export interface UpstreamPlugin {
  /** The upstream's keys (config.ts in the plugin's folder). */
  schema: TObject;
  /** Imported only when the config uses it (the Kafka client is large). */
  create: (config: any, agentId: string, log: Logger, context: UpstreamContext) => Promise<Upstream>;
  /** After the schema's defaults: what depends on other keys or on the config file's folder. */
  prepare?(config: any, configDir: string): void;
  /** What the schema cannot check (`at` is the upstream's path in the config). */
  check?(config: any, at: readonly (string | number)[], issueAt: IssueAt): ConfigIssue[];
}

/** Upstreams by type: one line each (in this order in error messages). */
export const upstreams = {
  mqtt: { schema: mqttUpstreamSchema, check: checkMqttUpstream, create: async (config, agentId, log, context) => new (await import('./mqtt/mqtt.js')).MqttUpstream(config, agentId, log, context) },
  sparkplug: { schema: sparkplugUpstreamSchema, create: async (config, agentId, log, context) => new (await import('./sparkplug/sparkplug.js')).SparkplugUpstream(config, agentId, log, context) },
  kafka: { schema: kafkaUpstreamSchema, prepare: prepareKafkaUpstream, check: checkKafkaUpstream, create: async (config, agentId, log) => new (await import('./kafka/kafka.js')).KafkaUpstream(config, agentId, log) },
  file: { schema: fileUpstreamSchema, create: async (config) => new (await import('./file/file.js')).FileUpstream(config) },
} satisfies Record<string, UpstreamPlugin>;

export async function createUpstream(config: { name: string; type: keyof typeof upstreams }, agentId: string, log: Logger, context: UpstreamContext): Promise<Upstream> {
  return upstreams[config.type].create(config, agentId, log, context);
}
