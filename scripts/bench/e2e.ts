// End to end against Node-RED 4: the same chain, the same burst, the same machine, each run
// against a fresh Mosquitto, the agent run as systemd runs it (scripts/edge-agent run --config
// FILE, the built CLI with the launcher's flags) and Node-RED as `node red.js` with a flow file.
//
// Workloads (BENCH_WORKLOADS, default a,b,c,batch,startup):
//   a      1,000 topics (100 devices × 10 points, bench/d<n>/p<k>), one value per message as plain
//          text; threshold 0..1000 holding the previous value → deadband 0.5 per point → MQTT out
//          QoS 1, one record per message, the durable outbox on (the agent's defaults).
//   b      1,000 topics (bench/d<n>/state), JSON with four fields per message; the same chain on
//          `temperature`, the record carrying the three numbers.
//   c      1,000 topics (bench/d<n>/power), JSON {power, ts}, 200 readings each over an hour of data time:
//          a 15-minute window (avg, min, max) and 15-minute energy (instant power, trapezoids
//          split at the boundary); Node-RED: a function node doing the same aggregation.
//   batch  workload a for the agent alone, its upstream at batch 100 (JSON arrays of records).
//   startup  from spawn to the first record at the broker: the agent on config/agent.yaml (its
//          broker, port and data dir rewritten), Node-RED on an inject (at once, then every 0.1 s:
//          a message injected before its broker connection is up is lost) → MQTT out flow.
// BENCH_MESSAGES messages per run (default 200,000), published at QoS 0 by another process from
// a prebuilt buffer, as fast as Mosquitto takes them. A subscriber (mqtt.js) counts outputs until
// BENCH_IDLE_MS (10,000) without one; each side must deliver the count a reference model of the
// chain computes here, and the output says whether they did. Figures: delivered outputs/s (from
// the first publish to the last output), peak RSS (VmHWM) and CPU seconds (utime + stime) of the
// process, medians of BENCH_ROUNDS (3) rounds, agent and Node-RED interleaved.
// On workload a a third side runs in the same rounds, "raw mqtt.js": a bare MQTT.js program that
// subscribes to the same topics and republishes every message at QoS 1, with no processing and
// no storage: what MQTT.js and Mosquitto allow on this machine, the ceiling of any MQTT.js program
// (it republishes all messages, outliers and unchanged values too: compare messages/s in).
//
// `--before COMMIT` also runs that commit's agent (extracted and built in a temporary folder),
// interleaved, for before/after figures from one run.
// BENCH_OUTBOX="{ group_records: 5000 }" gives the agent's config that outbox section.
// BENCH_LOG=FILE appends every process's output there. BENCH_AGENT_ONLY=1 runs the agent alone (e.g. EDGE_AGENT_NODE_FLAGS="--optimize-for-size
// --cpu-prof --cpu-prof-dir=DIR" to profile it: the launcher passes those flags to node).
//
// Node-RED 4 is installed from npm into ~/.cache/edge-agent-bench/node-red-4 (XDG_CACHE_HOME
// honoured) the first time: a peer for the comparison, not a dependency of the project.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';
import mqtt from 'mqtt';
import { root, variant } from './checkout.js';
import { freePort, startMosquitto } from './mosquitto.js';

const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 200_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const IDLE_MS = Number(process.env.BENCH_IDLE_MS ?? 10_000);
const WORKLOADS = (process.env.BENCH_WORKLOADS ?? 'a,b,c,batch,startup').split(',');
const TOPICS = 1000;
const DEVICES = 100;
const POINTS = 10;
const MB = 2 ** 20;
const { values: args } = parseArgs({ options: { before: { type: 'string' } } });
const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

// ---------------------------------------------------------------- Node-RED, cached

function nodeRed(): string {
  const cache = join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'edge-agent-bench', 'node-red-4');
  const red = join(cache, 'node_modules/node-red/red.js');
  if (!existsSync(red)) {
    console.log(`installing Node-RED 4 into ${cache} (once)`);
    mkdirSync(cache, { recursive: true });
    execFileSync('npm', ['install', '--prefix', cache, 'node-red@4', '--no-audit', '--no-fund', '--loglevel=error'], { stdio: 'inherit' });
  }
  return red;
}

// ---------------------------------------------------------------- the data and its reference model

/** A small deterministic generator, so that every run publishes the same values. */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

interface Message {
  topic: string;
  payload: string;
}

interface Workload {
  /** Makes `messages` and `expected` afresh before each run (data stamped relative to now). */
  refresh?: () => void;
  name: string;
  messages: Message[];
  /** Outputs the chain gives for these messages (computed here, the same rules as both sides). */
  expected: number;
  agentConfig: (broker: string, http: number, dataDir: string) => string;
  flow: (brokerPort: number) => unknown[];
}

