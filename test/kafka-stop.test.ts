import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AgentProcess } from './support/agent-process.js';
import { KafkaTestBroker } from './support/kafka-broker.js';
import { SilentServer } from './support/silent-server.js';
import { until } from './support/ports.js';

const cleanup: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

function writeConfig(brokerPort: number, timeout = '30s'): string {
  const dir = mkdtempSync(join(tmpdir(), 'kafka-stop-'));
  const config = join(dir, 'agent.yaml');
  writeFileSync(
    config,
    `agent: { id: gw-1, data_dir: ${dir}/data, log_level: info, http: off }
devices:
  - { id: meter-1, protocol: simulator, poll: 50ms, points: [{ name: power_kw, signal: sine, min: 0, max: 10 }] }
streams:
  - { name: readings, from: { device: meter-1 }, to: [lake] }
upstream:
  - { name: lake, type: kafka, brokers: [127.0.0.1:${brokerPort}], topic: edge, timeout: ${timeout} }
`,
  );
  return config;
}

/** Sends SIGTERM and checks the agent stopped cleanly within 5 s. */
async function stopsWithin5s(agent: AgentProcess, what: string): Promise<void> {
  agent.kill('SIGTERM');
  const took = await agent.exit();
  console.log(`SIGTERM with ${what}: exited after ${took} ms (code ${agent.exitCode}, signal ${agent.signal})`);
  expect(agent.exitCode).toBe(0);
  expect(took).toBeLessThan(5000);
  expect(agent.log.some((l) => /"msg":"stopped"/.test(l))).toBe(true);
}

describe('Kafka upstream: clean stop', () => {
  it('exits within 5 s of SIGTERM while a produce request waits for an answer that never comes', async () => {
    const broker = await KafkaTestBroker.start();
    cleanup.push(() => broker.stop());
    broker.delayAnswers(120_000, 'Produce');
    const agent = AgentProcess.start(writeConfig(broker.port));
    cleanup.push(() => agent.kill('SIGKILL'));
    await agent.waitForLog(/agent gw-1 running/);
    await until(() => broker.produceTimes.length > 0, 10_000, 'a produce request at the broker');
    await stopsWithin5s(agent, 'a produce request unanswered');
  });

  it('exits within 5 s of SIGTERM while the broker accepts TCP and never answers', async () => {
    const broker = await SilentServer.start();
    cleanup.push(() => broker.stop());
    const agent = AgentProcess.start(writeConfig(broker.port, '2s'));
    cleanup.push(() => agent.kill('SIGKILL'));
    await agent.waitForLog(/agent gw-1 running/);
    // a request is on its way to the broker, which will not answer it
    await until(() => broker.bytes > 0, 10_000, 'a request at the broker');
    // the first unanswered request is logged when it times out, not after the client's retries
    await agent.waitForLog(/to Kafka 127.0.0.1:\d+ failed \(no answer within 2000 ms \(the request timed out\)\); the client tries again/, 10_000);
    expect(agent.log.filter((l) => /the client tries again/.test(l)).length).toBe(1);
    await stopsWithin5s(agent, 'a silent Kafka broker');
  });
});
