import { createServer, type Server, type Socket } from 'node:net';

/**
 * A TCP server on a free loopback port that accepts connections and never sends a byte (a hung
 * broker: Kafka that never answers, MQTT that never sends CONNACK), or with `closeAtOnce`
 * closes each connection as it comes (a broker that drops us). It notes when each connection
 * came and how many bytes it was sent.
 */
export class SilentServer {
  readonly connectedAt: number[] = [];
  bytes = 0;
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(options: { closeAtOnce?: boolean } = {}): Promise<SilentServer> {
    let instance: SilentServer | undefined;
    const server = createServer((socket) => {
      instance!.connectedAt.push(Date.now());
      socket.on('error', () => undefined);
      if (options.closeAtOnce) return void socket.destroy();
      instance!.sockets.add(socket);
      socket.on('data', (chunk: Buffer) => (instance!.bytes += chunk.length));
      socket.on('close', () => instance!.sockets.delete(socket));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    instance = new SilentServer(server, (server.address() as { port: number }).port);
    return instance;
  }

  /** Connections still open. */
  get open(): number {
    return this.sockets.size;
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
