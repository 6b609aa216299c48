/** The keys of an OPC UA device: its schema, its loaded type and its defaults in one place. */
import { duration, filePath, name, object, oneOf, text, Type, withDefault, unit, writable, type Static } from '../../core/config-kit.js';

export const opcuaPoint = object({
  name,
  node: text,
  /** with it the point is a monitored item of a subscription; without it, read at each poll */
  sampling: Type.Optional(duration()),
  queue_size: withDefault(Type.Integer({ minimum: 1 }), 10),
  deadband: Type.Optional(object({ type: oneOf(['absolute', 'percent']), value: Type.Number({ minimum: 0 }) })),
  /** no update for this long marks the point stale (default: the device's, else 3 × its sampling and the publishing interval, at least 5 s) */
  stale_after: Type.Optional(duration()),
  writable,
  unit,
});

export const opcuaSchema = object({
  id: name,
  protocol: Type.Literal('opcua'),
  endpoint: Type.String({ pattern: '^opc\\.tcp://' }),
  security: Type.Optional(
    object({
      mode: Type.Optional(oneOf(['None', 'Sign', 'SignAndEncrypt'])),
      // without it: None with mode None, else Basic256Sha256
      policy: Type.Optional(oneOf(['None', 'Basic128Rsa15', 'Basic256', 'Basic256Sha256', 'Aes128_Sha256_RsaOaep', 'Aes256_Sha256_RsaPss'])),
    }),
  ),
  user: Type.Optional(text),
  password: Type.Optional(Type.String()),
  certificate: Type.Optional(filePath('file')),
  private_key: Type.Optional(filePath('file')),
  /** a folder of server certificates to trust */
  trust_dir: Type.Optional(filePath('dir')),
  trust_on_first_use: withDefault(Type.Boolean(), false),
  poll: duration('1s'),
  timeout: Type.Optional(duration()),
  /** how long connecting and opening a session may take before the attempt counts as failed */
  connect_timeout: duration('10s'),
  /** the longest wait between connection attempts (they back off exponentially, with jitter) */
  reconnect_max: duration('30s'),
  /** no update for this long marks a subscribed point stale (see the point's stale_after) */
  stale_after: Type.Optional(duration()),
  points: Type.Array(opcuaPoint, { minItems: 1 }),
});

export type OpcuaPoint = Static<typeof opcuaPoint>;
export type OpcuaConfig = Static<typeof opcuaSchema>;
