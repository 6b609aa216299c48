/**
 * The JSON Schema of an agent config: the whole of the config contract (its copy lives in
 * test/fixtures/config-contract.yaml) plus the keys this project added. `duration: true` and `size: true` are our keywords: they check the text
 * and replace it with milliseconds or bytes, so the rest of the agent only sees numbers.
 */

const duration = { type: 'string', duration: true } as const;
const size = { type: 'string', size: true } as const;
const name = { type: 'string', pattern: '^[A-Za-z0-9_.{}-]+$' } as const;
const text = { type: 'string', minLength: 1 } as const;
const port = { type: 'integer', minimum: 1, maximum: 65535 } as const;
const keyFields = { type: 'array', items: { type: 'string' }, minItems: 1 } as const;

function object(properties: Record<string, unknown>, required: string[] = []) {
  return { type: 'object', properties, required, additionalProperties: false };
}

const tls = object({ ca: text, cert: text, key: text, reject_unauthorized: { type: 'boolean' } });

const writable = { type: 'boolean' };

const modbusPoint = object(
  {
    name,
    area: { enum: ['holding', 'input', 'coil', 'discrete'] },
    address: { type: 'integer', minimum: 0, maximum: 65535 },
    type: { enum: ['int16', 'uint16', 'int32', 'uint32', 'int64', 'uint64', 'float32', 'float64', 'bool', 'string'] },
    order: { enum: ['ABCD', 'CDAB', 'BADC', 'DCBA'] },
    bit: { type: 'integer', minimum: 0, maximum: 15 },
    length: { type: 'integer', minimum: 1, maximum: 125 },
    scale: { type: 'number' },
    offset: { type: 'number' },
    poll: duration,
    writable,
  },
  ['name', 'area', 'address'],
);

const modbusCommon = {
  id: name,
  protocol: {},
  unit_id: { type: 'integer', minimum: 0, maximum: 255 },
  poll: duration,
  timeout: duration,
  retries: { type: 'integer', minimum: 0, maximum: 10 },
  max_gap: { type: 'integer', minimum: 0, maximum: 124 },
  max_registers: { type: 'integer', minimum: 1, maximum: 125 },
  max_bits: { type: 'integer', minimum: 1, maximum: 2000 },
  offline_after: { type: 'integer', minimum: 1, maximum: 1000 },
  points: { type: 'array', items: modbusPoint, minItems: 1 },
};

const serial = object(
  {
    path: text,
    baud: { type: 'integer', minimum: 300 },
    parity: { enum: ['none', 'even', 'odd', 'mark', 'space'] },
    data_bits: { enum: [7, 8] },
    stop_bits: { enum: [1, 2] },
  },
  ['path'],
);

const opcuaPoint = object(
  {
    name,
    node: text,
    sampling: duration,
    queue_size: { type: 'integer', minimum: 1 },
    deadband: object({ type: { enum: ['absolute', 'percent'] }, value: { type: 'number', minimum: 0 } }, ['type', 'value']),
    stale_after: duration,
    writable,
  },
  ['name', 'node'],
);

const mqttPoint = object(
  {
    name,
    topic: text,
    json: text,
    ts: text,
    qos: { enum: [0, 1, 2] },
    command_topic: text,
    writable,
  },
  ['name', 'topic'],
);

const simulatorPoint = object(
  {
    name,
    signal: { enum: ['sine', 'counter', 'random', 'step', 'constant'] },
    min: { type: 'number' },
    max: { type: 'number' },
    period: duration,
    rate: { type: 'number' },
    start: { type: 'number' },
    step: { type: 'number', exclusiveMinimum: 0 },
    value: { type: ['number', 'boolean', 'string'] },
    writable,
  },
  ['name'],
);

