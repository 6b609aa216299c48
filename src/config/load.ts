import { readFileSync, statSync, type Stats } from 'node:fs';
import { getHeapStatistics } from 'node:v8';
import { dirname, resolve } from 'node:path';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { Composer, isAlias, isMap, isScalar, isSeq, Lexer, LineCounter, Parser, YAMLParseError, visit, type Alias, type Document, type Node, type Pair } from 'yaml';
import { ConfigError, formatPath, type ConfigIssue } from '../core/config-error.js';
import { connectors } from '../connectors/index.js';
import { upstreams, type UpstreamPlugin } from '../upstream/index.js';
import { fillDefaults, forEachPath } from '../core/config-kit.js';
import { agentSchema, configSchema } from './schema.js';
import { remoteConfigSchema } from './management.js';
import type { AgentConfig } from './types.js';
import { parseDuration, parseSize } from '../core/units.js';

export type ConfigPath = readonly (string | number)[];

/**
 * Anchors and aliases (`&pts` / `*pts`, `<<: *defaults`) are resolved into a plain tree before
 * validation. A config of many aliases of aliases (a "billion laughs") would expand without
 * end: yaml's own guard counts the uses of each anchor (weighted by the aliases inside it), and
 * the expanded tree may hold at most MAX_CONFIG_VALUES scalars and collections.
 */
export const MAX_ALIAS_COUNT = 10_000;
export const MAX_CONFIG_VALUES = 500_000;

/** A loaded config and where each of its keys came from, for errors found after the schema. */
export interface LoadedConfig {
  config: AgentConfig;
  file: string;
  text: string;
  /** An issue located at `path` in the file (the nearest existing node). */
  issueAt(path: ConfigPath, message: string): ConfigIssue;
}

/**
 * The config schema compiled by Ajv: one function of some 350 kB of generated source, about
 * 1.3 MB of heap with its code. Compiled when a config is first read, and released by
 * releaseConfigValidator() once the agent has applied a config: configs are read at start and
 * on a reload or a push, so a running agent need not hold it; the next read compiles it again
 * (about 0.1 s).
 */
let compiled: ValidateFunction | undefined;

function schemaValidator(): ValidateFunction {
  if (compiled) return compiled;
  // No code optimization: its pass names each generated variable as a property of an empty object
  // (err1, _errs2, data3 ...), about 1,500 names for this schema, and V8 keeps about that many
  // transitions from the empty object's hidden class. Once full, objects built as `{}` plus
  // properties, and 4-property literals first run then, get hidden classes of their own for good,
  // and the stream steps' hot path went megamorphic (chain benchmark -26 %). Without it: 58 names.
  const ajv = new Ajv({ allErrors: true, strict: false, verbose: true, code: { optimize: false } });
  ajv.addKeyword({
    keyword: 'duration',
    type: 'string',
    modifying: true,
    errors: true,
    validate: unitKeyword(parseDuration, 'must be a duration such as 250ms, 1s, 15m, 1h or 7d'),
  });
  ajv.addKeyword({
    keyword: 'size',
    type: 'string',
    modifying: true,
    errors: true,
    validate: unitKeyword(parseSize, 'must be a size such as 512KB, 64MB or 1GB'),
  });
  return (compiled = ajv.compile(configSchema));
}

/** Lets the compiled config schema be collected; the next config read compiles it again. */
export function releaseConfigValidator(): void {
  compiled = undefined;
}

function unitKeyword(parse: (text: string) => number | undefined, message: string) {
  const check = (_schema: unknown, data: string, _parent: unknown, cxt?: { parentData: any; parentDataProperty: string | number }) => {
    const parsed = parse(data);
    if (parsed === undefined) {
      check.errors = [{ keyword: 'unit', message, params: {} }];
      return false;
    }
    if (cxt) cxt.parentData[cxt.parentDataProperty] = parsed;
    return true;
  };
  check.errors = undefined as Partial<ErrorObject>[] | undefined;
  return check;
}

