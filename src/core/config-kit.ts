/**
 * Building blocks of the config schema. Every plugin declares its keys with these, next to its
 * code: the one TypeBox schema gives both the JSON Schema the loader validates with and, through
 * `Static`, the TypeScript type of the loaded config, so the two cannot drift apart.
 *
 * The type is the config *after loading*: durations in ms, sizes in bytes (our `duration` and
 * `size` keywords replace the text), and every key that has a default present. A default is
 * written in the schema (`duration('1s')`, `withDefault(...)`); the key then stays optional in
 * the JSON Schema (`required` lists only keys without one) and `fillDefaults` sets it after
 * validation.
 */
import { Type, type Static, type TObject, type TProperties, type TSchema } from '@sinclair/typebox';
import type { ConfigIssue } from './config-error.js';
import { parseDuration, parseSize } from './units.js';

export { Type, type Static, type TSchema };

import type { Value } from './reading.js';



/** A duration in the YAML ("250ms", "15m"); a number of milliseconds once loaded. */
export function duration(fallback?: string) {
  return Type.Unsafe<number>({ type: 'string', duration: true, ...defaultOf(fallback, parseDuration) });
}

/** A size in the YAML ("64MB", "1GB"); a number of bytes once loaded. */
export function size(fallback?: string) {
  return Type.Unsafe<number>({ type: 'string', size: true, ...defaultOf(fallback, parseSize) });
}

/** The default as a user writes it ("1s"); fillDefaults sets its value (1000). */
function defaultOf(text: string | undefined, parse: (text: string) => number | undefined) {
  if (text === undefined) return {};
  if (parse(text) === undefined) throw new Error(`not a valid default: ${text}`);
  return { default: text };
}

/** `schema` with a default: present in the loaded type, optional in the file. */
export function withDefault<T extends TSchema>(schema: T, value: Static<T>): T {
  // a duration or a size is text in the file: its default too (`duration('0s')`), or loading fails
  if (((schema as { duration?: boolean }).duration || (schema as { size?: boolean }).size) && typeof value !== 'string') {
    throw new Error(`a duration or size default is written as text, as in the file (duration('0s')), not ${JSON.stringify(value)}`);
  }
  return { ...schema, default: value };
}

/**
 * What a path key names: a file that must exist (`file`), a folder that must exist (`dir`), or
 * a place the agent makes (`made`: data_dir, a file upstream's file).
 */
export type PathKind = 'file' | 'dir' | 'made';

/**
 * A file or folder in the YAML: relative to the config file's folder, not the working
 * directory (the loader makes it absolute once, see `forEachPath`); `edge-agent validate`
 * reports a `file` or `dir` that is not there, with its line.
 */
export function filePath(kind: PathKind) {
  return Type.String({ minLength: 1, path: kind });
}

/** A mapping whose keys all have defaults: absent in the file, it is filled with them. */
export function section<P extends TProperties>(properties: P): TObject<P> {
  return { ...object(properties), default: {} };
}

/** One of some literal values (a JSON Schema `enum`, for the loader's "must be one of" message). */
export function oneOf<const V extends readonly (string | number)[]>(values: V) {
  return Type.Unsafe<V[number]>({ enum: [...values] });
}

export const name = Type.String({ pattern: '^[A-Za-z0-9_.{}-]+$' });
export const text = Type.String({ minLength: 1 });
export const port = Type.Integer({ minimum: 1, maximum: 65535 });
/** Fields a step's state is kept per (`[device]` by default); `[]` is one key for the whole stream. */
export const keyFields = Type.Array(Type.String());
export const anyValue = Type.Unsafe<Value>({ type: ['number', 'boolean', 'string'] });
export const writable = Type.Optional(Type.Boolean());
/** A point's unit (`kW`, `°C`), shown beside its value and on its trend; nothing else reads it. */
export const unit = Type.Optional(Type.String({ minLength: 1, maxLength: 32 }));

/** A mapping of exactly these keys; keys with a default are not required in the file. */
export function object<P extends TProperties>(properties: P, options: { minProperties?: number } = {}): TObject<P> {
  const schema = Type.Object(properties, { additionalProperties: false, ...options }) as unknown as { required?: string[] };
  const required = (schema.required ?? []).filter((key) => !('default' in properties[key]));
  if (required.length > 0) schema.required = required;
  else delete schema.required;
  return schema as unknown as TObject<P>;
}

export const tls = object({
  ca: Type.Optional(filePath('file')),
  cert: Type.Optional(filePath('file')),
  key: Type.Optional(filePath('file')),
  reject_unauthorized: Type.Optional(Type.Boolean()),
});
export type TlsConfig = Static<typeof tls>;

/**
 * Sets every missing key that has a default in `schema`, in place, down through mappings and
 * lists. Called once per section or plugin after validation (and by factories given a config
 * built in code): never on the reading path.
 */
export function fillDefaults<S extends TSchema>(schema: S, value: unknown): Static<S> {
  fill(schema, value);
  return value as Static<S>;
}

/** A key's default as loaded: durations and sizes are written as text in the schema, as in a file. */
function defaultValue(schema: TSchema): unknown {
  if (schema.duration) return parseDuration(schema.default);
  if (schema.size) return parseSize(schema.default);
  return structuredClone(schema.default);
}

function fill(schema: TSchema, value: unknown): void {
  const s = schema as { properties?: Record<string, TSchema>; items?: TSchema };
  if (s.properties && value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const record = value as Record<string, unknown>;
    for (const [key, sub] of Object.entries(s.properties)) {
      if (record[key] === undefined && 'default' in sub) record[key] = defaultValue(sub);
      if (record[key] !== undefined) fill(sub, record[key]);
    }
  } else if (s.items && Array.isArray(value)) {
    for (const item of value) fill(s.items, item);
  }
}

/**
 * Calls `visit` for every path key (`filePath`) present in `value`, down through mappings and
 * lists, with its key path from `at`: the loader makes each absolute, `validate` checks each
 * exists. Once per section or plugin after validation, never on the reading path.
 */
export function forEachPath(
  schema: TSchema,
  value: unknown,
  at: readonly (string | number)[],
  visit: (kind: PathKind, holder: Record<string, unknown> | unknown[], key: string | number, path: readonly (string | number)[]) => void,
): void {
  const s = schema as { properties?: Record<string, TSchema>; items?: TSchema };
  if (s.properties && value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const record = value as Record<string, unknown>;
    for (const [key, sub] of Object.entries(s.properties)) {
      if (record[key] === undefined) continue;
      if (sub.path && typeof record[key] === 'string') visit(sub.path, record, key, [...at, key]);
      else forEachPath(sub, record[key], [...at, key], visit);
    }
  } else if (s.items && Array.isArray(value)) {
    value.forEach((item, i) => {
      if (s.items!.path && typeof item === 'string') visit(s.items!.path, value, i, [...at, i]);
      else forEachPath(s.items!, item, [...at, i], visit);
    });
  }
}

/** Where a plugin reports a problem the schema cannot see (LoadedConfig.issueAt). */
export type IssueAt = (path: readonly (string | number)[], message: string) => ConfigIssue;
