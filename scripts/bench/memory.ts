// Resident memory of the agent as a process, started as systemd starts it (scripts/edge-agent:
// the built CLI with the launcher's heap and V8 flags), on
//   (1) the default config (config/agent.yaml: a simulated meter, the SQLite outbox, an MQTT
//       upstream and a file), its broker a Mosquitto started here, its API on a free port;
//   (2) 100 Modbus TCP devices × 50 holding registers polled every second (100 modbus-serial
//       ServerTCPs in another process, see modbus-server.ts), a stream per device to an MQTT
//       upstream on that Mosquitto.
// Prints VmRSS 10 s after the start (BENCH_SECONDS) and VmHWM, the peak, as the median of
// BENCH_ROUNDS (3) runs, and where the resident megabytes of the last run are (from
// /proc/PID/smaps: node's own binary, V8's heap pages, malloc, the rest).
//
// `--before COMMIT` also runs that commit (extracted to a temporary folder, built there, its own
// scripts/edge-agent), interleaved with this checkout, for before/after figures from one run.
// BENCH_CONFIGS=2 runs the second config only. 10 s shows a start, not what a gateway holds
// after hours: growth per request shows later. BENCH_SECONDS=90 BENCH_CONFIGS=2 --before 0abb571
// (median of 2): 115.8 MB before, 100.9 MB after 7d7c20d, which stopped the Modbus bus holding
// every reply (the same two at 10 s: 98.1 and 98.1 MB).
// `--modules` instead prints what each dependency costs when loaded in the order the agent
// loads them (resident and heap after a GC), each in a process of its own.
// `--heap` adds, for the last run of each config, where the V8 heap's bytes are by module (a heap
// snapshot taken at the same moment, summarized by heap-summary.ts).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { TS_NODE_ARGS } from '../../test/support/cli.js';
import { root, thisCheckout, variant, type Variant } from './checkout.js';
import { summarizeHeap } from './heap-summary.js';
import { freePort, startMosquitto } from './mosquitto.js';

const here = dirname(fileURLToPath(import.meta.url));
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const MB = 2 ** 20;

const { values } = parseArgs({ options: { before: { type: 'string' }, modules: { type: 'boolean' }, heap: { type: 'boolean' } } });

function status(pid: number): { rss: number; hwm: number } {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(text)?.[1] ?? NaN) * 1024;
  return { rss: field('VmRSS'), hwm: field('VmHWM') };
}

/** Resident bytes by kind of mapping. V8 takes its heap in 256 kB pages at addresses of its own choosing. */
function whereResident(pid: number): Record<string, number> {
  const kinds: Record<string, number> = {};
  let kind = '';
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const mapping = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (mapping) {
      const [, from, to, perms, path] = mapping;
      const size = parseInt(to, 16) - parseInt(from, 16);
      if (path.endsWith('/bin/node')) kind = 'node binary (code, snapshot, ICU: file-backed)';
      else if (path.endsWith('.node')) kind = 'native addons (better-sqlite3)';
      else if (path.startsWith('/')) kind = 'shared libraries';
      else if (path === '[heap]') kind = 'malloc (brk heap)';
      else if (path.startsWith('[')) kind = 'stacks, vdso';
      else if (perms.includes('x')) kind = 'V8 code space';
      else if (size === 256 * 1024) kind = 'V8 heap pages';
      else kind = 'other anonymous (malloc arenas, large objects, buffers)';
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) kinds[kind] = (kinds[kind] ?? 0) + Number(rss[1]) * 1024;
  }
  return kinds;
}