export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError([{ file, path: '', message: `cannot read the config file: ${(err as Error).message}` }]);
  }
  return parseConfig(text, file, env);
}

/**
 * Parses and validates a config text. Throws ConfigError and nothing else: whatever goes wrong
 * in a config is a rejected config (a reload keeps the running one; at start, exit 78).
 */
export function parseConfig(text: string, file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  try {
    return parseConfigText(text, file, env);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError([{ file, path: '', message: `cannot load the config: ${(err as Error)?.message ?? String(err)}` }]);
  }
}

export type Position = (offset: number | undefined) => { line?: number; col?: number };

/**
 * Heap that yaml needs per lexer token while it parses a text into a Document, with a margin:
 * 125 to 170 bytes measured, for configs of 5,000 to 15,000 points and for garbage alike (under
 * the launcher's heap flags). A text that needs more than the heap has left is refused with an
 * error rather than parsed until V8 aborts the process: the heap limit (128 MB from the
 * launcher) holds configs of about 600,000 tokens, some 15,000 points.
 */
const PARSE_HEAP_PER_TOKEN = 180;
/** Below this size a text cannot exhaust the heap, however malformed: not scanned first. */
const SCAN_ABOVE_BYTES = 16_384;
/** Flow collections (`[` and `{`) nested deeper: refused (yaml needs about 1 kB of heap per level). */
export const MAX_FLOW_DEPTH = 64;
/** Parsing stops at this many YAML errors: each costs heap, and nobody reads the 101st. */
export const MAX_YAML_ERRORS = 100;

class TooManyYamlErrors extends Error {}
type ErrorHook = (source: unknown, code: string, message: string, warning?: boolean) => void;

/**
 * Refuses, before parsing, a text that would exhaust the heap while yaml parses it: too many
 * tokens for the heap left, flow collections nested too deep, or closing brackets that close
 * nothing (each a parse error of its own; 256 kB of them needed 300 MB). A config pushed over
 * the API or MQTT goes through here too, so such a text cannot stop a running agent.
 */
function checkParseable(text: string, file: string): void {
  if (text.length <= SCAN_ABOVE_BYTES) return;
  const at = (offset: number, message: string) => {
    return new ConfigError([{ file, ...lineStarts(text).linePos(offset), path: '', message }]);
  };
  let tokens = 0;
  let depth = 0;
  let offset = 0;
  for (const token of new Lexer().lex(text)) {
    tokens++;
    if (token === '[' || token === '{') {
      if (++depth > MAX_FLOW_DEPTH) throw at(offset, `invalid YAML: [ and { nested more than ${MAX_FLOW_DEPTH} deep`);
    } else if (token === ']' || token === '}') {
      if (--depth < 0) throw at(offset, `invalid YAML: this ${token} closes no [ or {`);
    }
    // the lexer's control tokens (document start, scalar, flow end) stand for no text
    if (token !== '\x02' && token !== '\x1f' && token !== '\x18') offset += token.length;
  }
  const heap = getHeapStatistics();
  const need = tokens * PARSE_HEAP_PER_TOKEN;
  const free = heap.heap_size_limit - heap.used_heap_size;
  if (need > free) {
    const mb = (bytes: number) => `${Math.ceil(bytes / 2 ** 20)} MB`;
    throw new ConfigError([
      {
        file,
        path: '',
        message:
          `too large to parse in this process's heap: ${tokens} YAML tokens need about ${mb(need)}, ${mb(free)} are free ` +
          `(heap limit ${mb(heap.heap_size_limit)}); give node a larger --max-old-space-size (NODE_OPTIONS, e.g. in a systemd drop-in) or split the devices across agents`,
      },
    ]);
  }
}

/** A LineCounter filled with the text's line starts (to place an offset found by the lexer). */
function lineStarts(text: string): LineCounter {
  const counter = new LineCounter();
  counter.addNewLine(0);
  for (let i = text.indexOf('\n'); i !== -1; i = text.indexOf('\n', i + 1)) counter.addNewLine(i + 1);
  return counter;
}