/** Values around 500 with noise, an outlier (1500 or -5) now and then: the threshold and the deadband both act. */
function values(count: number): number[] {
  const next = random(42);
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    const topic = i % TOPICS;
    const round = Math.floor(i / TOPICS);
    const r = next();
    if (r < 0.015) out.push(1500);
    else if (r < 0.02) out.push(-5);
    else out.push(Number((500 + 300 * Math.sin(round / 7 + topic) + (next() - 0.5) * 4).toFixed(2)));
  }
  return out;
}

/** threshold 0..1000 fill previous (an outlier before any good value is dropped), then deadband 0.5 against the last value passed. */
function thresholdDeadband(keys: number[], vals: number[]): number {
  const good = new Map<number, number>();
  const passed = new Map<number, number>();
  let n = 0;
  for (let i = 0; i < vals.length; i++) {
    let v = vals[i];
    if (v < 0 || v > 1000) {
      const g = good.get(keys[i]);
      if (g === undefined) continue;
      v = g;
    } else good.set(keys[i], v);
    const last = passed.get(keys[i]);
    if (last === undefined || Math.abs(v - last) > 0.5) {
      passed.set(keys[i], v);
      n++;
    }
  }
  return n;
}

const agentHeader = (broker: string, http: number, dataDir: string) =>
  `agent: { id: bench, data_dir: "${dataDir}", http: "127.0.0.1:${http}", log_level: info }\n${process.env.BENCH_OUTBOX ? `outbox: ${process.env.BENCH_OUTBOX}\n` : ''}`;

/** The Node-RED nodes every flow shares: a tab, the broker, mqtt in, mqtt out. */
function flowFrame(brokerPort: number, topic: string, datatype: 'utf8' | 'json', middle: Record<string, unknown>[]): unknown[] {
  // ids unlike any property value: Node-RED takes a string equal to a node's id for a reference to it
  const ids = ['node-in', ...middle.map((n) => n.id as string), 'node-out'];
  const wire = (id: string) => {
    const i = ids.indexOf(id);
    return i + 1 < ids.length ? [[ids[i + 1]]] : [];
  };
  return [
    { id: 'node-tab', type: 'tab', label: 'bench' },
    { id: 'node-broker', type: 'mqtt-broker', name: 'mosquitto', broker: '127.0.0.1', port: String(brokerPort), clientid: 'node-red-bench', autoConnect: true, usetls: false, protocolVersion: '4', keepalive: '60', cleansession: true },
    { id: 'node-in', type: 'mqtt in', z: 'node-tab', topic, qos: '0', datatype, broker: 'node-broker', nl: false, rap: true, rh: 0, inputs: 0, wires: wire('node-in') },
    ...middle.map((node) => ({ z: 'node-tab', ...node, wires: wire(node.id as string) })),
    { id: 'node-out', type: 'mqtt out', z: 'node-tab', topic: '', qos: '1', retain: 'false', broker: 'node-broker', wires: [] },
  ];
}

function workloadA(): Workload {
  const vals = values(MESSAGES);
  const keys = vals.map((_, i) => i % TOPICS);
  const messages = vals.map((v, i) => ({ topic: `bench/d${Math.floor((i % TOPICS) / POINTS)}/p${i % POINTS}`, payload: String(v) }));
  return {
    name: `(a) ${TOPICS} topics (${DEVICES} devices × ${POINTS} points), one value per message, threshold → deadband 0.5 → MQTT QoS 1`,
    messages,
    expected: thresholdDeadband(keys, vals),
    agentConfig: (broker, http, dataDir) => agentA(broker, http, dataDir, 'out/{stream}/{device}', 1),
    flow: (port) =>
      flowFrame(port, 'bench/+/+', 'utf8', [
        {
          id: 'node-threshold',
          type: 'function',
          name: 'threshold 0..1000, previous',
          func: `let good = context.get('good');
if (!good) { good = new Map(); context.set('good', good); }
const v = Number(msg.payload);
if (v < 0 || v > 1000) {
  const g = good.get(msg.topic);
  if (g === undefined) return null;
  msg.payload = g;
  msg.quality = 'estimated';
} else {
  good.set(msg.topic, v);
  msg.payload = v;
}
return msg;`,
          outputs: 1,
        },
        { id: 'node-deadband', type: 'rbe', func: 'deadband', gap: '0.5', start: '', inout: 'out', septopics: true, property: 'payload', topi: 'topic' },
        {
          id: 'node-format',
          type: 'function',
          name: 'record',
          func: `const [, device, point] = msg.topic.split('/');
msg.topic = 'out/' + point + '/dev-' + device;
msg.payload = JSON.stringify({ agent: 'bench', stream: point, device: 'dev-' + device, ts: Date.now(), values: { [point]: msg.payload }, quality: msg.quality && { [point]: msg.quality } });
return msg;`,
          outputs: 1,
        },
      ]),
  };
}

