import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, waitForPort } from './ports.js';

const BINARY = ['/usr/sbin/mosquitto', '/usr/bin/mosquitto'].find((p) => existsSync(p)) ?? 'mosquitto';

/** A real Mosquitto broker on a free loopback port, which a test can stop and start again. */
export class Mosquitto {
  private process: ChildProcess | undefined;
  readonly url: string;
  readonly tlsUrl: string;

  private constructor(
    readonly port: number,
    private readonly configFile: string,
  ) {
    this.url = `mqtt://127.0.0.1:${port}`;
    this.tlsUrl = `mqtts://127.0.0.1:${port}`;
  }

  /** `settings` replace `allow_anonymous true` (TLS, password files); `dir` holds files they name. */
  static async start(options: { settings?: string[]; dir?: string } = {}): Promise<Mosquitto> {
    const chosen = await freePort();
    const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'mosquitto-'));
    // Mosquitto started as root drops to its own user, which must still read what is here.
    chmodSync(dir, 0o755);
    const configFile = join(dir, 'mosquitto.conf');
    // Persistence keeps a subscriber's session (and what was queued for it) across a restart.
    writeFileSync(
      configFile,
      [
        `listener ${chosen} 127.0.0.1`,
        ...(options.settings ?? ['allow_anonymous true']),
        'persistence true',
        `persistence_location ${dir}/`,
        'max_queued_messages 0',
        'max_inflight_messages 0',
        '',
      ].join('\n'),
    );
    const broker = new Mosquitto(chosen, configFile);
    await broker.resume();
    return broker;
  }

  async resume(): Promise<void> {
    this.process = spawn(BINARY, ['-c', this.configFile], { stdio: 'ignore' });
    await waitForPort(this.port);
  }

  /** SIGTERM saves the broker's sessions for the next start; SIGKILL loses them. */
  async stop(signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> {
    const child = this.process;
    this.process = undefined;
    if (!child || child.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill(signal);
    });
  }
}