const deviceByProtocol: Record<string, object> = {
  'modbus-tcp': object({ ...modbusCommon, host: text, port }, ['host', 'points']),
  'modbus-rtu': object({ ...modbusCommon, serial }, ['serial', 'points']),
  opcua: object(
    {
      id: name,
      protocol: {},
      endpoint: { type: 'string', pattern: '^opc\\.tcp://' },
      security: object({
        mode: { enum: ['None', 'Sign', 'SignAndEncrypt'] },
        policy: { enum: ['None', 'Basic128Rsa15', 'Basic256', 'Basic256Sha256', 'Aes128_Sha256_RsaOaep', 'Aes256_Sha256_RsaPss'] },
      }),
      user: text,
      password: { type: 'string' },
      certificate: text,
      private_key: text,
      trust_dir: text,
      trust_on_first_use: { type: 'boolean' },
      poll: duration,
      timeout: duration,
      connect_timeout: duration,
      reconnect_max: duration,
      stale_after: duration,
      points: { type: 'array', items: opcuaPoint, minItems: 1 },
    },
    ['endpoint', 'points'],
  ),
  mqtt: object(
    {
      id: name,
      protocol: {},
      broker: { type: 'string', pattern: '^(mqtts?|wss?|tcp|ssl)://' },
      username: text,
      password: { type: 'string' },
      client_id: text,
      tls,
      max_devices: { type: 'integer', minimum: 1 },
      points: { type: 'array', items: mqttPoint, minItems: 1 },
    },
    ['broker', 'points'],
  ),
  simulator: object({ id: name, protocol: {}, poll: duration, points: { type: 'array', items: simulatorPoint, minItems: 1 } }, ['points']),
};

const upstreamByType: Record<string, object> = {
  mqtt: object(
    {
      name,
      type: {},
      url: { type: 'string', pattern: '^(mqtts?|wss?|tcp|ssl)://' },
      topic: text,
      qos: { enum: [0, 1] },
      batch: { type: 'integer', minimum: 1, maximum: 10000 },
      username: text,
      password: { type: 'string' },
      client_id: text,
      keepalive: duration,
      protocol_version: { enum: [4, 5] },
      tls,
    },
    ['url', 'topic'],
  ),
  kafka: object(
    {
      name,
      type: {},
      brokers: { type: 'array', items: text, minItems: 1 },
      topic: text,
      key: text,
      acks: { enum: ['all', 1, 0, -1] },
      idempotent: { type: 'boolean' },
      compression: { enum: ['none', 'gzip', 'snappy', 'lz4', 'zstd'] },
      batch: object({ max_records: { type: 'integer', minimum: 1, maximum: 100000 }, max_wait: duration }),
      timeout: duration,
      client_id: text,
      tls,
      sasl: object(
        { mechanism: { enum: ['plain', 'scram-sha-256', 'scram-sha-512'] }, username: text, password: { type: 'string' } },
        ['mechanism', 'username', 'password'],
      ),
    },
    ['brokers', 'topic'],
  ),
  file: object({ name, type: {}, path: text }, ['path']),
};

/** `if protocol is X then the X schema`: unknown keys are reported against the right device kind. */
function discriminated(field: string, schemas: Record<string, object>, required: string[]) {
  return {
    type: 'object',
    required,
    properties: { [field]: { enum: Object.keys(schemas) } },
    allOf: Object.entries(schemas).map(([value, then]) => ({
      if: { properties: { [field]: { const: value } }, required: [field] },
      then,
    })),
  };
}

const numberOrPercent = { type: ['number', 'string'], minimum: 0, pattern: '^\\d+(\\.\\d+)?%$' };