/**
 * A YAML text as a Document, and where an offset is in it; throws ConfigError for a YAML error
 * (the first MAX_YAML_ERRORS) and for a text that would exhaust the heap (see checkParseable).
 * Every YAML text the agent is given goes through here: a config file or push, and a stream sent
 * to the API.
 */
export function parseYaml(text: string, file: string): { doc: Document; position: Position } {
  checkParseable(text, file);
  const lineCounter = new LineCounter();
  // `<<: *defaults` is YAML 1.1, not 1.2: enabled here, as users expect it from other tools.
  const composer = new Composer({ merge: true });
  // yaml keeps going to the end whatever the errors; its composer's error hook (not public in
  // its types, stable across yaml 2.x) is wrapped to stop at MAX_YAML_ERRORS
  const hooks = composer as unknown as { onError: ErrorHook; errors: YAMLParseError[] };
  const report = hooks.onError;
  let errors = 0;
  hooks.onError = (source, code, message, warning) => {
    report(source, code, message, warning);
    if (!warning && ++errors >= MAX_YAML_ERRORS) throw new TooManyYamlErrors();
  };
  const position: Position = (offset) => (offset === undefined ? {} : lineCounter.linePos(offset));
  const issue = (e: YAMLParseError): ConfigIssue => ({ file, ...position(e.pos[0]), path: '', message: `invalid YAML: ${firstLine(e.message)}` });
  let doc: Document | undefined;
  // yaml's errors capture a stack trace each, which nobody reads and which made most of their heap
  const stackTraceLimit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    for (const composed of composer.compose(new Parser(lineCounter.addNewLine).parse(text), true, text.length)) {
      if (doc) {
        doc.errors.push(new YAMLParseError(composed.range.slice(0, 2) as [number, number], 'MULTIPLE_DOCS', 'the file holds more than one YAML document (a second --- line)'));
        break;
      }
      doc = composed;
    }
  } catch (err) {
    if (!(err instanceof TooManyYamlErrors)) throw err;
    // (yaml may catch the throw where it converts exceptions into errors, and report it once more)
    const first = hooks.errors.slice(0, MAX_YAML_ERRORS);
    const issues = first.map(issue);
    issues.push({ file, ...position(first.at(-1)?.pos[0]), path: '', message: `invalid YAML: stopped after ${MAX_YAML_ERRORS} errors` });
    throw new ConfigError(issues);
  } finally {
    Error.stackTraceLimit = stackTraceLimit;
  }
  // compose(…, true) yields a document at the latest at the end, even for an empty text
  if (doc!.errors.length > 0) throw new ConfigError(doc!.errors.map(issue));
  return { doc: doc!, position };
}

function parseConfigText(text: string, file: string, env: NodeJS.ProcessEnv): LoadedConfig {
  const { doc, position } = parseYaml(text, file);
  if (!isMap(doc.contents)) {
    throw new ConfigError([{ file, line: 1, col: 1, path: '', message: 'the config must be a YAML mapping with an "agent" key' }]);
  }

  // The Document (a node per key and value: about 4 MB for 100 devices × 50 points) places the
  // issues found after the schema. It is held weakly, so that a running agent does not keep it;
  // an issue reported after it was collected parses the same text again, to the same places.
  let parsed = new WeakRef({ doc, position });
  const located = () => {
    let found = parsed.deref();
    if (!found) {
      found = parseYaml(text, file);
      substitute(found.doc, env, file, found.position);
      parsed = new WeakRef(found);
    }
    return found;
  };
  const issueAt = (path: ConfigPath, message: string): ConfigIssue => {
    const { doc, position } = located();
    const { node, alias } = nearestNode(doc, path);
    // the faulty value is in an anchor: say through which alias this path reaches it
    const via = alias ? ` (reached through the alias *${alias.source} at line ${position(alias.range?.[0]).line ?? '?'})` : '';
    return { file, ...position(node?.range?.[0]), path: formatPath(path), message: message + via };
  };

  const issues = substitute(doc, env, file, position);
  if (issues.length > 0) throw new ConfigError(issues);

  const data = resolvedTree(doc, file);
  const validateSchema = schemaValidator();
  if (!validateSchema(data)) {
    throw new ConfigError(schemaIssues(validateSchema.errors ?? [], doc, issueAt, position));
  }
  const config = withDefaults(data, dirname(resolve(file)));
  return { config, file, text, issueAt };
}

