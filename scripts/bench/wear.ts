// Storage wear of the agent as a process. It runs as systemd runs it (scripts/edge-agent run
// --config FILE), its data_dir on a real disk (BENCH_DATA_DIR, default under /var/tmp: ext4
// here; on a tmpfs write_bytes would not move), forwarding over MQTT at QoS 1 to a Mosquitto
// started here. A subscriber on that broker counts the payload bytes delivered; /proc/PID/io
// gives the bytes the agent sent to the block layer (write_bytes: counted when a page of a file
// is dirtied, so a page written again before the kernel flushed it counts once). Both are
// taken over the same window, after a warm-up (the database's creation is not counted), and
// the ratio is printed as the median of BENCH_ROUNDS runs:
//   (1) the trickle: 100 simulated devices (3 points each) read once a second, one stream to
//       the MQTT upstream: 100 records/s, the default outbox settings;
//   (2) the same 100 devices read every 100 ms: 1,000 records/s;
//   (3) the trickle with each value of BENCH_WAITS as outbox.group_wait (this checkout only):
//       the curve users choose from (--curve-only: this alone).
// BENCH_DEVICES (100) sets how many devices: 2 is a small gateway, a record or two per group.
// `--before COMMIT` also runs that commit (extracted to a temporary folder, built there, its
// own scripts/edge-agent), interleaved with this checkout, for before/after from one run.
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import mqtt from 'mqtt';
import { thisCheckout, variant, type Variant } from './checkout.js';
import { startMosquitto } from './mosquitto.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 60);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 5);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const WAITS = (process.env.BENCH_WAITS ?? '10ms,100ms,1s,5s,30s').split(',').filter(Boolean);
const DATA_ROOT = process.env.BENCH_DATA_DIR ?? '/var/tmp';
/** Simulated devices of the trickle (each read once a second gives a record). */
const DEVICES = Number(process.env.BENCH_DEVICES ?? 100);
const { values } = parseArgs({ options: { before: { type: 'string' }, 'no-curve': { type: 'boolean' }, 'curve-only': { type: 'boolean' } } });