/** The agent's side of workload a: a template device of 10 points, a stream per point. */
function agentA(broker: string, http: number, dataDir: string, topic: string, batch: number): string {
  const points = Array.from({ length: POINTS }, (_, k) => `p${k}`);
  return `${agentHeader(broker, http, dataDir)}devices:
  - id: "dev-{1}"
    protocol: mqtt
    broker: ${broker}
    points: [${points.map((p) => `{ name: ${p}, topic: "bench/+/${p}" }`).join(', ')}]
streams:
${points.map((p) => `  - { name: ${p}, from: { device: "dev-{1}", points: [${p}] }, steps: [{ threshold: { point: ${p}, min: 0, max: 1000, fill: previous } }, { change: { point: ${p}, deadband: 0.5 } }], to: [out] }`).join('\n')}
upstream: [{ name: out, type: mqtt, url: "${broker}", topic: "${topic}", qos: 1, batch: ${batch} }]
`;
}

function workloadB(): Workload {
  const vals = values(MESSAGES);
  const next = random(7);
  const keys = vals.map((_, i) => i % TOPICS);
  const messages = vals.map((v, i) => ({
    topic: `bench/d${i % TOPICS}/state`,
    payload: JSON.stringify({ temperature: v, humidity: Number((40 + next() * 20).toFixed(1)), pressure: Number((1000 + next() * 30).toFixed(1)), status: 'ok' }),
  }));
  return {
    name: `(b) ${TOPICS} topics, JSON of four fields per message, threshold → deadband 0.5 on one → MQTT QoS 1`,
    messages,
    expected: thresholdDeadband(keys, vals),
    agentConfig: (broker, http, dataDir) => `${agentHeader(broker, http, dataDir)}devices:
  - id: "dev-{1}"
    protocol: mqtt
    broker: ${broker}
    points: [{ name: temperature, topic: "bench/+/state", json: temperature }, { name: humidity, topic: "bench/+/state", json: humidity }, { name: pressure, topic: "bench/+/state", json: pressure }]
streams:
  - { name: climate, from: { device: "dev-{1}" }, steps: [{ threshold: { point: temperature, min: 0, max: 1000, fill: previous } }, { change: { point: temperature, deadband: 0.5 } }], to: [out] }
upstream: [{ name: out, type: mqtt, url: "${broker}", topic: "out/{stream}/{device}", qos: 1 }]
`,
    flow: (port) =>
      flowFrame(port, 'bench/+/state', 'json', [
        {
          id: 'node-threshold',
          type: 'function',
          name: 'threshold 0..1000, previous',
          func: `let good = context.get('good');
if (!good) { good = new Map(); context.set('good', good); }
const p = msg.payload;
const v = p.temperature;
if (typeof v !== 'number') return null;
if (v < 0 || v > 1000) {
  const g = good.get(msg.topic);
  if (g === undefined) return null;
  p.temperature = g;
  msg.quality = 'estimated';
} else good.set(msg.topic, v);
return msg;`,
          outputs: 1,
        },
        { id: 'node-deadband', type: 'rbe', func: 'deadband', gap: '0.5', start: '', inout: 'out', septopics: true, property: 'payload.temperature', topi: 'topic' },
        {
          id: 'node-format',
          type: 'function',
          name: 'record',
          func: `const device = 'dev-' + msg.topic.split('/')[1];
const p = msg.payload;
msg.topic = 'out/climate/' + device;
msg.payload = JSON.stringify({ agent: 'bench', stream: 'climate', device, ts: Date.now(), values: { temperature: p.temperature, humidity: p.humidity, pressure: p.pressure }, quality: msg.quality && { temperature: msg.quality } });
return msg;`,
          outputs: 1,
        },
      ]),
  };
}

const WINDOW_MS = 900_000;

/**
 * Data time for workload c: one reading per topic every `spacing`, from 5 minutes ago to at most
 * 55 minutes ahead (within agent.max_future, 1 h), so that during the run the agent's clock
 * closes no window (it would at end + size: the earliest window ends after now - 5 min) and
 * every window closes by data, as in Node-RED's function. Made afresh before each run.
 */
