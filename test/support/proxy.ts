import { connect, createServer, type Server, type Socket } from 'node:net';
import { freePort } from './ports.js';

export type LinkMode = 'forward' | 'blackhole' | 'refuse';

/**
 * A TCP link the test controls, between the agent and the broker: `forward` passes bytes;
 * `blackhole` keeps every connection open and drops all bytes silently (a dead cellular link,
 * a NAT that forgot us), and those connections stay dead; `refuse` closes them and new ones.
 */
export class FlakyLink {
  private server!: Server;
  private readonly connections = new Set<{ client: Socket; upstream: Socket; dead: boolean }>();
  mode: LinkMode = 'forward';
  readonly port: number;

  private constructor(
    port: number,
    private readonly targetPort: number,
  ) {
    this.port = port;
  }

  static async start(targetPort: number): Promise<FlakyLink> {
    const link = new FlakyLink(await freePort(), targetPort);
    link.server = createServer((client) => link.accept(client));
    await new Promise<void>((resolve) => link.server.listen(link.port, '127.0.0.1', resolve));
    return link;
  }

  private accept(client: Socket): void {
    if (this.mode === 'refuse') return void client.destroy();
    const upstream = connect(this.targetPort, '127.0.0.1');
    const connection = { client, upstream, dead: this.mode === 'blackhole' };
    this.connections.add(connection);
    client.on('data', (data) => connection.dead || upstream.write(data));
    upstream.on('data', (data) => connection.dead || client.write(data));
    const close = () => {
      this.connections.delete(connection);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', close).on('error', close);
    upstream.on('close', close).on('error', close);
  }

  setMode(mode: LinkMode): void {
    this.mode = mode;
    for (const connection of this.connections) {
      if (mode === 'blackhole') connection.dead = true;
      if (mode === 'refuse') {
        connection.client.destroy();
        connection.upstream.destroy();
      }
    }
  }

  async stop(): Promise<void> {
    this.setMode('refuse');
    await new Promise((resolve) => this.server.close(resolve));
  }
}