/** Bytes the process caused to be written to storage so far, and the part truncated before it reached the disk. */
function io(pid: number): { written: number; cancelled: number } {
  const text = readFileSync(`/proc/${pid}/io`, 'utf8');
  const field = (name: string) => Number(new RegExp(`^${name}: (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);
  return { written: field('write_bytes'), cancelled: field('cancelled_write_bytes') };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

const until = async (check: () => boolean, ms: number, what: string) => {
  for (const end = Date.now() + ms; !check(); ) {
    if (Date.now() > end) throw new Error(`no ${what} within ${ms} ms`);
    await sleep(50);
  }
};

/** The agent's config: `devices` simulated meters read every `poll`, one stream to the broker. */
function configText(broker: string, poll: string, groupWait: string | undefined, devices = DEVICES): string {
  return `agent: { id: wear, data_dir: "\${STATE_DIRECTORY}", http: "off", log_level: warn }
devices:
${Array.from({ length: devices }, (_, i) => `  - { id: sim-${i}, protocol: simulator, poll: ${poll}, points: [{ name: power_kw, signal: sine, min: 10, max: 90, period: 10m }, { name: voltage_v, signal: random, min: 225, max: 235 }, { name: energy_kwh, signal: counter, rate: 50 }] }`).join('\n')}
streams:
  - { name: readings, from: { device: "sim-*" }, to: [broker] }
upstream: [{ name: broker, type: mqtt, url: "${broker}", topic: "edge/{agent}/{stream}/{device}", qos: 1 }]
outbox: { max_size: 256MB${groupWait ? `, group_wait: ${groupWait}` : ''} }
`;
}

interface Wear {
  written: number;
  cancelled: number;
  payload: number;
  messages: number;
}

/** One run: the agent on `config`, write_bytes and payload bytes over SECONDS after WARMUP. */
async function measure(variant: Variant, broker: string, config: string): Promise<Wear> {
  mkdirSync(DATA_ROOT, { recursive: true });
  const dir = mkdtempSync(join(DATA_ROOT, 'bench-wear-run-'));
  const file = join(dir, 'agent.yaml');
  writeFileSync(file, config);
  let payload = 0;
  let messages = 0;
  const subscriber = await mqtt.connectAsync(broker, { clean: true });
  subscriber.on('message', (_topic, body) => {
    payload += body.length;
    messages++;
  });
  await subscriber.subscribeAsync('edge/#', { qos: 0 });
  const child = spawn(join(variant.dir, 'scripts/edge-agent'), ['run', '--config', file], {
    env: { ...process.env, STATE_DIRECTORY: join(dir, 'data'), NODE_OPTIONS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout!.on('data', (chunk) => (log = (log + chunk).slice(-20_000)));
  child.stderr!.on('data', (chunk) => (log = (log + chunk).slice(-20_000)));
  const exited = () => child.exitCode !== null || child.signalCode !== null;
  try {
    await until(() => messages > 0 || exited(), 60_000, `message from ${variant.label}`).catch((err: Error) => {
      throw new Error(`${err.message}: ${log.slice(-2000)}`);
    });
    await sleep(WARMUP * 1000);
    if (exited()) throw new Error(`${variant.label} exited (${child.exitCode ?? child.signalCode}): ${log.slice(-2000)}`);
    // scripts/edge-agent execs node: the child is the agent
    const start = { ...io(child.pid!), payload, messages };
    await sleep(SECONDS * 1000);
    const end = { ...io(child.pid!), payload, messages };
    return { written: end.written - start.written, cancelled: end.cancelled - start.cancelled, payload: end.payload - start.payload, messages: end.messages - start.messages };
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => (exited() ? r(null) : child.once('exit', r)));
    await subscriber.endAsync();
    rmSync(dir, { recursive: true, force: true });
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ratio = (w: Wear) => w.written / w.payload;
const kb = (bytes: number) => `${(bytes / 1024).toFixed(bytes < 10 * 1024 ? 2 : 0)} kB`;

function line(label: string, runs: Wear[], reference?: number): string {
  const r = median(runs.map(ratio));
  const mid = runs.find((w) => ratio(w) === r)!;
  const perSecond = (x: number) => `${kb(x / SECONDS)}/s`;
  return `  ${label.padEnd(28)} ${r.toFixed(2).padStart(6)} bytes written per payload byte (runs ${runs.map((w) => ratio(w).toFixed(2)).join(', ')})  median run: written ${perSecond(mid.written)}, payload ${perSecond(mid.payload)} in ${(mid.messages / SECONDS).toFixed(0)} records/s, cancelled ${perSecond(mid.cancelled)}${reference !== undefined && reference !== r ? `  ×${(r / reference).toFixed(2)}` : ''}`;
}

const variants: Variant[] = [];
if (values.before) variants.push(variant(values.before, 'bench-wear'));
variants.push(thisCheckout());
const broker = await startMosquitto();
console.log(`wear: write_bytes of the agent per payload byte delivered, over ${SECONDS} s after a ${WARMUP} s warm-up, median of ${ROUNDS}; data_dir under ${DATA_ROOT} (${execFileSync('df', ['--output=fstype', DATA_ROOT], { encoding: 'utf8' }).split('\n')[1]?.trim()})`);
try {
  const scenarios = [
    { name: `trickle: ${DEVICES} devices read once a second (${DEVICES} records/s), default outbox settings`, poll: '1s' },
    { name: `${DEVICES * 10} records/s: ${DEVICES} devices read every 100 ms, default outbox settings`, poll: '100ms' },
  ];
  for (const scenario of values['curve-only'] ? [] : scenarios) {
    const results = new Map<Variant, Wear[]>(variants.map((v) => [v, []]));
    for (let round = 0; round < ROUNDS; round++) for (const variant of variants) results.get(variant)!.push(await measure(variant, broker.url, configText(broker.url, scenario.poll, undefined)));
    console.log(`\n${scenario.name}`);
    let first: number | undefined;
    for (const variant of variants) {
      first ??= median(results.get(variant)!.map(ratio));
      console.log(line(variant.label, results.get(variant)!, first));
    }
  }
  if (!values['no-curve']) {
    console.log(`\nthe trickle against outbox.group_wait (this checkout; a record waits up to group_wait before it is committed and sent)`);
    const mine = variants.at(-1)!;
    const results = new Map<string, Wear[]>(WAITS.map((w) => [w, []]));
    for (let round = 0; round < ROUNDS; round++) for (const wait of WAITS) results.get(wait)!.push(await measure(mine, broker.url, configText(broker.url, '1s', wait)));
    for (const wait of WAITS) console.log(line(`group_wait: ${wait}`, results.get(wait)!));
  }
} finally {
  broker.stop();
  for (const v of variants) if (v.temporary) rmSync(v.dir, { recursive: true, force: true });
}