function powerMessages(): { messages: Message[]; expected: number } {
  const perTopic = Math.ceil(MESSAGES / TOPICS);
  const spacing = Math.min(60_000, Math.floor(3_600_000 / perTopic));
  const start = Date.now() - 300_000;
  const next = random(3);
  const messages: Message[] = [];
  const windows = new Map<number, Set<number>>();
  for (let i = 0; i < MESSAGES; i++) {
    const topic = i % TOPICS;
    const ts = start + Math.floor(i / TOPICS) * spacing;
    const power = Number((50 + 40 * Math.sin(i / 5000 + topic) + next() * 5).toFixed(3));
    messages.push({ topic: `bench/d${topic}/power`, payload: JSON.stringify({ power, ts }) });
    let seen = windows.get(topic);
    if (!seen) windows.set(topic, (seen = new Set()));
    seen.add(Math.floor(ts / WINDOW_MS));
  }
  // every window but the last of each topic closes: one window record and one energy record each
  let expected = 0;
  for (const seen of windows.values()) expected += 2 * (seen.size - 1);
  return { messages, expected };
}

function workloadC(): Workload {
  const workload: Workload = {
    name: `(c) ${TOPICS} topics, JSON {power, ts}: 15-minute window (avg, min, max) + 15-minute energy → MQTT QoS 1`,
    ...powerMessages(),
    refresh: () => Object.assign(workload, powerMessages()),
    agentConfig: (broker, http, dataDir) => `${agentHeader(broker, http, dataDir)}devices:
  - id: "dev-{1}"
    protocol: mqtt
    broker: ${broker}
    points: [{ name: power, topic: "bench/+/power", json: power, ts: ts }]
streams:
  - { name: power-15m, from: { device: "dev-{1}" }, steps: [{ window: { size: 15m, functions: { power: [avg, min, max] } } }], to: [out] }
  - { name: energy-15m, from: { device: "dev-{1}" }, steps: [{ energy: { method: instant-power, point: power, window: 15m, output: kwh_15m } }, { filter: "kwh_15m >= 0" }], to: [out] }
upstream: [{ name: out, type: mqtt, url: "${broker}", topic: "out/{stream}/{device}", qos: 1 }]
`,
    flow: (port) =>
      flowFrame(port, 'bench/+/power', 'json', [
        {
          id: 'node-aggregate',
          type: 'function',
          name: '15-minute window and energy',
          func: `const W = ${WINDOW_MS};
let keys = context.get('keys');
if (!keys) { keys = new Map(); context.set('keys', keys); }
const { power, ts } = msg.payload;
const device = 'dev-' + msg.topic.split('/')[1];
const start = Math.floor(ts / W) * W;
let k = keys.get(device);
const out = [];
if (!k) {
  k = { start, n: 0, sum: 0, min: Infinity, max: -Infinity, kwh: 0, ts, power };
  keys.set(device, k);
} else if (ts > k.ts) {
  const end = k.start + W;
  if (start > k.start) {
    // the interval crosses the boundary: its part up to the end goes to the closing window
    const atEnd = k.power + ((power - k.power) * (end - k.ts)) / (ts - k.ts);
    k.kwh += ((k.power + atEnd) / 2) * (end - k.ts) / 3600000;
    out.push({ topic: 'out/energy-15m/' + device, payload: JSON.stringify({ agent: 'bench', stream: 'energy-15m', device, ts: k.start, values: { kwh_15m: k.kwh } }) });
    out.push({ topic: 'out/power-15m/' + device, payload: JSON.stringify({ agent: 'bench', stream: 'power-15m', device, ts: k.start, values: { power_avg: k.sum / k.n, power_min: k.min, power_max: k.max } }) });
    k.kwh = ((atEnd + power) / 2) * (ts - end) / 3600000;
    k.start = start; k.n = 0; k.sum = 0; k.min = Infinity; k.max = -Infinity;
  } else k.kwh += ((k.power + power) / 2) * (ts - k.ts) / 3600000;
  k.ts = ts;
  k.power = power;
}
k.n++; k.sum += power; k.min = Math.min(k.min, power); k.max = Math.max(k.max, power);
return [out];`,
          outputs: 1,
        },
      ]),
  };
  return workload;
}

// ---------------------------------------------------------------- processes and their figures

function procStats(pid: number): { hwm: number; cpu: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? NaN) * 1024;
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields from the third (state): utime is the 14th field of the line, stime the 15th
  const cpu = (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  return { hwm, cpu };
}