/**
 * The document as plain data, aliases expanded into copies: yaml's toJS shares one object
 * between an anchor and its aliases, and the schema's duration and size keywords rewrite
 * values in place, so the second visit of a shared `period: 10m` would find a number.
 */
function resolvedTree(doc: Document, file: string): Record<string, unknown> {
  let shared: unknown;
  try {
    shared = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    throw new ConfigError([{ file, path: '', message: `cannot resolve the YAML aliases: ${(err as Error).message} (at most ${MAX_ALIAS_COUNT} uses of an anchor)` }]);
  }
  let budget = MAX_CONFIG_VALUES;
  const copy = (value: unknown): unknown => {
    if (--budget < 0) {
      throw new ConfigError([{ file, path: '', message: `the config expands to more than ${MAX_CONFIG_VALUES} values (aliases of aliases?)` }]);
    }
    if (Array.isArray(value)) return value.map(copy);
    if (value === null || typeof value !== 'object') return value;
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) {
      // `__proto__: x` is a key like any other, not the object's prototype
      Object.defineProperty(out, key, { value: copy(item), writable: true, enumerable: true, configurable: true });
    }
    return out;
  };
  return copy(shared) as Record<string, unknown>;
}

function firstLine(message: string): string {
  return message.split('\n')[0];
}

/** Replaces ${NAME}, ${NAME:-default} and ${file:/path} in every string scalar of the document. */
function substitute(doc: Document, env: NodeJS.ProcessEnv, file: string, position: Position): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const reference = /\$\{([^}]+)\}/g;
  visit(doc, {
    Scalar(_key, node, path) {
      if (typeof node.value !== 'string' || !node.value.includes('${')) return;
      const original = node.value;
      const replaced = original.replace(reference, (_match, expr: string) => {
        if (expr.startsWith('file:')) {
          // relative to the config file's folder, as every path in the config
          const source = resolve(dirname(resolve(file)), expr.slice(5));
          try {
            return readFileSync(source, 'utf8').trim();
          } catch (err) {
            issues.push({ file, ...position(node.range?.[0]), path: keyPath(path), message: `\${${expr}}: cannot read ${source}: ${(err as Error).message}` });
            return '';
          }
        }
        const [nameOnly, fallback] = expr.split(':-', 2);
        const value = env[nameOnly];
        if (value !== undefined && value !== '') return value;
        if (fallback !== undefined) return fallback;
        issues.push({ file, ...position(node.range?.[0]), path: keyPath(path), message: `environment variable ${nameOnly} is not set` });
        return '';
      });
      // `port: ${PORT}` should give the number 502, as if it had been written in place.
      const whole = /^\$\{[^}]+\}$/.test(original);
      node.value = whole ? plainScalar(replaced) : replaced;
    },
  });
  return issues;
}

function plainScalar(text: string): unknown {
  if (/^-?\d+(\.\d+)?$/.test(text)) return Number(text);
  if (text === 'true' || text === 'false') return text === 'true';
  return text;
}

/** The key path of a node from `visit`'s ancestry (maps, pairs, sequences). */
function keyPath(ancestry: readonly unknown[]): string {
  const parts: (string | number)[] = [];
  for (let i = 0; i < ancestry.length; i++) {
    const node = ancestry[i] as { key?: unknown; items?: unknown[] };
    const next = ancestry[i + 1];
    if (node && 'key' in node && isScalar(node.key)) parts.push(String(node.key.value));
    else if (node && Array.isArray(node.items) && next !== undefined && !isMap(node)) parts.push(node.items.indexOf(next));
  }
  return formatPath(parts);
}

/**
 * The node at `path`, or the nearest ancestor that exists, following aliases into their anchors
 * and `<<` merge keys into their sources; `alias` is the first alias followed on the way.
 */
