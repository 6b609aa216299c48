import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent } from '../src/start.js';
import { Mosquitto } from './support/mosquitto.js';
import { until } from './support/ports.js';
import { FlakyLink, type LinkMode } from './support/proxy.js';
import { Subscriber } from './support/subscriber.js';

let broker: Mosquitto;
beforeAll(async () => {
  broker = await Mosquitto.start();
});
afterAll(async () => {
  await broker?.stop('SIGKILL');
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
// 40 s of flapping in the suite; FAULTS_LONG=1: 5 minutes
const FLAPPING_MS = process.env.FAULTS_LONG ? 300_000 : 40_000;

async function agentThrough(link: FlakyLink, keepalive: string) {
  const dir = mkdtempSync(join(tmpdir(), 'flap-'));
  const file = join(dir, 'agent.yaml');
  writeFileSync(
    file,
    `agent: { id: gw-flap, data_dir: ${dir}/data }
devices: [{ id: sim, protocol: simulator, poll: 10ms, points: [{ name: p, signal: sine }] }]
streams: [{ name: s, from: { device: sim }, to: [broker] }]
upstream: [{ name: broker, type: mqtt, url: "mqtt://127.0.0.1:${link.port}", topic: "flap/{stream}", keepalive: ${keepalive}, batch: 20 }]
`,
  );
  const lines: string[] = [];
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
  return { agent: await startAgent(file, log), lines };
}

describe('uplink flapping and half-open links', () => {
  it('notices a silently dead link within 1.5 × keepalive', async () => {
    const link = await FlakyLink.start(broker.port);
    const { agent, lines } = await agentThrough(link, '2s');
    await until(() => lines.some((l) => l.includes('agent gw-flap running')), 5000, 'the agent');
    await sleep(1000);
    const died = Date.now();
    link.setMode('blackhole');
    await until(() => lines.some((l) => /unreachable|cannot reach|send failed/.test(l) && JSON.parse(l).time >= died), 10_000, 'the dead link to be noticed');
    const noticed = Math.min(...lines.filter((l) => /unreachable|cannot reach|send failed/.test(l)).map((l) => JSON.parse(l).time).filter((t) => t >= died));
    console.log(`half-open link noticed after ${noticed - died} ms (keepalive 2000 ms)`);
    expect(noticed - died).toBeLessThanOrEqual(3000 + 250); // 1.5 × keepalive, and a timer's slack
    await agent.stop();
    await link.stop();
  });

  it(`delivers everything accepted through ${FLAPPING_MS / 1000} s of random flapping, accepting readings throughout`, { timeout: FLAPPING_MS + 120_000 }, async () => {
    const link = await FlakyLink.start(broker.port);
    const subscriber = await Subscriber.connect(broker.url, 'flap/#');
    const { agent } = await agentThrough(link, '1s');
    const modes: LinkMode[] = ['forward', 'blackhole', 'refuse'];
    const outages: { mode: LinkMode; seqBefore: number; seqAfter: number }[] = [];
    const end = Date.now() + FLAPPING_MS;
    while (Date.now() < end) {
      const mode = modes[Math.floor(Math.random() * modes.length)];
      link.setMode(mode);
      const seqBefore = agent.outbox.lastSeq;
      await sleep(500 + Math.random() * 2500);
      if (mode !== 'forward') outages.push({ mode, seqBefore, seqAfter: agent.outbox.lastSeq });
    }
    link.setMode('forward');
    const accepted = agent.outbox.lastSeq;
    await until(() => subscriber.seqs.distinct.size >= accepted, 60_000, `all ${accepted} accepted records at the subscriber`);
    await agent.stop();
    await link.stop();
    const missing = Array.from({ length: accepted }, (_, i) => i + 1).filter((seq) => !subscriber.seqs.distinct.has(seq));
    console.log(`flapping ${FLAPPING_MS / 1000} s: ${outages.length} outages (${outages.filter((o) => o.mode === 'blackhole').length} silent), ${accepted} records accepted, ${missing.length} missing, ${subscriber.seqs.duplicates} duplicates`);
    expect(missing).toEqual([]);
    expect(outages.length).toBeGreaterThan(0);
    // readings were accepted during every outage
    for (const outage of outages) expect(outage.seqAfter).toBeGreaterThan(outage.seqBefore);
    await subscriber.close();
  });
});