/** Resident MB now by kind of mapping (/proc/PID/smaps): malloc's brk heap, other anonymous memory (V8's heap, malloc arenas, buffers), files. */
function resident(pid: number): string {
  const kinds: Record<string, number> = {};
  let kind = '';
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const mapping = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (mapping) {
      const path = mapping[1];
      kind = path === '[heap]' ? 'brk heap' : path.startsWith('/') ? 'files' : path.startsWith('[') ? 'stacks' : 'anonymous';
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) kinds[kind] = (kinds[kind] ?? 0) + Number(rss[1]) / 1024;
  }
  return Object.entries(kinds).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', ');
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(check: () => boolean, ms: number, what: string): Promise<void> {
  for (const end = Date.now() + ms; !check(); ) {
    if (Date.now() > end) throw new Error(`no ${what} within ${ms} ms`);
    await sleep(20);
  }
}

interface Target {
  child: ChildProcess;
  log: () => string;
  stop: () => Promise<void>;
}

function watch(child: ChildProcess, cleanup: () => void): Target {
  let log = '';
  const keep = (chunk: Buffer) => {
    log = (log + chunk).slice(-200_000);
    if (process.env.BENCH_LOG) appendFileSync(process.env.BENCH_LOG, chunk);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  return {
    child,
    log: () => log,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        // SIGTERM first: a profile (EDGE_AGENT_NODE_FLAGS="--cpu-prof") is written on a clean exit
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
      cleanup();
    },
  };
}

async function startAgent(configText: (http: number, dataDir: string) => string, checkoutDir = root): Promise<Target> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-e2e-agent-'));
  const file = join(dir, 'agent.yaml');
  writeFileSync(file, configText(await freePort(), join(dir, 'data')));
  const child = spawn(join(checkoutDir, 'scripts/edge-agent'), ['run', '--config', file], {
    env: { ...process.env, STATE_DIRECTORY: join(dir, 'data'), NODE_OPTIONS: process.env.BENCH_AGENT_NODE_OPTIONS ?? '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return watch(child, () => rmSync(dir, { recursive: true, force: true }));
}

async function startNodeRed(flow: unknown[]): Promise<Target> {
  const red = nodeRed();
  const dir = mkdtempSync(join(tmpdir(), 'bench-e2e-node-red-'));
  const flowFile = join(dir, 'flows.json');
  writeFileSync(flowFile, JSON.stringify(flow));
  writeFileSync(
    join(dir, 'settings.js'),
    `module.exports = { uiHost: '127.0.0.1', uiPort: ${await freePort()}, flowFile: ${JSON.stringify(flowFile)}, userDir: ${JSON.stringify(dir)},
  credentialSecret: false, logging: { console: { level: 'info', metrics: false, audit: false } }, telemetry: { enabled: false }, diagnostics: { enabled: false },
  externalModules: { autoInstall: false }, editorTheme: { tours: false } };\n`,
  );
  const child = spawn(process.execPath, [red, '-u', dir, '-s', join(dir, 'settings.js'), flowFile], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } });
  return watch(child, () => rmSync(dir, { recursive: true, force: true }));
}

/**
 * The ceiling: MQTT.js alone, subscribing to `filter` and republishing each message at QoS 1 to
 * out/<its topic>, on two connections as the agent has (one in, one out), nothing in between.
 * Node's default flags, as Node-RED runs.
 */
async function startRawLoop(brokerPort: number, filter: string): Promise<Target> {
  const code = `
const mqtt = require(${JSON.stringify(createRequire(import.meta.url).resolve('mqtt'))});
const url = 'mqtt://127.0.0.1:${brokerPort}';
const out = mqtt.connect(url, { clientId: 'raw-out-' + process.pid, clean: true });
const inn = mqtt.connect(url, { clientId: 'raw-in-' + process.pid, clean: true });
const options = { qos: 1, retain: false };
let ready = 0;
const up = () => ++ready === 2 && console.log('raw loop ready');
out.once('connect', () => { out.stream.setNoDelay(true); up(); });
inn.once('connect', () => inn.subscribe(${JSON.stringify(filter)}, { qos: 0 }, up));
inn.on('message', (topic, payload) => out.publish('out/' + topic, payload, options));
process.on('SIGTERM', () => process.exit(0));`;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } });
  return watch(child, () => {});
}

/** The raw MQTT publisher: another process writes CONNECT and the prebuilt PUBLISH packets (QoS 0), then DISCONNECT. */
function publisher(port: number, burstFile: string): ChildProcess {
  const code = `
const net = require('node:net');
const burst = require('node:fs').readFileSync(${JSON.stringify(burstFile)});
const str = (s) => { const b = Buffer.from(s); const l = Buffer.alloc(2); l.writeUInt16BE(b.length); return Buffer.concat([l, b]); };
const connect = Buffer.concat([Buffer.from([0x10]), Buffer.from([12 + ('pub-' + process.pid).length]), str('MQTT'), Buffer.from([4, 2, 0, 60]), str('pub-' + process.pid)]);
const socket = net.connect(${port}, '127.0.0.1', () => {
  socket.write(connect);
  socket.once('data', () => {
    process.stdout.write('publishing\\n');
    socket.write(burst, () => socket.end(Buffer.from([0xe0, 0])));
  });
});
socket.on('error', () => process.exit(0));`;
  return spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
}