const until = async (check: () => boolean, ms: number, what: string) => {
  for (const end = Date.now() + ms; !check(); ) {
    if (Date.now() > end) throw new Error(`no ${what} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
};

async function modbusServers(count: number): Promise<{ ports: number[]; stop: () => void }> {
  const child = spawn(process.execPath, [...TS_NODE_ARGS, join(here, 'modbus-server.ts'), String(count)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let ports: number[] | undefined;
  let out = '';
  child.stdout.on('data', (chunk) => {
    out += chunk;
    const found = /^ports (.+)\n/m.exec(out);
    if (found) ports = found[1].split(',').map(Number);
  });
  await until(() => ports !== undefined, 20_000, 'Modbus servers');
  return { ports: ports!, stop: () => void child.kill('SIGKILL') };
}

/** The V8 flags a variant's launcher gives node (NODE_FLAGS' default). */
function launcherFlags(variant: Variant): string {
  return /^NODE_FLAGS="\$\{EDGE_AGENT_NODE_FLAGS-([^}]*)\}"/m.exec(readFileSync(join(variant.dir, 'scripts/edge-agent'), 'utf8'))?.[1] ?? '';
}

/** Waits for the heap snapshot node writes on SIGUSR2 in `dir` to be complete. */
async function heapSnapshot(pid: number, dir: string): Promise<string> {
  process.kill(pid, 'SIGUSR2');
  let last = -1;
  for (const end = Date.now() + 60_000; Date.now() < end; ) {
    await new Promise((r) => setTimeout(r, 1000));
    const found = readdirSync(dir).find((f) => f.endsWith('.heapsnapshot'));
    if (!found) continue;
    const size = statSync(join(dir, found)).size;
    if (size === last && size > 0) return join(dir, found);
    last = size;
  }
  throw new Error('no heap snapshot within 60 s');
}

/** One run: the agent started on `configText`, measured after SECONDS, stopped. */
async function measure(variant: Variant, configText: (httpPort: number) => string, ready: RegExp, heap = false) {
  const dir = mkdtempSync(join(tmpdir(), 'bench-memory-run-'));
  const file = join(dir, 'agent.yaml');
  writeFileSync(file, configText(await freePort()));
  if (process.env.BENCH_KEEP_CONFIG) writeFileSync(process.env.BENCH_KEEP_CONFIG, readFileSync(file));
  const child: ChildProcess = spawn(join(variant.dir, 'scripts/edge-agent'), ['run', '--config', file], {
    cwd: dir,
    env: {
      ...process.env,
      STATE_DIRECTORY: join(dir, 'data'),
      NODE_OPTIONS: '',
      ...(heap ? { EDGE_AGENT_NODE_FLAGS: `${launcherFlags(variant)} --heapsnapshot-signal=SIGUSR2` } : {}),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const started = Date.now();
  let log = '';
  child.stdout!.on('data', (chunk) => (log = (log + chunk).slice(-100_000)));
  child.stderr!.on('data', (chunk) => (log = (log + chunk).slice(-100_000)));
  try {
    await until(() => ready.test(log) || child.exitCode !== null || child.signalCode !== null, 60_000, `"${ready.source}" in the log of ${variant.label}`).catch((err: Error) => {
      throw new Error(`${err.message}: ${log.slice(-2000)}`);
    });
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${variant.label} exited (${child.exitCode ?? child.signalCode}): ${log.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, started + SECONDS * 1000 - Date.now()));
    // scripts/edge-agent execs node: the child is the agent
    const measured = { ...status(child.pid!), where: whereResident(child.pid!) };
    return { ...measured, heap: heap ? summarizeHeap(await heapSnapshot(child.pid!, dir)) : undefined };
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => (child.exitCode === null && child.signalCode === null ? child.once('exit', r) : r(null)));
    rmSync(dir, { recursive: true, force: true });
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const mb = (bytes: number) => (bytes / MB).toFixed(1);

async function agentRuns(): Promise<void> {
  const variants: Variant[] = [];
  if (values.before) variants.push(variant(values.before, 'bench-memory'));
  variants.push(thisCheckout());
  const broker = await startMosquitto();
  const modbus = await modbusServers(100);
  const defaultConfig = readFileSync(join(root, 'config/agent.yaml'), 'utf8');
  const points = Array.from({ length: 50 }, (_, i) => `{ name: p${i}, area: holding, address: ${i} }`).join(', ');
  const configs = [
    {
      name: 'default config (simulated meter, SQLite outbox, MQTT + file upstreams)',
      ready: /agent \S+ running/,
      text: (http: number) => defaultConfig.replace('http: 127.0.0.1:8080', `http: 127.0.0.1:${http}`).replace('mqtt://127.0.0.1:1883', broker.url),
    },
    {
      name: '100 Modbus TCP devices × 50 points, MQTT upstream',
      ready: /agent \S+ running/,
      text: (http: number) => `agent: { id: bench, data_dir: "\${STATE_DIRECTORY:-./data}", http: "127.0.0.1:${http}" }
devices:
${modbus.ports.map((port, i) => `  - { id: m${i}, protocol: modbus-tcp, host: 127.0.0.1, port: ${port}, poll: 1s, points: [${points}] }`).join('\n')}
streams:
${modbus.ports.map((_, i) => `  - { name: s${i}, from: { device: m${i} }, to: [broker] }`).join('\n')}
upstream: [{ name: broker, type: mqtt, url: "${broker.url}", topic: "edge/{agent}/{stream}/{device}", qos: 1 }]
`,
    },
  ];
  console.log(`memory: VmRSS ${SECONDS} s after start and VmHWM, median of ${ROUNDS}, node ${process.version}, launcher flags from each variant's scripts/edge-agent`);
  try {
    for (const config of configs.filter((_, i) => !process.env.BENCH_CONFIGS || process.env.BENCH_CONFIGS.split(',').includes(String(i + 1)))) {
      const results = new Map<Variant, { rss: number; hwm: number; where: Record<string, number>; heap?: string }[]>(variants.map((v) => [v, []]));
      for (let round = 0; round < ROUNDS; round++) {
        for (const variant of variants) results.get(variant)!.push(await measure(variant, config.text, config.ready, values.heap && round === ROUNDS - 1));
      }
      console.log(`\n${config.name}`);
      let first: number | undefined;
      for (const variant of variants) {
        const runs = results.get(variant)!;
        const rss = median(runs.map((r) => r.rss));
        first ??= rss;
        console.log(`  ${variant.label.padEnd(36)} VmRSS ${mb(rss).padStart(6)} MB (runs ${runs.map((r) => mb(r.rss)).join(', ')})  VmHWM ${mb(median(runs.map((r) => r.hwm))).padStart(6)} MB${variants.length > 1 && rss !== first ? `  ×${(rss / first).toFixed(2)}` : ''}`);
      }
      for (const variant of variants) {
        const where = results.get(variant)!.at(-1)!.where;
        console.log(`  where the resident MB are, last run of ${variant.label}: ${Object.entries(where).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${mb(v)}`).join('; ')}`);
      }
      for (const variant of variants) {
        const heap = results.get(variant)!.at(-1)!.heap;
        if (heap) console.log(`  the V8 heap of the last run of ${variant.label}:\n${heap.replace(/^/gm, '  ')}`);
      }
    }
  } finally {
    broker.stop();
    modbus.stop();
    for (const variant of variants) if (variant.temporary) rmSync(variant.dir, { recursive: true, force: true });
  }
}

/**
 * What the agent's dependencies cost, loaded one after another in the order `run` loads them,
 * in a node with the launcher's heap and V8 flags: resident (VmRSS) and V8 heap used after a full GC.
 */
function moduleCosts(): void {
  const steps: [string, string][] = [
    ['node itself (an empty ES module)', `await import('data:text/javascript,')`],
    ['pino', `await import('pino')`],
    ['yaml', `await import('yaml')`],
    ['@sinclair/typebox', `await import('@sinclair/typebox')`],
    ['ajv', `await import('ajv')`],
    ['the schemas (connector, upstream, operator plugins)', `await import(${JSON.stringify(join(root, 'dist/config/schema.js'))})`],
    ['config/load.js', `await import(${JSON.stringify(join(root, 'dist/config/load.js'))})`],
    ['the default config read (compiles the schema)', `(await import(${JSON.stringify(join(root, 'dist/config/load.js'))})).loadConfigFile(${JSON.stringify(join(root, 'config/agent.yaml'))}, {})`],
    ['better-sqlite3 (a database open)', `new (await import('better-sqlite3')).default(':memory:').exec('create table t(a)')`],
    ['mqtt', `await import('mqtt')`],
    ["mqtt's connect (ws, socks, tls)", `{ const r = (await import('node:module')).createRequire(${JSON.stringify(join(root, 'package.json'))}); r('mqtt/lib/connect/ws'); r('mqtt/lib/connect/tcp'); r('mqtt/lib/connect/tls'); }`],
    ['the agent (start.js and what it imports)', `await import(${JSON.stringify(join(root, 'dist/start.js'))})`],
    ['the management API (http.js, a server)', `(await import(${JSON.stringify(join(root, 'dist/manage/http.js'))}), process.getBuiltinModule('node:http').createServer().close())`],
    ['cron-parser (only with a cron timer)', `await import('cron-parser')`],
    ['prom-client (only when /metrics is scraped)', `await import('prom-client')`],
    ['modbus-serial (only with Modbus devices)', `await import('modbus-serial')`],
  ];
  const launcher = readFileSync(join(root, 'scripts/edge-agent'), 'utf8');
  const heapFlags = [
    ...(/^export NODE_OPTIONS="([^$"]+)/m.exec(launcher)?.[1] ?? '').split(' '),
    ...(/^NODE_FLAGS="\$\{EDGE_AGENT_NODE_FLAGS-([^}]*)\}"/m.exec(launcher)?.[1] ?? '').split(' '),
  ].filter(Boolean);
  const script = `
import { readFileSync } from 'node:fs';
const rss = () => Number(/VmRSS:\\s+(\\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;
const settle = async () => { for (let i = 0; i < 3; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 100)); } };
await settle();
const rows = [];
let last = { rss: rss(), heap: process.memoryUsage().heapUsed };
rows.push(['node at start', last.rss, last.heap]);
${steps.map(([name, code]) => `${code};\nawait settle();\n{ const now = { rss: rss(), heap: process.memoryUsage().heapUsed }; rows.push([${JSON.stringify(name)}, now.rss - last.rss, now.heap - last.heap]); last = now; }`).join('\n')}
rows.push(['total', last.rss, last.heap]);
console.log(JSON.stringify(rows));
`;
  const runs: [string, number, number][][] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const out = execFileSync(process.execPath, [...heapFlags, '--expose-gc', '--input-type=module', '-e', script], { cwd: root, encoding: 'utf8' });
    runs.push(JSON.parse(out));
  }
  console.log(`module load costs (node ${process.version} ${heapFlags.join(' ')}; loaded in this order, each row what it added; median of ${ROUNDS} processes)`);
  console.log(`  ${'step'.padEnd(56)} ${'RSS MB'.padStart(7)} ${'heap MB'.padStart(8)}`);
  for (let row = 0; row < runs[0].length; row++) {
    const name = runs[0][row][0];
    console.log(`  ${name.padEnd(56)} ${mb(median(runs.map((r) => r[row][1]))).padStart(7)} ${mb(median(runs.map((r) => r[row][2]))).padStart(8)}`);
  }
}

if (values.modules) moduleCosts();
else await agentRuns();