export const steps = {
  pass: object({}),
  threshold: object(
    { point: name, min: { type: 'number' }, max: { type: 'number' }, fill: { enum: ['none', 'previous', 'linear'] }, max_hold: duration, key: keyFields },
    ['point'],
  ),
  filter: text,
  change: object({ point: name, deadband: numberOrPercent, key: keyFields }, ['point']),
  sampler: object({ interval: duration, key: keyFields, clock: { enum: ['server', 'data'] } }, ['interval']),
  hysteresis: object({ emit: text, release: text, key: keyFields, on_release: { type: 'boolean' } }, ['emit']),
  window: object(
    {
      size: duration,
      every: duration,
      lateness: duration,
      key: keyFields,
      functions: {
        type: 'object',
        minProperties: 1,
        additionalProperties: {
          type: 'array',
          minItems: 1,
          items: { enum: ['avg', 'min', 'max', 'sum', 'count', 'first', 'last', 'delta', 'integral'] },
        },
      },
    },
    ['size', 'functions'],
  ),
  energy: object(
    {
      method: { enum: ['meter-reading', 'instant-power', 'average-power'] },
      point: name,
      window: duration,
      output: name,
      scale: { type: 'number' },
      max_rate: { type: 'number', exclusiveMinimum: 0 },
      rollover: { type: 'number', exclusiveMinimum: 0 },
      max_gap: duration,
      key: keyFields,
    },
    ['method', 'point', 'window', 'output'],
  ),
  event: object(
    {
      code: text,
      severity: { enum: ['info', 'minor', 'major', 'critical'] },
      description: { type: 'string' },
      fields: { type: 'object', additionalProperties: text },
    },
    ['code'],
  ),
};

const step = {
  type: 'object',
  minProperties: 1,
  maxProperties: 1,
  properties: steps,
  additionalProperties: false,
};

const action = object(
  {
    device: name,
    point: name,
    value: { type: ['number', 'boolean', 'string'] },
    on: { enum: ['raise', 'clear', 'both'] },
    min_interval: duration,
  },
  ['device', 'point', 'value'],
);

const sink = { type: ['string', 'object'], properties: { action }, required: ['action'], additionalProperties: false };

const stream = object(
  {
    name,
    from: object({
      device: name,
      points: { type: 'array', items: name, minItems: 1 },
      timer: object({ cron: text, every: duration }),
    }),
    steps: { type: 'array', items: step },
    to: { type: 'array', items: sink, minItems: 1 },
  },
  ['name', 'from', 'to'],
);

// `x-anything:` at the top holds YAML anchors to use further down (as in docker-compose); ignored.
export const configSchema = withExtensions(object(
  {
    version: { type: ['string', 'integer'] },
    agent: object(
      {
        id: name,
        data_dir: text,
        log_level: { enum: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] },
        http: { type: 'string', pattern: '^(off|([^:]+|\\[[0-9a-fA-F:]+\\]):[0-9]{1,5})$' },
        http_token: { type: 'string', minLength: 16 },
        timezone: text,
        max_future: duration,
        min_time: { type: 'string', pattern: '^[0-9]{4}-[0-9]{2}-[0-9]{2}' },
        clock_sync: { type: 'string', pattern: '^(auto|off|/.+)$' },
        state_ttl: duration,
        state_cache: { type: 'integer', minimum: 100 },
        max_latest_devices: { type: 'integer', minimum: 1 },
      },
      ['id'],
    ),
    devices: { type: 'array', items: discriminated('protocol', deviceByProtocol, ['id', 'protocol']) },
    streams: { type: 'array', items: stream },
    upstream: {
      type: 'array',
      items: discriminated('type', upstreamByType, ['name', 'type']),
    },
    outbox: object({
      max_size: size,
      max_age: duration,
      when_full: { enum: ['drop-oldest', 'reject-new'] },
      durability: { enum: ['normal', 'full'] },
      group_records: { type: 'integer', minimum: 1 },
      group_wait: duration,
    }),
    remote_config: object(
      {
        broker: text,
        topic: text,
        public_key: text,
        username: text,
        password: { type: 'string' },
        tls,
        max_size: size,
        session_expiry: duration,
        allow_untargeted: { type: 'boolean' },
      },
      ['broker', 'topic', 'public_key'],
    ),
  },
  ['agent'],
));

function withExtensions<T extends object>(schema: T): T & { patternProperties: Record<string, unknown> } {
  return { ...schema, patternProperties: { '^x-': {} } };
}