function burst(messages: Message[]): Buffer {
  const varint = (n: number) => {
    const out: number[] = [];
    do {
      let d = n % 128;
      n = Math.floor(n / 128);
      if (n > 0) d |= 128;
      out.push(d);
    } while (n > 0);
    return Buffer.from(out);
  };
  const parts: Buffer[] = [];
  for (const { topic, payload } of messages) {
    const t = Buffer.from(topic);
    const p = Buffer.from(payload);
    const length = Buffer.alloc(2);
    length.writeUInt16BE(t.length);
    parts.push(Buffer.from([0x30]), varint(2 + t.length + p.length), length, t, p);
  }
  return Buffer.concat(parts);
}

/** Counts records at the broker (a JSON array counts as its length), and when the last came. */
async function subscriber(url: string, filter: string) {
  const client = await mqtt.connectAsync(url, { clientId: `bench-counter-${process.pid}`, clean: true });
  const counter = { records: 0, first: 0, last: 0, close: () => client.endAsync(true) };
  client.on('message', (_topic, payload) => {
    counter.records += payload[0] === 0x5b ? (JSON.parse(payload.toString()) as unknown[]).length : 1;
    counter.last = performance.now();
    counter.first ||= counter.last;
  });
  await client.subscribeAsync(filter, { qos: 1 });
  return counter;
}

interface RunResult {
  delivered: number;
  /** What the reference model said this run's burst gives. */
  expected: number;
  /** outputs/s */
  rate: number;
  /** messages/s taken in: the burst over the time to the last output */
  taken: number;
  hwm: number;
  cpu: number;
  /** CPU seconds of Mosquitto in the run: with the publisher and the counter it shares the 2 cores. */
  brokerCpu: number;
}

type Kind = 'agent' | 'before' | 'node-red' | 'raw';

async function run(kind: Kind, workload: Workload, burstFile: string, batchTopic?: boolean): Promise<RunResult> {
  if (workload.refresh) {
    workload.refresh();
    writeFileSync(burstFile, burst(workload.messages));
  }
  const broker = await startMosquitto(['max_queued_messages 0', 'max_inflight_messages 0']);
  const counter = await subscriber(broker.url, 'out/#');
  const target =
    kind === 'node-red'
      ? await startNodeRed(workload.flow(broker.port))
      : kind === 'raw'
        ? await startRawLoop(broker.port, 'bench/+/+')
        : await startAgent((http, dataDir) => (batchTopic ? agentA(broker.url, http, dataDir, 'out/{stream}', 100) : workload.agentConfig(broker.url, http, dataDir)), kind === 'before' ? beforeDir : root);
  try {
    const ready = kind === 'raw' ? [/raw loop ready/] : kind !== 'node-red' ? [/agent bench running/, /MQTT broker: connected to/, /upstream out: connected to/] : [/Started flows/, /Connected to broker/];
    await until(() => ready.every((r) => r.test(target.log())) || target.child.exitCode !== null, 60_000, `${kind} ready`).catch((err: Error) => {
      throw new Error(`${err.message}: ${target.log().slice(-3000)}`);
    });
    if (target.child.exitCode !== null) throw new Error(`${kind} exited: ${target.log().slice(-3000)}`);
    await sleep(1000); // subscriptions made
    const pub = publisher(broker.port, burstFile);
    let started = 0;
    pub.stdout!.on('data', () => (started ||= performance.now()));
    await until(() => started > 0, 10_000, 'publisher');
    await until(() => counter.last > 0 && performance.now() - counter.last > IDLE_MS, 30 * 60_000, 'end of outputs');
    const { hwm, cpu } = procStats(target.child.pid!);
    const brokerCpu = procStats(broker.pid).cpu;
    pub.kill('SIGKILL');
    if (process.env.BENCH_VERBOSE) console.error(`${kind}: ${counter.records} records, ${((counter.last - started) / 1000).toFixed(1)} s, peak RSS ${(hwm / MB).toFixed(0)} MB, CPU ${cpu.toFixed(1)} s; resident now: ${resident(target.child.pid!)}`);
    const seconds = (counter.last - started) / 1000;
    // the raw loop republishes every message
    const expected = kind === 'raw' ? workload.messages.length : workload.expected;
    return { delivered: counter.records, expected, rate: counter.records / seconds, taken: workload.messages.length / seconds, hwm, cpu, brokerCpu };
  } finally {
    await target.stop();
    await counter.close();
    broker.stop();
  }
}

