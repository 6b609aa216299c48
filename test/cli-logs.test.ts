import { spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { prettyLine, resolveLogFormat } from '../src/logging.js';
import { CLI } from './support/cli.js';
import { until } from './support/ports.js';

function config(extra = ''): string {
  const dir = mkdtempSync(join(tmpdir(), 'logs-'));
  const file = join(dir, 'agent.yaml');
  writeFileSync(
    file,
    `agent: { id: gw-logs, data_dir: ${dir}/data, http: "off", log_summary: 1s${extra} }
devices: [{ id: sim, protocol: simulator, poll: 100ms, points: [{ name: p, signal: sine }] }]
streams: [{ name: s, from: { device: sim }, to: [out] }]
upstream: [{ name: out, type: file, path: ${dir}/out.jsonl }]
`,
  );
  return file;
}

/** The agent until `pattern` shows in its output, then SIGTERM; through script(1) for a terminal. */
async function runAgent(file: string, { tty = false, env = {} as NodeJS.ProcessEnv, pattern = /last 1s: /, args = [] as string[] } = {}) {
  const command = [process.execPath, ...CLI, 'run', '--config', file, ...args];
  const child = tty
    ? spawn('script', ['-qec', command.map((a) => `'${a}'`).join(' '), '/dev/null'], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] })
    : spawn(command[0], command.slice(1), { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d));
  child.stderr!.on('data', (d: Buffer) => (output += d));
  const exited = new Promise((done) => child.once('exit', done));
  try {
    await until(() => pattern.test(output), 15_000, `${pattern} in: ${output}`);
  } finally {
    if (tty) spawn('pkill', ['-TERM', '-P', String(child.pid)]);
    else child.kill('SIGTERM');
    await exited;
  }
  return output;
}

describe('logs', () => {
  it('are pretty at a terminal, JSON under systemd or into a pipe, and log_format forces either', () => {
    expect(resolveLogFormat('auto', { isTTY: true }, {})).toBe('pretty');
    expect(resolveLogFormat('auto', { isTTY: true }, { JOURNAL_STREAM: '8:1234' })).toBe('json');
    expect(resolveLogFormat('auto', { isTTY: true }, { INVOCATION_ID: 'abc' })).toBe('json');
    expect(resolveLogFormat('auto', { isTTY: false }, {})).toBe('json');
    expect(resolveLogFormat('pretty', { isTTY: false }, {})).toBe('pretty');
    expect(resolveLogFormat('json', { isTTY: true }, {})).toBe('json');
  });

  it('a pretty line: local time, level, message, then the other fields', () => {
    const time = new Date(2026, 0, 2, 3, 4, 5, 6).getTime();
    const line = JSON.stringify({ level: 40, time, pid: 1, upstream: 'cloud', err: 'refused', drops: { full: 2 }, msg: 'upstream cloud: send failed' });
    expect(prettyLine(line, false)).toBe('03:04:05.006 WARN  upstream cloud: send failed  upstream=cloud err=refused drops={"full":2}\n');
    expect(prettyLine(line, true)).toBe('\x1b[2m03:04:05.006\x1b[0m \x1b[33mWARN \x1b[0m upstream cloud: send failed  \x1b[2mupstream=cloud err=refused drops={"full":2}\x1b[0m\n');
  });

  it('at a terminal the agent logs pretty lines, its first delivery and a summary', { timeout: 30_000 }, async () => {
    const output = await runAgent(config(), { tty: true, env: { JOURNAL_STREAM: '', INVOCATION_ID: '' } });
    expect(output).not.toContain('{"level"');
    expect(output).toMatch(/^\x1b\[2m\d\d:\d\d:\d\d\.\d{3}\x1b\[0m \x1b\[32mINFO \x1b\[0m agent gw-logs running/m);
    expect(output).toMatch(/INFO .* upstream out: first records delivered/);
    expect(output).toMatch(/last 1s: \d+ readings in, \d+ records sent, \d+ queued, 1\/1 devices online, 0 dropped/);
  });

  it('into a pipe the lines are JSON, the summary with its figures as fields; log_format: pretty forces pretty ones', { timeout: 30_000 }, async () => {
    const json = await runAgent(config());
    const summary = json
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { msg: string; summary?: Record<string, number> })
      .find((entry) => entry.summary);
    expect(summary!.summary).toMatchObject({ queued: expect.any(Number), online: 1, devices: 1, dropped: 0 });
    expect(summary!.summary!.readings).toBeGreaterThan(0);

    const pretty = await runAgent(config(', log_format: pretty'), { env: { NO_COLOR: '1' } });
    expect(pretty).toMatch(/^\d\d:\d\d:\d\d\.\d{3} INFO  agent gw-logs running {2}devices=1 streams=1 upstreams=1$/m);
  });
});

describe('the port of agent.http', () => {
  it('when taken, the log says so and names agent.http; run --http ADDR replaces it', { timeout: 30_000 }, async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as { port: number }).port;
    try {
      const file = config();
      writeFileSync(file, readFileSync(file, 'utf8').replace('http: "off"', `http: "127.0.0.1:${port}"`));
      const busy = await runAgent(file, { pattern: /agent gw-logs running/ });
      expect(busy).toContain(`management API on 127.0.0.1:${port} not started: listen EADDRINUSE: address already in use 127.0.0.1:${port} (another program has the port): change agent.http, or run with --http ADDR`);

      const moved = await runAgent(file, { pattern: /agent gw-logs running/, args: ['--http', '127.0.0.1:0'] });
      const line = moved.split('\n').find((l) => l.includes('management API, metrics and status page on'))!;
      expect(line).toMatch(/on http:\/\/127\.0\.0\.1:\d+\//);
      expect(line).not.toContain(`:${port}/`);
      expect(moved).not.toContain('not started');
    } finally {
      taken.close();
    }
  });

  it.each([
    [['--http', 'nowhere'], 'edge-agent: run: --http takes host:port or off, not "nowhere"'],
    [['--http', '0.0.0.0:8080'], 'edge-agent: run: --http 0.0.0.0:8080 is reachable from the network: set agent.http_token in the config first'],
  ])('run %j: one line, the usage, exit 2', (args, message) => {
    const out = spawnSync(process.execPath, [...CLI, 'run', '--config', config(), ...args], { encoding: 'utf8' });
    expect(out.status).toBe(2);
    expect(out.stderr.trimEnd().split('\n')).toEqual([message, 'usage: edge-agent run [--config FILE] [--http ADDR]']);
  });
});
