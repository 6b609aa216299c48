/**
 * The assembly point of the config schema: the agent's own sections (agent, streams) are
 * declared here; every device protocol, upstream type and stream operator brings its keys
 * from its plugin folder through its registry (src/connectors/index.ts, src/upstream/index.ts,
 * src/operators/index.ts), the outbox and remote_config from src/outbox and src/manage.
 * `duration` and `size` are our keywords: they check the text and replace it with
 * milliseconds or bytes, so the rest of the agent only sees numbers.
 */
import type { TSchema } from '@sinclair/typebox';
import { connectors } from '../connectors/index.js';
import { remoteConfigSchema } from './management.js';
import { outboxSchema } from '../outbox/config.js';
import { operators } from '../operators/index.js';
import { upstreams } from '../upstream/index.js';
import { anyValue, duration, filePath, name, object, oneOf, text, Type, withDefault, type Static } from '../core/config-kit.js';

export const agentSchema = object({
  id: name,
  /** relative to the config file's folder */
  data_dir: withDefault(filePath('made'), '/var/lib/edge-agent'),
  log_level: withDefault(oneOf(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']), 'info'),
  /** host:port of the management API, metrics and status page, or `off`. */
  http: withDefault(Type.String({ pattern: '^(off|([^:]+|\\[[0-9a-fA-F:]+\\]):[0-9]{1,5})$' }), '127.0.0.1:8080'),
  /** Bearer token the API requires; needed when `http` is not on loopback. */
  http_token: Type.Optional(Type.String({ minLength: 16 })),
  timezone: withDefault(text, 'UTC'),
  /** A reading whose ts is further ahead of the agent's clock is not believed (quality bad). */
  max_future: duration('1h'),
  /** ISO date: a reading before it is not believed (a device or agent clock that lost its time). */
  min_time: withDefault(Type.String({ pattern: '^[0-9]{4}-[0-9]{2}-[0-9]{2}' }), '2020-01-01'),
  /** How to tell whether the system clock is synchronized: `auto`, `off`, or a file that exists when it is. */
  clock_sync: withDefault(Type.String({ pattern: '^(auto|off|/.+)$' }), 'auto'),
  /** How long a stream step's per-key state may stay unused before it is pruned (unless still owed). */
  state_ttl: duration('7d'),
  /** Keys of each stream step's state held in memory; the rest stay in SQLite until used. */
  state_cache: withDefault(Type.Integer({ minimum: 100 }), 10_000),
  /** Devices whose latest values are kept (for expressions and the API). */
  max_latest_devices: withDefault(Type.Integer({ minimum: 1 }), 10_000),
});

/** `if protocol is X then the X schema`: unknown keys are reported against the right device kind. */
function discriminated(field: string, schemas: Record<string, TSchema>, required: string[]) {
  return {
    type: 'object',
    required,
    properties: { [field]: { enum: Object.keys(schemas) } },
    allOf: Object.entries(schemas).map(([value, then]) => ({
      if: { properties: { [field]: { const: value } }, required: [field] },
      // the keys required here already are not checked (nor reported) twice
      then: withoutRequired(then, required),
    })),
  };
}

function withoutRequired(schema: TSchema, keys: string[]): TSchema {
  const { required, ...others } = schema;
  const rest = (required as string[] | undefined)?.filter((key) => !keys.includes(key)) ?? [];
  return rest.length > 0 ? { ...others, required: rest } : others;
}

const schemasOf = (registry: Record<string, { schema: TSchema }>) => Object.fromEntries(Object.entries(registry).map(([key, plugin]) => [key, plugin.schema]));

/** One step: exactly one operator key, with that operator's parameters. */
const stepSchema = Type.Unsafe<Record<string, unknown>>({
  type: 'object',
  minProperties: 1,
  maxProperties: 1,
  properties: Object.fromEntries(Object.entries(operators).map(([key, factory]) => [key, factory.schema ?? {}])),
  additionalProperties: false,
});

const actionSchema = object({
  device: name,
  point: name,
  value: anyValue,
  on: Type.Optional(oneOf(['raise', 'clear', 'both'])),
  min_interval: Type.Optional(duration()),
});

const sinkSchema = Type.Unsafe<string | { action: Static<typeof actionSchema> }>({
  type: ['string', 'object'],
  properties: { action: actionSchema },
  required: ['action'],
  additionalProperties: false,
});

export const streamSchema = object({
  name,
  from: object({
    /** a device id, or a glob over device ids (`pump-*`) */
    device: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_.{}*?-]+$' })),
    /** several devices by id */
    devices: Type.Optional(Type.Array(name, { minItems: 1 })),
    points: Type.Optional(Type.Array(name, { minItems: 1 })),
    /** a latest value of another device (or point) older than this, before the reading judged, is missing */
    max_age: Type.Optional(duration()),
    /** one of: cron (5 or 6 fields), every (aligned to the epoch), fixed_delay (after the last tick), at (once) */
    timer: Type.Optional(
      object({
        cron: Type.Optional(text),
        every: Type.Optional(duration()),
        fixed_delay: Type.Optional(duration()),
        at: Type.Optional(text),
      }),
    ),
  }),
  steps: withDefault(Type.Array(stepSchema), []),
  to: Type.Array(sinkSchema, { minItems: 1 }),
});

// `x-anything:` at the top holds YAML anchors to use further down (as in docker-compose); ignored.
export const configSchema = {
  ...object({
    version: Type.Optional(Type.Unsafe<string | number>({ type: ['string', 'integer'] })),
    agent: agentSchema,
    devices: withDefault(Type.Unsafe<unknown[]>({ type: 'array', items: discriminated('protocol', schemasOf(connectors), ['id', 'protocol']) }), []),
    streams: withDefault(Type.Array(streamSchema), []),
    upstream: withDefault(Type.Unsafe<unknown[]>({ type: 'array', items: discriminated('type', schemasOf(upstreams), ['name', 'type']) }), []),
    outbox: outboxSchema,
    remote_config: Type.Optional(remoteConfigSchema),
  }),
  patternProperties: { '^x-': {} },
};

/** The assembled JSON Schema of a config file (for editors and documentation). */
export function configJsonSchema(): object {
  return configSchema;
}

export type AgentSection = Static<typeof agentSchema>;
export type StreamConfig = Static<typeof streamSchema>;
export type ActionSinkConfig = Static<typeof actionSchema>;
export type SinkConfig = StreamConfig['to'][number];
export type StepConfig = Record<string, unknown>;

/** One parameter of an app: its key, whether it must be given, its default, its JSON Schema. */
export interface AppParameter {
  name: string;
  required: boolean;
  default?: unknown;
  schema: object;
}

/** A source (device protocol, timer), step (operator) or sink (upstream type, action) with its parameters. */
export interface App {
  type: 'source' | 'step' | 'sink';
  name: string;
  parameters: AppParameter[];
  /** The whole JSON Schema, for a step written as a bare value (`filter: "x > 1"`) too. */
  schema: object;
}

/**
 * Every source, step and sink type with its parameters, from the schemas the config is checked
 * against (the registries), as a data flow server lists its apps.
 */
export function appCatalog(): App[] {
  const app = (type: App['type'], name: string, schema: TSchema): App => {
    const required = new Set<string>((schema.required as string[] | undefined) ?? []);
    const properties = (schema.properties ?? {}) as Record<string, TSchema>;
    const parameters = Object.entries(properties).map(([key, sub]) => ({
      name: key,
      required: required.has(key),
      ...('default' in sub ? { default: sub.default } : {}),
      schema: sub,
    }));
    return { type, name, parameters, schema };
  };
  const timer = (streamSchema.properties.from.properties as Record<string, TSchema>).timer;
  return [
    ...Object.entries(schemasOf(connectors)).map(([protocol, schema]) => app('source', protocol, schema)),
    app('source', 'timer', timer),
    ...Object.entries(operators).map(([key, factory]) => app('step', key, (factory.schema ?? {}) as TSchema)),
    ...Object.entries(schemasOf(upstreams)).map(([type, schema]) => app('sink', type, schema)),
    app('sink', 'action', actionSchema),
  ];
}