async function startup(kind: 'agent' | 'node-red'): Promise<number> {
  const broker = await startMosquitto();
  const counter = await subscriber(broker.url, 'edge/#');
  const spawned = performance.now();
  const defaultConfig = readFileSync(join(root, 'config/agent.yaml'), 'utf8');
  const target =
    kind === 'agent'
      ? await startAgent((http, dataDir) => defaultConfig.replace('http: 127.0.0.1:8080', `http: 127.0.0.1:${http}`).replace('mqtt://127.0.0.1:1883', broker.url).replace('${STATE_DIRECTORY:-../data}', dataDir))
      : await startNodeRed([
          { id: 'node-tab', type: 'tab', label: 'startup' },
          { id: 'node-broker', type: 'mqtt-broker', broker: '127.0.0.1', port: String(broker.port), clientid: 'node-red-startup', autoConnect: true, usetls: false, protocolVersion: '4', keepalive: '60', cleansession: true },
          { id: 'node-inject', type: 'inject', z: 'node-tab', once: true, onceDelay: 0.1, repeat: '0.1', topic: 'edge/node-red/startup', payload: '1', payloadType: 'num', props: [{ p: 'payload' }, { p: 'topic', vt: 'str' }], wires: [['node-out']] },
          { id: 'node-out', type: 'mqtt out', z: 'node-tab', topic: '', qos: '1', retain: 'false', broker: 'node-broker', wires: [] },
        ]);
  try {
    await until(() => counter.first > 0 || target.child.exitCode !== null, 60_000, `a first record from ${kind}`);
    if (target.child.exitCode !== null) throw new Error(`${kind} exited: ${target.log().slice(-3000)}`);
    return (counter.first - spawned) / 1000;
  } finally {
    await target.stop();
    await counter.close();
    broker.stop();
  }
}

// ---------------------------------------------------------------- the runs

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const int = (n: number) => Math.round(n).toLocaleString('en-US');
const ratio = (a: number, b: number) => `×${(a / b).toFixed(2)}`;

function summary(label: string, runs: RunResult[]) {
  const rate = median(runs.map((r) => r.rate));
  const hwm = median(runs.map((r) => r.hwm));
  const cpu = median(runs.map((r) => r.cpu));
  const taken = median(runs.map((r) => r.taken));
  const brokerCpu = median(runs.map((r) => r.brokerCpu));
  console.log(
    `  ${label.padEnd(22)} ${int(rate).padStart(7)} outputs/s (runs ${runs.map((r) => int(r.rate)).join(', ')}; ${int(taken)} messages/s in)  peak RSS ${(hwm / MB).toFixed(0).padStart(4)} MB (${runs.map((r) => (r.hwm / MB).toFixed(0)).join(', ')})  CPU ${cpu.toFixed(1).padStart(5)} s (${runs.map((r) => r.cpu.toFixed(1)).join(', ')})  Mosquitto CPU ${brokerCpu.toFixed(1)} s  delivered ${runs.map((r) => int(r.delivered)).join(', ')}`,
  );
  return { rate, hwm, cpu };
}

const describeGit = execFileSync('git', ['-C', root, 'describe', '--always', '--dirty'], { encoding: 'utf8' }).trim();
const redVersion = JSON.parse(readFileSync(join(dirname(nodeRed()), 'package.json'), 'utf8')).version as string;
console.log(`e2e: edge-agent ${describeGit} (scripts/edge-agent run) against Node-RED ${redVersion}; node ${process.version}; ${MESSAGES.toLocaleString('en-US')} messages per run, medians of ${ROUNDS} rounds, counted until ${IDLE_MS / 1000} s without output`);

const beforeVariant = args.before === undefined ? undefined : variant(args.before, 'bench-e2e');
const beforeDir = beforeVariant?.dir ?? root;
const workloads: Workload[] = [];
if (WORKLOADS.includes('a') || WORKLOADS.includes('batch')) workloads.push(workloadA());
if (WORKLOADS.includes('b')) workloads.push(workloadB());
if (WORKLOADS.includes('c')) workloads.push(workloadC());
const files = new Map<Workload, string>();
const scratch = mkdtempSync(join(tmpdir(), 'bench-e2e-'));
for (const workload of workloads) {
  const file = join(scratch, `${files.size}.bin`);
  writeFileSync(file, burst(workload.messages));
  files.set(workload, file);
}

