/** The keys of a Sparkplug B upstream: its schema, its loaded type and its defaults in one place. */
import { duration, name, object, text, tls, Type, withDefault, type Static } from '../../core/config-kit.js';

/** A Sparkplug topic element: no MQTT wildcard and no level separator (Sparkplug B 3.0, topic namespace). */
const topicElement = Type.String({ pattern: '^[^+#/]+$' });

export const sparkplugUpstreamSchema = object({
  name,
  type: Type.Literal('sparkplug'),
  url: Type.String({ pattern: '^(mqtts?|wss?|tcp|ssl)://' }),
  group_id: topicElement,
  /** agent.id when absent */
  edge_node_id: Type.Optional(topicElement),
  /** the host application whose spBv1.0/STATE/<id> must say online before births and data */
  primary_host: Type.Optional(topicElement),
  /** DATA messages name each metric by its alias (given in the births) instead of its name */
  aliases: withDefault(Type.Boolean(), true),
  username: Type.Optional(text),
  password: Type.Optional(Type.String()),
  /** edge-agent-<agent id>-<upstream name> when absent */
  client_id: Type.Optional(text),
  keepalive: duration('30s'),
  tls: Type.Optional(tls),
});

export type SparkplugUpstreamConfig = Static<typeof sparkplugUpstreamSchema>;
