/**
 * Streams created, replaced and deleted over the REST API. Each change edits the running config
 * file's YAML document (comments and layout kept where the YAML library can), then goes the one
 * way every change from outside goes (`writeAndApply`: the same validation, the file written
 * atomically with a `.bak`, only what differs restarted), so that a restart runs what the API
 * left. Errors in a submitted stream are located in the submitted text.
 */
import { isMap, isScalar, isSeq, parseDocument, type Document, type Node, type YAMLSeq } from 'yaml';
import { ConfigError, type ConfigIssue } from '../core/config-error.js';
import { MAX_ALIAS_COUNT, parseYaml } from '../config/load.js';
import { NotWritten, writeAndApply } from './config-file.js';
import { RolledBack, type ManagedAgent } from './managed-agent.js';

/** What a handler answers: an HTTP status and a JSON body (none for 204). */
export interface Reply {
  status: number;
  body?: unknown;
}

/** A located problem in a submitted stream; `path` is within the stream (`steps[0].threshold.min`). */
export interface SubmittedIssue {
  line?: number;
  col?: number;
  path: string;
  message: string;
}

/** How the edited file is written: long lines are not folded (yaml's default folds at 80). */
const TO_STRING = { lineWidth: 0 } as const;

/** The running config's stream `name`: its definition as written in the file (before `${...}`), its state and counters. */
export function streamDetail(agent: ManagedAgent, name: string): Reply {
  const status = agent.streamStatus().find((s) => s.name === name);
  if (!status) return noStream(agent, name);
  const written = (configDocument(agent.text).toJS({ maxAliasCount: MAX_ALIAS_COUNT }) as { streams?: { name?: unknown }[] | null }).streams ?? [];
  const definition = written.find((s) => s?.name === name);
  const { deployed, readings_in, readings_out, errors, counters } = status;
  return { status: 200, body: { name, definition, deployed, readings_in, readings_out, errors, counters } };
}

export function streamInstances(agent: ManagedAgent, name: string): Reply {
  const instances = agent.streamInstances(name);
  if (!instances) return noStream(agent, name);
  return { status: 200, body: { name, deployed: agent.streamStatus().find((s) => s.name === name)?.deployed, steps: instances } };
}

/** POST /api/streams: a new stream (409 when its name is taken). */
export function createStream(agent: ManagedAgent, text: string): Promise<Reply> {
  const submitted = parseSubmitted(text);
  if ('status' in submitted) return Promise.resolve(submitted);
  const name = submitted.value.name;
  if (typeof name !== 'string') return Promise.resolve(invalid([{ ...submitted.at([]), path: '', message: 'missing required key "name"' }]));
  return agent.oneAtATime(async () => {
    const doc = configDocument(agent.text);
    const streams = streamList(doc);
    if ('status' in streams) return streams;
    if (indexOf(doc, name) >= 0) return { status: 409, body: { error: `a stream "${name}" exists already: PUT /api/streams/${encodeURIComponent(name)} replaces it` } };
    streams.items.push(doc.createNode(submitted.value) as Node);
    return change(agent, doc, `the API (stream ${name} created)`, submitted, streams.items.length - 1, 201, name);
  });
}

/** PUT /api/streams/NAME: replaces the stream's definition (404 when there is none). */
export function replaceStream(agent: ManagedAgent, name: string, text: string): Promise<Reply> {
  const submitted = parseSubmitted(text);
  if ('status' in submitted) return Promise.resolve(submitted);
  const given = submitted.value.name;
  if (given === undefined) submitted.value.name = name;
  else if (given !== name) return Promise.resolve(invalid([{ ...submitted.at(['name']), path: 'name', message: `the stream is ${name} in the address, ${JSON.stringify(given)} in the body: a stream is renamed by creating the new one and deleting the old` }]));
  return editStream(agent, name, (doc, streams, index) => {
    streams.items[index] = doc.createNode(submitted.value) as Node;
    return change(agent, doc, `the API (stream ${name} replaced)`, submitted, index, 200, name);
  });
}

/** DELETE /api/streams/NAME: the stream stops and leaves the file; what it queued upstream stays and is delivered. */
export function deleteStream(agent: ManagedAgent, name: string): Promise<Reply> {
  return editStream(agent, name, (doc, streams, index) => {
    streams.items.splice(index, 1);
    return change(agent, doc, `the API (stream ${name} deleted)`, undefined, -1, 204, name);
  });
}

/** Runs `edit` on the config's stream called `name`, one change at a time (404 when there is none). */
function editStream(agent: ManagedAgent, name: string, edit: (doc: Document, streams: YAMLSeq, index: number) => Promise<Reply>): Promise<Reply> {
  return agent.oneAtATime(async () => {
    const doc = configDocument(agent.text);
    const streams = streamList(doc);
    if ('status' in streams) return streams;
    const index = indexOf(doc, name);
    if (index < 0) return noStream(agent, name);
    return edit(doc, streams, index);
  });
}

