import { spawn } from 'node:child_process';
import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CLI } from './support/cli.js';
import { freePort, until } from './support/ports.js';

const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

/** GET on a connection of its own (fetch would reuse one kept alive from before): true for a 200 within `timeoutMs`. */
function answers(url: string, timeoutMs: number): Promise<boolean> {
  return new Promise((done) => {
    const req = get(url, { agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      done(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => done(false));
  });
}

/** Opens a TCP connection and leaves it idle: it sends nothing, ever. */
function idleSocket(port: number): Promise<Socket | undefined> {
  return new Promise((done) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => done(socket));
    socket.once('error', () => done(undefined));
    socket.on('close', () => undefined);
  });
}

describe('management API under an idle-connection attack', () => {
  it('answers within seconds while 1,100 idle connections are open (the agent limited to 1,024 files, as on a gateway)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'http-limits-'));
    const port = await freePort();
    writeFileSync(
      join(dir, 'agent.yaml'),
      `version: 1
agent: { id: gw-1, data_dir: ${dir}/data, log_level: warn, http: "127.0.0.1:${port}" }
devices:
  - { id: sim, protocol: simulator, poll: 100ms, points: [{ name: p, signal: counter, rate: 1 }] }
streams:
  - { name: a, from: { device: sim }, to: [out] }
upstream:
  - { name: out, type: file, path: ${dir}/out.jsonl }
`,
    );
    const child = spawn('prlimit', ['--nofile=1024:1024', process.execPath, ...CLI, 'run', '--config', join(dir, 'agent.yaml')], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.resume();
    child.stderr.resume();
    cleanup.push(() => child.kill('SIGKILL'));
    const api = `http://127.0.0.1:${port}/api/config`;
    await until(() => answers(api, 2000), 20_000, 'the API up');

    const sockets: Socket[] = [];
    cleanup.push(() => sockets.forEach((s) => s.destroy()));
    for (let i = 0; i < 1100; i++) {
      const socket = await idleSocket(port);
      if (socket) sockets.push(socket);
    }
    const opened = Date.now();
    // a liveness check with generous limits: each try 2 s, all of them 20 s
    await until(() => answers(api, 2000), 20_000, 'the API answering while idle connections are open');
    const answeredAfter = Date.now() - opened;
    console.log(`API answered ${answeredAfter} ms after 1,100 idle connections were opened (${sockets.filter((s) => !s.destroyed).length} of them still open)`);
    expect(child.exitCode).toBe(null);
    // the data path goes on
    const written = statSync(join(dir, 'out.jsonl')).size;
    await until(() => statSync(join(dir, 'out.jsonl')).size > written, 10_000, 'records still written');
  });
});