function nearestNode(doc: Document, path: ConfigPath): { node: Node | undefined; alias?: Alias; complete: boolean } {
  const deref = dereferencer(doc);
  let found: Node | undefined = deref(doc.contents);
  for (const segment of path) {
    const next = childOf(found, segment, deref);
    if (!next) return { node: found, alias: deref.firstAlias, complete: false };
    found = next;
  }
  return { node: found, alias: deref.firstAlias, complete: true };
}

type Deref = ((n: unknown) => Node | undefined) & { firstAlias?: Alias };

/** Resolves an alias to its anchored node, remembering the first alias it went through. */
function dereferencer(doc: Document): Deref {
  const deref: Deref = (n) => {
    let current = n as Node | undefined;
    // an alias resolves to its anchor, never to another alias: the guard is only for safety
    for (let hops = 0; isAlias(current) && hops < 100; hops++) {
      deref.firstAlias ??= current;
      current = current.resolve(doc) as Node | undefined;
    }
    return current ?? undefined;
  };
  return deref;
}

const isMergeKey = (key: unknown) => isScalar(key) && (key.value === '<<' || (typeof key.value === 'symbol' && key.value.description === '<<'));

function childOf(node: Node | undefined, segment: string | number, deref: Deref): Node | undefined {
  if (isSeq(node)) return typeof segment === 'number' ? deref(node.items[segment]) : undefined;
  const pair = pairOf(node, segment, deref);
  return pair ? (deref(pair.value) ?? deref(pair.key)) : undefined;
}

/** The pair of `key` in a map, or in what it merges (`<<: *defaults`). */
function pairOf(node: Node | undefined, key: string | number, deref: Deref, depth = 0): Pair<Node, Node> | undefined {
  if (!isMap(node) || depth > 32) return undefined;
  const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(key));
  if (pair) return pair as Pair<Node, Node>;
  // explicit keys win over merged ones, and earlier merge sources over later ones
  for (const merge of node.items.filter((p) => isMergeKey(p.key))) {
    const source = deref(merge.value);
    const sources = isSeq(source) ? source.items.map(deref) : [source];
    for (const s of sources) {
      const found = pairOf(s, key, deref, depth + 1);
      if (found) return found;
    }
  }
  return undefined;
}

function instancePath(pointer: string): (string | number)[] {
  if (!pointer) return [];
  return pointer
    .slice(1)
    .split('/')
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((p) => (/^\d+$/.test(p) ? Number(p) : p));
}

function schemaIssues(
  errors: ErrorObject[],
  doc: Document,
  issueAt: LoadedConfig['issueAt'],
  position: (offset: number | undefined) => { line?: number; col?: number },
): ConfigIssue[] {
  const seen = new Set<string>();
  const issues: ConfigIssue[] = [];
  for (const error of errors) {
    // `if`/`then` and the union of sink forms add a second, vaguer line for the same fault.
    if (error.keyword === 'if') continue;
    const path = instancePath(error.instancePath);
    let issue: ConfigIssue;
    switch (error.keyword) {
      case 'additionalProperties': {
        const key = String(error.params.additionalProperty);
        const allowed = Object.keys(schemaAt(error.parentSchema)?.properties ?? {});
        issue = issueAt([...path, key], `unknown key "${key}"${allowed.length ? ` (expected one of: ${allowed.join(', ')})` : ''}`);
        Object.assign(issue, position(keyOffset(doc, path, key)));
        break;
      }
      case 'required':
        issue = issueAt(path, `missing required key "${error.params.missingProperty}"`);
        break;
      case 'enum':
        issue = issueAt(path, `must be one of: ${(error.params.allowedValues as unknown[]).join(', ')} (got ${JSON.stringify(valueAt(doc, path))})`);
        break;
      case 'type':
        issue = issueAt(path, `must be ${[error.params.type].flat().join(' or ')} (got ${JSON.stringify(valueAt(doc, path))})`);
        break;
      case 'pattern':
        issue = issueAt(path, `${JSON.stringify(valueAt(doc, path))} does not match ${error.params.pattern}`);
        break;
      case 'minProperties':
      case 'maxProperties':
        issue = issueAt(path, path.includes('steps') ? 'a step must have exactly one operator key' : (error.message ?? 'invalid'));
        break;
      default:
        issue = issueAt(path, error.message ?? 'invalid');
    }
    const id = `${issue.path}|${issue.message}`;
    if (!seen.has(id)) {
      seen.add(id);
      issues.push(issue);
    }
  }
  return issues;
}

