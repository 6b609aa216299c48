/** The keys of an MQTT upstream: its schema, its loaded type, its defaults and its checks in one place. */
import type { ConfigIssue } from '../../core/config-error.js';
import { duration, name, object, oneOf, text, tls, Type, withDefault, type IssueAt, type Static } from '../../core/config-kit.js';
import { checkTemplate, TEMPLATE_FIELDS } from '../upstream.js';

export const mqttUpstreamSchema = object({
  name,
  type: Type.Literal('mqtt'),
  url: Type.String({ pattern: '^(mqtts?|wss?|tcp|ssl)://' }),
  /** {agent} {stream} {device}, and {point}: one message per value */
  topic: text,
  qos: withDefault(oneOf([0, 1]), 1),
  /** records published retained: a new subscriber gets each topic's last one at once */
  retain: withDefault(Type.Boolean(), false),
  /**
   * A topic template ({agent}) that says `online` (retained) once connected and `offline` (the
   * will, retained) when the agent stops or is lost; true is `{agent}/status`. Off by default:
   * a broker whose ACL refuses the will's topic refuses the connection.
   */
  availability: withDefault(Type.Union([Type.Boolean(), text]), false),
  /**
   * Each device's state (online, each point's latest sample and last good value, as
   * /api/devices shows it) as a retained JSON message: true is `{agent}/{device}/state`, or a
   * topic template ({agent} {device}). For the devices whose records come to this upstream.
   */
  device_state: withDefault(Type.Union([Type.Boolean(), text]), false),
  /** device_state: new values at most once per this; online/offline within a second */
  device_state_interval: duration('10s'),
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

/** Loaded, the keys added since (retain, availability, device_state) have their defaults; code that builds an upstream itself (benches, tests) may leave them out. */
type Added = 'retain' | 'availability' | 'device_state' | 'device_state_interval';
export type MqttUpstreamConfig = Omit<Static<typeof mqttUpstreamSchema>, Added> & Partial<Pick<Static<typeof mqttUpstreamSchema>, Added>>;

/** The availability topic template, or undefined when there is none. */
export function availabilityTemplate(config: Pick<MqttUpstreamConfig, 'availability'>): string | undefined {
  const { availability = false } = config;
  return availability === true ? '{agent}/status' : availability === false ? undefined : availability;
}

/** The device state topic template, or undefined when there is none. */
export function deviceStateTemplate(config: Pick<MqttUpstreamConfig, 'device_state'>): string | undefined {
  const { device_state = false } = config;
  return device_state === true ? '{agent}/{device}/state' : device_state === false ? undefined : device_state;
}

export function checkMqttUpstream(config: MqttUpstreamConfig, at: readonly (string | number)[], issueAt: IssueAt): ConfigIssue[] {
  const issues = checkTemplate(config.topic, [...at, 'topic'], issueAt, [...TEMPLATE_FIELDS, 'point']);
  const availability = availabilityTemplate(config);
  if (availability !== undefined) issues.push(...checkTemplate(availability, [...at, 'availability'], issueAt, ['agent']));
  const deviceState = deviceStateTemplate(config);
  if (deviceState !== undefined) issues.push(...checkTemplate(deviceState, [...at, 'device_state'], issueAt, ['agent', 'device']));
  return issues;
}
