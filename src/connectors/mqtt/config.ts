/** The keys of an MQTT device (sensors publishing to a broker): schema, loaded type and defaults in one place. */
import { name, object, oneOf, text, tls, Type, withDefault, unit, writable, type Static } from '../../core/config-kit.js';

export const mqttPoint = object({
  name,
  topic: text,
  /** field path in a JSON payload; without it the payload is the value */
  json: Type.Optional(text),
  /** field path of the sensor's own timestamp (epoch s or ms, or ISO 8601) */
  ts: Type.Optional(text),
  qos: withDefault(oneOf([0, 1, 2]), 0),
  command_topic: Type.Optional(text),
  writable,
  unit,
});

export const mqttDeviceSchema = object({
  id: name,
  protocol: Type.Literal('mqtt'),
  broker: Type.String({ pattern: '^(mqtts?|wss?|tcp|ssl)://' }),
  username: Type.Optional(text),
  password: Type.Optional(Type.String()),
  /** edge-agent-<agent id>-<device id> when absent */
  client_id: Type.Optional(text),
  tls: Type.Optional(tls),
  /** a template id (`plug-{1}`) makes at most this many devices; messages for more are dropped and counted */
  max_devices: withDefault(Type.Integer({ minimum: 1 }), 1000),
  points: Type.Array(mqttPoint, { minItems: 1 }),
});

export type MqttPoint = Static<typeof mqttPoint>;
export type MqttDeviceConfig = Static<typeof mqttDeviceSchema>;
