import { readFileSync } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { afterAll } from 'vitest';
import { CLI } from './cli.js';
import { until } from './ports.js';


/** Agents still running: killed after the test file, so a failed or timed-out test leaves none behind. */
const running = new Set<ChildProcess>();
const killAll = () => {
  for (const child of running) child.kill('SIGKILL');
};
afterAll(killAll);
process.once('exit', killAll);

/** The built agent as a child process, as systemd runs it; its JSON log lines are kept. */
export class AgentProcess {
  readonly log: string[] = [];
  exitCode: number | null = null;
  signal: NodeJS.Signals | null = null;
  private readonly exited: Promise<void>;

  private constructor(readonly child: ChildProcess) {
    let buffered = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      this.log.push(...lines);
    });
    child.stderr!.on('data', (chunk: Buffer) => this.log.push(chunk.toString()));
    running.add(child);
    this.exited = new Promise((done) =>
      child.once('exit', (code, signal) => {
        running.delete(child);
        this.exitCode = code;
        this.signal = signal;
        done();
      }),
    );
  }

  /** The heap sizes and V8 flags scripts/edge-agent (what systemd runs) gives node, for `start`. */
  static launcherFlags(): { env: NodeJS.ProcessEnv; nodeArgs: string[] } {
    const launcher = readFileSync(new URL('../../scripts/edge-agent', import.meta.url), 'utf8');
    const NODE_OPTIONS = /^export NODE_OPTIONS="([^$"]+)/m.exec(launcher)![1];
    const nodeArgs = /^NODE_FLAGS="\$\{EDGE_AGENT_NODE_FLAGS-([^}]*)\}"/m.exec(launcher)![1].split(' ').filter(Boolean);
    return { env: { NODE_OPTIONS }, nodeArgs };
  }

  /** `nodeArgs`: node's own flags, before the CLI (V8 flags NODE_OPTIONS does not accept). */
  static start(config: string, env: NodeJS.ProcessEnv = {}, nodeArgs: string[] = []): AgentProcess {
    return new AgentProcess(spawn(process.execPath, [...nodeArgs, ...CLI, 'run', '--config', config], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] }));
  }

  async waitForLog(pattern: RegExp, timeoutMs = 10_000): Promise<void> {
    await until(() => this.log.some((l) => pattern.test(l)), timeoutMs, `a log line matching ${pattern}`);
  }

  kill(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }

  /** Resolves with the time it took to exit. */
  async exit(): Promise<number> {
    const started = Date.now();
    await this.exited;
    return Date.now() - started;
  }
}
