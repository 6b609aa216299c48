// Where a V8 heap snapshot's bytes are, by module: the code of each module (its functions'
// bytecode, scope infos, feedback and baseline code, and the closures themselves) and its source
// text, which V8 keeps to compile functions lazily; then the rest (data) by kind and constructor.
// Used by scripts/bench/memory.ts --heap; also runs alone: `node --import tsx heap-summary.ts FILE`.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[]]; edge_fields: string[]; edge_types: [string[]] } };
  nodes: number[];
  edges: number[];
  strings: string[];
}

/** The module a script belongs to: a package, a folder of the agent's build, or node's own. */
function moduleOf(url: string): string {
  // ES modules are named by URL, CommonJS ones by path; node's own by `node:…` or a bare name
  if (!url.startsWith('file:') && !url.startsWith('/')) return 'node (its built-in modules)';
  const inPackage = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (inPackage) return inPackage[1];
  const inBuild = /\/(?:dist|\.test-dist)\/(.*)$/.exec(url);
  if (!inBuild) return url;
  const folders = inBuild[1].split('/').slice(0, -1);
  // a plugin is its own module: src/connectors/modbus, src/upstream/mqtt
  return `agent: src/${folders.slice(0, folders[0] === 'connectors' || folders[0] === 'upstream' ? 2 : 1).join('/')}`;
}

/** Edges from a function's SharedFunctionInfo and closure to what is its code alone. */
const CODE_EDGES = new Set([
  'name_or_scope_info',
  'trusted_function_data',
  'untrusted_function_data',
  'function_data',
  'raw_outer_scope_info_or_feedback_metadata',
  'outer_scope_info',
  'feedback_metadata',
  'bytecode',
  'constant_pool',
  'source_position_table',
  'handler_table',
  'feedback_cell',
  'value',
  'code',
  'instruction_stream',
  'relocation_info',
  'deoptimization_data',
]);

export function summarizeHeap(file: string): string {
  const snap = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
  const { meta } = snap.snapshot;
  const N = meta.node_fields.length;
  const E = meta.edge_fields.length;
  const [types] = meta.node_types;
  const [edgeTypes] = meta.edge_types;
  const { nodes, edges, strings } = snap;
  const [TYPE, NAME, SIZE, EDGES] = ['type', 'name', 'self_size', 'edge_count'].map((f) => meta.node_fields.indexOf(f));
  const [ETYPE, ENAME, ETO] = ['type', 'name_or_index', 'to_node'].map((f) => meta.edge_fields.indexOf(f));
  const count = nodes.length / N;
  const firstEdge = new Uint32Array(count + 1);
  for (let i = 0, e = 0; i < count; i++) {
    firstEdge[i] = e;
    e += nodes[i * N + EDGES] * E;
    firstEdge[i + 1] = e;
  }
  const type = (i: number) => types[nodes[i * N + TYPE]];
  const name = (i: number) => strings[nodes[i * N + NAME]];
  const size = (i: number) => nodes[i * N + SIZE];
  const edgeName = (e: number) => {
    const t = edgeTypes[edges[e + ETYPE]];
    return t === 'element' || t === 'hidden' ? '' : strings[edges[e + ENAME]];
  };
  const target = (e: number) => edges[e + ETO] / N;
  const child = (i: number, wanted: string) => {
    for (let e = firstEdge[i]; e < firstEdge[i + 1]; e += E) if (edgeName(e) === wanted) return target(e);
    return -1;
  };

  const owner = new Int32Array(count).fill(-1);
  const modules: string[] = [];
  const moduleIndex = new Map<string, number>();
  const code: number[] = [];
  const source: number[] = [];
  const indexOf = (module: string) => {
    let m = moduleIndex.get(module);
    if (m === undefined) {
      moduleIndex.set(module, (m = modules.length));
      modules.push(module);
      code.push(0);
      source.push(0);
    }
    return m;
  };
  /** Gives `i` and the code objects under it to module `m` (each node once). */
  const claim = (i: number, m: number, depth: number) => {
    if (i < 0 || owner[i] !== -1 || depth > 3) return;
    const t = type(i);
    if (t !== 'code' && t !== 'closure' && t !== 'hidden' && t !== 'array') return;
    owner[i] = m;
    code[m] += size(i);
    for (let e = firstEdge[i]; e < firstEdge[i + 1]; e += E) if (CODE_EDGES.has(edgeName(e))) claim(target(e), m, depth + 1);
  };

  // scripts: their source to their module
  const scriptModule = new Map<number, number>();
  for (let i = 0; i < count; i++) {
    if (type(i) !== 'code') continue;
    const text = child(i, 'source');
    if (text < 0 || child(i, 'name') < 0) continue;
    const m = indexOf(moduleOf(name(i)));
    scriptModule.set(i, m);
    owner[i] = m;
    code[m] += size(i);
    if (owner[text] === -1) {
      owner[text] = m;
      source[m] += size(text);
    }
  }
  // functions: a closure's shared function info names its script
  for (let i = 0; i < count; i++) {
    if (type(i) !== 'closure') continue;
    const shared = child(i, 'shared');
    const script = shared < 0 ? -1 : child(shared, 'script');
    const m = scriptModule.get(script);
    if (m === undefined) continue;
    owner[i] = -1;
    claim(i, m, 0);
    owner[shared] = -1;
    claim(shared, m, 0);
  }
  // functions never called as closures still hold their shared info and bytecode
  for (let i = 0; i < count; i++) {
    if (owner[i] !== -1 || type(i) !== 'code') continue;
    const m = scriptModule.get(child(i, 'script'));
    if (m !== undefined) claim(i, m, 0);
  }

  let total = 0;
  const rest = new Map<string, number>();
  for (let i = 0; i < count; i++) {
    total += size(i);
    if (owner[i] !== -1) continue;
    const t = type(i);
    const kind = t === 'object' ? `objects: ${name(i).slice(0, 40) || '(anonymous)'}` : t.includes('string') ? 'strings (not module sources)' : t === 'code' ? 'code not tied to a module (builtins, regexps, handlers)' : t === 'array' ? 'arrays (properties and elements)' : t === 'object shape' || t === 'hidden' ? 'hidden classes and internal' : t;
    rest.set(kind, (rest.get(kind) ?? 0) + size(i));
  }
  const mb = (x: number) => (x / 2 ** 20).toFixed(2).padStart(6);
  const lines = [`V8 heap in the snapshot: ${mb(total)} MB in ${count} objects`, `  by module (code: functions, bytecode, feedback; source: the text V8 keeps)   code MB  source MB`];
  const order = modules.map((_, m) => m).sort((a, b) => code[b] + source[b] - (code[a] + source[a]));
  let shown = 0;
  for (const m of order) {
    if (shown++ < 25) lines.push(`    ${modules[m].padEnd(64)} ${mb(code[m])}   ${mb(source[m])}`);
  }
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  lines.push(`    ${'all modules'.padEnd(64)} ${mb(sum(code))}   ${mb(sum(source))}`);
  lines.push('  the rest (data), by kind');
  for (const [kind, bytes] of [...rest].sort((a, b) => b[1] - a[1]).slice(0, 15)) lines.push(`    ${kind.padEnd(64)} ${mb(bytes)}`);
  return lines.join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) console.log(summarizeHeap(process.argv[2]));
