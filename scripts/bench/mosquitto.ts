// A Mosquitto broker for the benchmarks, on a free loopback port.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const address = server.address();
      if (address === null || typeof address === 'string') return reject(new Error(`no TCP port from a loopback listener (got ${address})`));
      server.close(() => resolve(address.port));
    });
  });
}

/** `settings`: extra lines of mosquitto.conf. Resolves once it accepts connections. */
export async function startMosquitto(settings: string[] = []): Promise<{ port: number; url: string; pid: number; stop: () => void }> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'bench-mosquitto-'));
  writeFileSync(join(dir, 'm.conf'), [`listener ${port} 127.0.0.1`, 'allow_anonymous true', 'persistence false', ...settings, ''].join('\n'));
  const binary = ['/usr/sbin/mosquitto', '/usr/bin/mosquitto'].find(existsSync) ?? 'mosquitto';
  const child = spawn(binary, ['-c', join(dir, 'm.conf')], { stdio: 'ignore' });
  for (;;) {
    const up = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1', () => (s.destroy(), resolve(true)));
      s.on('error', () => resolve(false));
    });
    if (up) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return { port, url: `mqtt://127.0.0.1:${port}`, pid: child.pid!, stop: () => void child.kill('SIGKILL') };
}
