import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { until } from './ports.js';

/**
 * An RS-485 line on one machine: a socat pseudo-terminal pair, with a pymodbus RTU server
 * (Debian's python3-pymodbus) serving `units` on one end; the agent opens the other end.
 */
export class RtuLine {
  private constructor(
    readonly path: string,
    private readonly processes: ChildProcess[],
  ) {}

  /** A pymodbus server for `units`, or with `faulty`, a slave that answers with that fault. */
  static async start(units: number[], faulty?: 'crc' | 'short' | 'late' | 'very-late' | 'count' | 'echo'): Promise<RtuLine> {
    const dir = mkdtempSync(join(tmpdir(), 'rtu-'));
    const [agentEnd, serverEnd] = [join(dir, 'agent'), join(dir, 'server')];
    const socat = spawn('socat', [`pty,raw,echo=0,link=${agentEnd}`, `pty,raw,echo=0,link=${serverEnd}`], { stdio: 'ignore' });
    await until(() => existsSync(agentEnd) && existsSync(serverEnd), 5000, 'the socat pty pair');
    const args = faulty ? [resolve(import.meta.dirname, 'rtu_faulty.py'), serverEnd, faulty] : [resolve(import.meta.dirname, 'rtu_server.py'), serverEnd, units.join(',')];
    // Debian's python3, not a pyenv one on PATH: pymodbus and pyserial are Debian packages
    const server = spawn('/usr/bin/python3', args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let ready = false;
    server.stdout!.on('data', (chunk: Buffer) => (ready ||= chunk.toString().includes('ready')));
    await until(() => ready, 10_000, 'the pymodbus RTU server');
    return new RtuLine(agentEnd, [server, socat]);
  }

  stop(): void {
    for (const child of this.processes) child.kill('SIGKILL');
  }
}