try {
  for (const workload of workloads) {
    const isA = workload.name.startsWith('(a)');
    const compare = !isA || WORKLOADS.includes('a');
    const results = { agent: [] as RunResult[], before: [] as RunResult[], nodeRed: [] as RunResult[], raw: [] as RunResult[], batch: [] as RunResult[] };
    for (let round = 0; round < ROUNDS; round++) {
      if (compare) {
        if (args.before !== undefined) results.before.push(await run('before', workload, files.get(workload)!));
        results.agent.push(await run('agent', workload, files.get(workload)!));
        if (!process.env.BENCH_AGENT_ONLY) results.nodeRed.push(await run('node-red', workload, files.get(workload)!));
        if (!process.env.BENCH_AGENT_ONLY && isA) results.raw.push(await run('raw', workload, files.get(workload)!));
      }
      if (isA && WORKLOADS.includes('batch')) results.batch.push(await run('agent', workload, files.get(workload)!, true));
    }
    console.log(`\n${workload.name}: ${int(workload.messages.length)} messages, ${workload.refresh ? 'stamped afresh for each run' : `${int(workload.expected)} outputs expected`}`);
    const before = results.before.length > 0 ? summary(`agent before ${args.before}`, results.before) : undefined;
    if (compare && results.nodeRed.length === 0) summary('agent', results.agent);
    else if (compare) {
      const agent = summary('agent', results.agent);
      const red = summary('Node-RED', results.nodeRed);
      console.log(`  agent / Node-RED: outputs/s ${ratio(agent.rate, red.rate)}, peak RSS ${ratio(agent.hwm, red.hwm)}, CPU ${ratio(agent.cpu, red.cpu)}`);
      if (before) console.log(`  agent before ${args.before} / Node-RED: outputs/s ${ratio(before.rate, red.rate)}, peak RSS ${ratio(before.hwm, red.hwm)}, CPU ${ratio(before.cpu, red.cpu)}; agent / before: outputs/s ${ratio(agent.rate, before.rate)}, CPU ${ratio(agent.cpu, before.cpu)}`);
      if (results.raw.length) {
        const raw = summary('raw mqtt.js loop', results.raw);
        const takenOf = (runs: RunResult[]) => median(runs.map((r) => r.taken));
        const rawOk = results.raw.every((r) => r.delivered === r.expected);
        console.log(
          `  raw mqtt.js loop (every message republished, ${rawOk ? 'all delivered' : `delivered ${results.raw.map((r) => int(r.delivered)).join(', ')} of ${int(results.raw[0].expected)}`}): messages/s in ×${(takenOf(results.raw) / takenOf(results.nodeRed)).toFixed(2)} Node-RED's, agent's ×${(takenOf(results.agent) / takenOf(results.raw)).toFixed(2)} of it; CPU per message ${((raw.cpu / workload.messages.length) * 1e6).toFixed(1)} µs (agent ${((agent.cpu / workload.messages.length) * 1e6).toFixed(1)}, Node-RED ${((red.cpu / workload.messages.length) * 1e6).toFixed(1)})`,
        );
      }
      const all = [...results.before, ...results.agent, ...results.nodeRed];
      const same = all.every((r) => r.delivered === r.expected);
      const expected = [...new Set(all.map((r) => int(r.expected)))].join(' or ');
      console.log(`  outputs: ${same ? `both delivered all ${expected} expected in every run` : `NOT THE SAME: expected ${all.map((r) => int(r.expected)).join(', ')}; delivered, agent ${results.agent.map((r) => r.delivered).join(', ')}, Node-RED ${results.nodeRed.map((r) => r.delivered).join(', ')}${results.before.length ? `, before ${results.before.map((r) => r.delivered).join(', ')}` : ''}`}`);
    }
    if (results.batch.length) {
      const b = summary('agent, upstream batch 100', results.batch);
      const all = results.batch.every((r) => r.delivered === r.expected);
      console.log(`  (topic out/{stream}, JSON arrays of up to 100 records; ${all ? 'all outputs delivered' : `delivered ${results.batch.map((r) => r.delivered).join(', ')} of ${workload.expected}`}; ${b.rate.toFixed(0)} records/s)`);
    }
  }
  if (WORKLOADS.includes('startup')) {
    const agent: number[] = [];
    const red: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      agent.push(await startup('agent'));
      red.push(await startup('node-red'));
    }
    console.log(`\nstartup, spawn to the first record at the broker (agent: config/agent.yaml; Node-RED: inject → MQTT out)`);
    console.log(`  agent    ${median(agent).toFixed(2)} s (runs ${agent.map((s) => s.toFixed(2)).join(', ')})`);
    console.log(`  Node-RED ${median(red).toFixed(2)} s (runs ${red.map((s) => s.toFixed(2)).join(', ')})  agent / Node-RED ${ratio(median(agent), median(red))}`);
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
  if (beforeVariant?.temporary) rmSync(beforeVariant.dir, { recursive: true, force: true });
}
process.exit(0);