interface Submitted {
  value: Record<string, unknown>;
  /** Line and column of the node at `path` in the submitted text (the nearest that exists). */
  at(path: (string | number)[], key?: boolean): { line?: number; col?: number };
}

/** A stream definition as JSON or YAML (JSON is YAML): a mapping, or a 400 that says where it is not. */
function parseSubmitted(text: string): Submitted | Reply {
  let parsed: ReturnType<typeof parseYaml>;
  try {
    parsed = parseYaml(text, 'the request');
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return invalid(err.issues.map(({ line, col, message }) => ({ line, col, path: '', message: message.replace(/^invalid YAML/, 'invalid JSON or YAML') })));
  }
  const { doc, position } = parsed;
  if (!isMap(doc.contents)) return invalid([{ line: 1, col: 1, path: '', message: 'a stream is a mapping: {"name": ..., "from": {...}, "steps": [...], "to": [...]}' }]);
  let value: Record<string, unknown>;
  try {
    value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT }) as Record<string, unknown>;
  } catch (err) {
    return invalid([{ path: '', message: `cannot resolve the YAML aliases: ${(err as Error).message}` }]);
  }
  const at = (path: (string | number)[], key = false) => {
    let node: unknown = doc.contents;
    let keyNode: unknown;
    for (const segment of path) {
      const pair = isMap(node) ? node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(segment)) : undefined;
      const next: unknown = pair ? pair.value : isSeq(node) && typeof segment === 'number' ? node.items[segment] : undefined;
      if (next === undefined || next === null) break;
      keyNode = pair?.key;
      node = next;
    }
    // an unknown key is shown where the key is, as the loader does
    const start = (((key && keyNode) || node) as Node | undefined)?.range?.[0];
    return position(start);
  };
  return { value, at };
}

/** The config file's text as a YAML document, as the loader reads it. */
function configDocument(text: string): Document {
  return parseDocument(text, { merge: true });
}

/** The `streams:` list of the document (made when absent or empty), or why it cannot be edited. */
function streamList(doc: Document): YAMLSeq | Reply {
  const streams = doc.get('streams', true);
  if (streams === undefined || (isScalar(streams) && streams.value === null)) {
    const made = doc.createNode([]) as YAMLSeq;
    doc.set('streams', made);
    return made;
  }
  if (!isSeq(streams)) return { status: 409, body: { error: 'the config file\'s "streams" is not a plain list (an alias?): edit the file itself' } };
  return streams;
}

/** The stream's position in the file's `streams:` list, -1 when absent. */
function indexOf(doc: Document, name: string): number {
  const streams = (doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT }) as { streams?: { name?: unknown }[] | null }).streams ?? [];
  return streams.findIndex((s) => s?.name === name);
}

/**
 * Writes and applies the edited document. A ConfigError about the submitted stream (at `index`
 * of `streams:`) is a 400 located in the submitted text; one about anything else (the file's
 * other keys) is said as the loader says it.
 */
async function change(agent: ManagedAgent, doc: Document, source: string, submitted: Submitted | undefined, index: number, status: number, name: string): Promise<Reply> {
  const text = doc.toString(TO_STRING);
  try {
    await writeAndApply(agent, agent.parse(text), source);
  } catch (err) {
    if (err instanceof ConfigError) return invalid(err.issues.map((issue) => locate(issue, submitted, index)));
    if (err instanceof RolledBack || err instanceof NotWritten) return { status: 500, body: { error: err.message } };
    throw err;
  }
  return status === 204 ? { status } : { status, body: streamDetail(agent, name).body };
}

function locate(issue: ConfigIssue, submitted: Submitted | undefined, index: number): SubmittedIssue {
  const prefix = `streams[${index}]`;
  if (submitted && (issue.path === prefix || issue.path.startsWith(`${prefix}.`) || issue.path.startsWith(`${prefix}[`))) {
    const rest = issue.path.slice(prefix.length).replace(/^\./, '');
    return { ...submitted.at(parsePath(rest), issue.message.startsWith('unknown key')), path: rest, message: issue.message };
  }
  // not in the submitted text: where it is in the config file
  return { path: issue.path, message: `${issue.file}${issue.line ? `:${issue.line}:${issue.col}` : ''}: ${issue.message}` };
}

/** `steps[0].threshold.min` → `['steps', 0, 'threshold', 'min']` (formatPath backwards). */
function parsePath(path: string): (string | number)[] {
  const parts: (string | number)[] = [];
  for (const match of path.matchAll(/\[(\d+)\]|([^.[\]]+)/g)) parts.push(match[1] !== undefined ? Number(match[1]) : match[2]);
  return parts;
}

function invalid(issues: SubmittedIssue[]): Reply {
  const lines = issues.map((i) => `${i.line ? `line ${i.line}, column ${i.col}: ` : ''}${i.path ? `${i.path}: ` : ''}${i.message}`);
  return { status: 400, body: { error: lines.join('\n'), issues } };
}

export function noStream(agent: ManagedAgent, name: string): Reply {
  return { status: 404, body: { error: `no stream "${name}" (streams: ${agent.streamStatus().map((s) => s.name).join(', ')})` } };
}