function schemaAt(schema: unknown): { properties?: Record<string, unknown> } | undefined {
  return schema && typeof schema === 'object' ? (schema as { properties?: Record<string, unknown> }) : undefined;
}

function valueAt(doc: Document, path: ConfigPath): unknown {
  const { node, complete } = nearestNode(doc, path);
  if (!complete) return undefined;
  if (isScalar(node)) return node.value;
  try {
    return node?.toJS(doc, { maxAliasCount: 100 });
  } catch {
    return isMap(node) ? 'a mapping' : 'a list';
  }
}

/** Where the key itself starts, so an unknown key is reported on its own line and column. */
function keyOffset(doc: Document, path: ConfigPath, key: string): number | undefined {
  const { node: map, complete } = nearestNode(doc, path);
  if (!complete) return undefined;
  const pair = pairOf(map, key, dereferencer(doc));
  return isScalar(pair?.key) ? pair.key.range?.[0] : undefined;
}

/**
 * The schema has checked `raw`; this fills the defaults the schemas declare (each plugin's
 * from its own schema), makes every path key absolute from the config file's folder, and lets
 * a plugin finish what depends on other keys.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function withDefaults(raw: Record<string, any>, configDir: string): AgentConfig {
  // the `x-` keys only held anchors
  const config = fillDefaults(configSchema, Object.fromEntries(Object.entries(raw).filter(([key]) => !key.startsWith('x-')))) as AgentConfig;
  for (const device of config.devices) fillDefaults(connectors[device.protocol].schema, device);
  for (const upstream of config.upstream) fillDefaults(upstreams[upstream.type].schema, upstream);
  forEachPathKey(config, (_kind, holder, key) => {
    (holder as Record<string | number, unknown>)[key] = resolve(configDir, (holder as Record<string | number, string>)[key]);
  });
  for (const upstream of config.upstream) (upstreams[upstream.type] as UpstreamPlugin).prepare?.(upstream, configDir);
  return config;
}

/** Every path key of a loaded config (see `filePath`), each section with its own or its plugin's schema. */
function forEachPathKey(config: AgentConfig, visit: Parameters<typeof forEachPath>[3]): void {
  forEachPath(agentSchema, config.agent, ['agent'], visit);
  config.devices.forEach((device, i) => forEachPath(connectors[device.protocol].schema, device, ['devices', i], visit));
  config.upstream.forEach((upstream, i) => forEachPath(upstreams[upstream.type].schema, upstream, ['upstream', i], visit));
  if (config.remote_config) forEachPath(remoteConfigSchema, config.remote_config, ['remote_config'], visit);
}

/**
 * The files and folders a config names that are not there, each at its line: `edge-agent
 * validate` reports them (loading does not: a config is signed on a workstation without them).
 */
export function missingFiles(loaded: LoadedConfig): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  forEachPathKey(loaded.config, (kind, holder, key, path) => {
    if (kind === 'made') return;
    const file = (holder as Record<string | number, string>)[key];
    let found: Stats | undefined;
    try {
      found = statSync(file);
    } catch {
      found = undefined;
    }
    if (!found) issues.push(loaded.issueAt(path, `${kind === 'dir' ? 'no folder' : 'no file'} ${file}`));
    else if (kind === 'dir' ? !found.isDirectory() : !found.isFile()) issues.push(loaded.issueAt(path, `${file} is not a ${kind === 'dir' ? 'folder' : 'file'}`));
  });
  return issues;
}
