/** The keys of an MQTT upstream: its schema, its loaded type and its defaults in one place. */
import { duration, name, object, oneOf, text, tls, Type, withDefault, type Static } from '../../core/config-kit.js';

export const mqttUpstreamSchema = object({
  name,
  type: Type.Literal('mqtt'),
  url: Type.String({ pattern: '^(mqtts?|wss?|tcp|ssl)://' }),
  topic: text,
  qos: withDefault(oneOf([0, 1]), 1),
  batch: withDefault(Type.Integer({ minimum: 1, maximum: 10000 }), 1),
  username: Type.Optional(text),
  password: Type.Optional(Type.String()),
  /** edge-agent-<agent id>-<upstream name> when absent */
  client_id: Type.Optional(text),
  keepalive: duration('30s'),
  /** MQTT 3.1.1 (4) when absent */
  protocol_version: Type.Optional(oneOf([4, 5])),
  tls: Type.Optional(tls),
});

export type MqttUpstreamConfig = Static<typeof mqttUpstreamSchema>;
