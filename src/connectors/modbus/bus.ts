import modbusSerial from 'modbus-serial';
import type { Logger } from 'pino';

// modbus-serial is CommonJS whose module.exports is the client class; its typings call it `default`.
const ModbusRTU = modbusSerial as unknown as typeof modbusSerial.default;
export type Client = InstanceType<typeof modbusSerial.default>;

export interface BusAddress {
  tcp?: { host: string; port: number };
  serial?: { path: string; baud?: number; parity?: string; data_bits?: number; stop_bits?: number };
}

const MIN_RECONNECT = 500;
const MAX_RECONNECT = 30_000;
const MAX_UNIT_BACKOFF = 60_000;

/**
 * One connection to a TCP gateway or one serial line, shared by every device (unit id) behind
 * it, with one request queue: a request starts when the one before it has finished, so frames
 * never interleave and a write never collides with a poll. The connection is (re)opened on
 * demand with exponential backoff and jitter. A unit that keeps timing out is backed off, so
 * that the other units on the bus keep their poll rate.
 */
export class ModbusBus {
  private client: Client | undefined;
  private tail: Promise<unknown> = Promise.resolve();
  private nextConnect = 0;
  private reconnectDelay = MIN_RECONNECT;
  private readonly units = new Map<number, { failures: number; until: number }>();
  users = 0;

  constructor(
    readonly name: string,
    private readonly address: BusAddress,
    private readonly log: Logger,
  ) {}

  /** Runs `fn` for `unit` after the requests queued before it. */
  request<T>(unit: number, timeout: number, fn: (client: Client) => Promise<T>): Promise<T> {
    const run = async () => {
      const backoff = this.units.get(unit);
      if (backoff && Date.now() < backoff.until) throw new BusError(`unit ${unit} is backed off after ${backoff.failures} timeouts`, 'backoff');
      const client = await this.connect();
      client.setID(unit);
      client.setTimeout(timeout);
      try {
        const result = await fn(client);
        this.units.delete(unit);
        return result;
      } catch (err) {
        if (isTimeout(err)) {
          const failures = (backoff?.failures ?? 0) + 1;
          // one timeout is a glitch; from the second on, skip the unit for 5 s, 10 s, … 60 s
          if (failures >= 2) this.units.set(unit, { failures, until: Date.now() + Math.min(MAX_UNIT_BACKOFF, 5000 * 2 ** (failures - 2)) });
          else this.units.set(unit, { failures, until: 0 });
        }
        // a serial line stays open when one slave is silent; a TCP link that timed out is suspect
        if (isConnectionError(err) && (this.address.tcp || !isTimeout(err))) this.drop();
        throw err;
      }
    };
    const result = this.tail.then(run, run);
    this.tail = result.catch(() => undefined);
    return result;
  }

  private async connect(): Promise<Client> {
    if (this.client?.isOpen) return this.client;
    const wait = this.nextConnect - Date.now();
    if (wait > 0) throw new BusError(`${this.name}: not connected; next attempt in ${Math.ceil(wait / 1000)} s`, 'disconnected');
    const client = new ModbusRTU();
    try {
      if (this.address.tcp) await client.connectTCP(this.address.tcp.host, { port: this.address.tcp.port });
      else {
        const s = this.address.serial!;
        await client.connectRTUBuffered(s.path, { baudRate: s.baud ?? 9600, parity: (s.parity ?? 'none') as 'none', dataBits: (s.data_bits ?? 8) as 8, stopBits: (s.stop_bits ?? 1) as 1 });
      }
    } catch (err) {
      this.nextConnect = Date.now() + this.reconnectDelay / 2 + (Math.random() * this.reconnectDelay) / 2;
      this.reconnectDelay = Math.min(MAX_RECONNECT, this.reconnectDelay * 2);
      try {
        client.close(() => {});
      } catch {
        // nothing was open
      }
      throw new BusError(`${this.name}: cannot connect: ${(err as Error).message}`, 'disconnected');
    }
    client.on('close', () => {
      if (this.client === client) this.client = undefined;
    });
    client.on('error', () => {});
    this.reconnectDelay = MIN_RECONNECT;
    this.client = client;
    return client;
  }

  private drop(): void {
    const client = this.client;
    this.client = undefined;
    try {
      client?.close(() => {});
    } catch {
      // already closed
    }
  }

  async close(): Promise<void> {
    await this.tail;
    this.drop();
  }
}

export class BusError extends Error {
  constructor(
    message: string,
    readonly kind: 'disconnected' | 'backoff',
  ) {
    super(message);
  }
}

export function isTimeout(err: unknown): boolean {
  return (err as { errno?: string })?.errno === 'ETIMEDOUT' || /timed out/i.test(String((err as Error)?.message));
}

/** The connection is gone or unusable: reconnect before the next request. */
export function isConnectionError(err: unknown): boolean {
  const e = err as { errno?: string; code?: string; message?: string };
  return ['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ENOTCONN', 'ECONNABORTED', 'ETIMEDOUT', 'Port Not Open'].includes(e?.errno ?? e?.code ?? '') || /port not open|closed/i.test(e?.message ?? '');
}

const buses = new Map<string, ModbusBus>();

/** The shared bus for an address: one per TCP host:port, one per serial path. */
export function acquireBus(address: BusAddress, log: Logger): ModbusBus {
  const name = address.tcp ? `modbus-tcp ${address.tcp.host}:${address.tcp.port}` : `modbus-rtu ${address.serial!.path}`;
  let bus = buses.get(name);
  if (!bus) buses.set(name, (bus = new ModbusBus(name, address, log)));
  bus.users++;
  return bus;
}

export async function releaseBus(bus: ModbusBus): Promise<void> {
  if (--bus.users > 0) return;
  buses.delete(bus.name);
  await bus.close();
}
