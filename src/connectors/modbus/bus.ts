import { createRequire } from 'node:module';
import { EventEmitter } from 'node:events';
import modbusSerial from 'modbus-serial';
import type { Logger } from 'pino';
import { Backoff } from '../../core/backoff.js';
import { Episodes } from '../../core/episodes.js';

// modbus-serial is CommonJS whose module.exports is the client class; its typings call it `default`.
const ModbusRTU = modbusSerial as unknown as typeof modbusSerial.default;
export type Client = InstanceType<typeof modbusSerial.default>;

export interface BusAddress {
  tcp?: { host: string; port: number };
  serial?: { path: string; baud?: number; parity?: string; data_bits?: number; stop_bits?: number };
}

const MAX_UNIT_BACKOFF = 60_000;
/** Replies matching their requests for this long end an episode of discarded ones. */
const DISCARD_EPISODE = 60_000;

/** The part of modbus-serial's RTUBufferedPort (not in its typings) that CheckedRtuPort builds on. */
interface BufferedPort extends EventEmitter {
  _buffer: Buffer;
  _client: EventEmitter;
  _emitData(start: number, length: number): void;
  write(data: Buffer): void;
  readonly isOpen: boolean;
}
const require = createRequire(import.meta.url);
const RTUBufferedPort = require('modbus-serial/ports/rtubufferedport.js') as new (path: string, options: object) => BufferedPort;
const crc16 = require('modbus-serial/utils/crc16.js') as (data: Buffer) => number;
// CheckedRtuPort overrides internals of modbus-serial 8.0 (_emitData, _buffer): fail at once,
// not silently, if an update renames them.
if (typeof (RTUBufferedPort.prototype as Partial<BufferedPort>)._emitData !== 'function') {
  throw new Error('modbus-serial: RTUBufferedPort has no _emitData; the RTU reply checks in bus.ts need updating');
}

/**
 * modbus-serial's buffered RTU port, made to take only the reply to the request just sent.
 * The library finds a reply by scanning its buffer for the unit and function of the last
 * request and takes the first frame of the expected length: a late reply to an earlier request
 * for the same unit and function, still in the buffer or arriving after the next request went
 * out, is taken as that request's reply (seen: 48 of 294 values of one point were another's,
 * with good quality). Here the buffer is emptied before each request; a frame is passed on only
 * while a request waits for it, starting at the first byte received, alone in the buffer, with
 * the byte count the request asks for, or for a write the address and value it sent; anything
 * else is discarded ('discard' event) and the rest of that answer with it, so the request times
 * out and the bus drains the line.
 */
class CheckedRtuPort extends RTUBufferedPort {
  /** performance.now() of the last byte received: the line is silent since then. */
  lastByteAt = 0;
  /** A request waits for its reply. */
  expecting = false;
  /** Why the answer to the current request was discarded. */
  mismatch: string | undefined;
  /**
   * Ms to hold a reply before passing it on, to see whether a second one follows: set for the
   * first request after a timeout, whose "reply" may be the late one (the real one follows).
   */
  guard = 0;
  private held: NodeJS.Timeout | undefined;
  private request: Buffer | undefined;

  constructor(path: string, options: object) {
    super(path, options);
    this._client.on('data', () => (this.lastByteAt = performance.now()));
  }

  override write(data: Buffer): void {
    if (this._buffer.length > 0) this.discard(`${this._buffer.length} bytes received while no request waited for them`);
    this.request = Buffer.from(data);
    this.mismatch = undefined;
    this.release();
    this.expecting = true;
    super.write(data);
  }

  override _emitData(start: number, length: number): void {
    const reason = this.mismatch ?? this.check(start, length);
    if (reason !== undefined) {
      if (this.expecting) this.mismatch = reason;
      this.discard(reason);
    } else if (this.guard > 0) {
      // kept in the buffer: a second frame arriving meanwhile makes check() discard both
      if (!this.held) {
        const timer: NodeJS.Timeout = setTimeout(() => {
          // decided after the event loop's poll phase: bytes of a second frame that reached the
          // process while it was busy are read first (a timer due beside them would run before)
          setImmediate(() => {
            if (this.held !== timer) return; // released meanwhile (a new request, a discard)
            this.held = undefined;
            if (this.expecting && this._buffer.length === length) this.pass(length);
          });
        }, this.guard);
        this.held = timer;
      }
    } else this.pass(length);
  }

  private pass(length: number): void {
    this.expecting = false;
    super._emitData(0, length);
  }

  private release(): void {
    clearTimeout(this.held);
    this.held = undefined;
  }

  /** Bytes received and not passed on. */
  get buffered(): number {
    return this._buffer.length;
  }

  /** Empties the buffer: bytes that came after their request timed out, or belong to no request. */
  flush(reason: string): void {
    this.expecting = false;
    this.release();
    if (this._buffer.length > 0) this.discard(reason);
  }

  private discard(reason: string): void {
    this.release();
    this._buffer = Buffer.alloc(0);
    this.emit('discard', reason);
  }

  /** Why the frame at `start` is not the reply to the request, or undefined when it is. */
  private check(start: number, length: number): string | undefined {
    const request = this.request;
    if (!this.expecting || !request) return 'a reply that came after its request timed out';
    if (start > 0) return `${start} stray bytes before the reply`;
    if (this._buffer.length > length) return `${this._buffer.length} bytes for a reply of ${length}: two replies, one of them late`;
    const frame = this._buffer.subarray(0, length);
    // a corrupted frame is modbus-serial's to report (CRC error), not a mismatch
    if (frame.readUInt16LE(length - 2) !== crc16(frame.subarray(0, length - 2))) return undefined;
    const fc = frame[1];
    if (fc & 0x80) return undefined; // an exception: unit and function already match
    const quantity = request.readUInt16BE(4);
    const bytes = fc === 1 || fc === 2 ? Math.ceil(quantity / 8) : fc === 3 || fc === 4 ? 2 * quantity : undefined;
    if (bytes !== undefined && frame[2] !== bytes) return `a reply of ${frame[2]} bytes to function ${fc} for ${bytes}`;
    if ((fc === 5 || fc === 6 || fc === 15 || fc === 16) && !frame.subarray(2, 6).equals(request.subarray(2, 6))) {
      return `function ${fc} echoed address ${frame.readUInt16BE(2)} and ${frame.readUInt16BE(4)}, not the ${request.readUInt16BE(2)} and ${quantity} sent`;
    }
    return undefined;
  }
}

/**
 * How long the first reply after a timeout is held to see whether another follows: a slave
 * answers a queued request at least this soon after its late reply (its turnaround time).
 */
function guardTime(timeout: number): number {
  // the slave answers the request queued behind a late reply at once, but a busy gateway (or
  // slave) may take tens of ms to show it: half the timeout, only for a request after a timeout
  return Math.min(timeout, Math.max(100, timeout / 2));
}

/**
 * The silent interval between RTU frames (Modbus over serial line, 2.5.1.1): 3.5 character
 * times of 11 bits, fixed at 1.75 ms above 19200 baud.
 */
export function rtuSilence(baud: number): number {
  return baud > 19200 ? 1.75 : (3.5 * 11 * 1000) / baud;
}

/**
 * One connection to a TCP gateway or one serial line, shared by every device (unit id) behind
 * it, with one request queue: a request starts when the one before it has finished, so frames
 * never interleave and a write never collides with a poll. The connection is (re)opened on
 * demand, each attempt bounded by the request's timeout, with capped exponential backoff and
 * jitter between attempts. A unit that keeps timing out is backed off, so that the other units
 * on the bus keep their poll rate. On a serial line a request waits for the silent interval
 * after the last byte, and after a timeout (or a reply that does not match its request) the
 * line is drained for as long as the timeout, so that a late reply is discarded, not taken as
 * the reply to the next request; a reply later still is caught by holding the next reply a
 * little (guardTime): a late reply is followed by the real one, and both are discarded.
 * Closing ends what is queued or in flight at once.
 */
export class ModbusBus {
  private client: Client | undefined;
  private port: CheckedRtuPort | undefined;
  private tail: Promise<unknown> = Promise.resolve();
  private nextConnect = 0;
  private readonly reconnect = new Backoff(500, 30_000);
  private readonly units = new Map<number, { failures: number; until: number }>();
  private readonly silence: number;
  /** The last request on the line timed out: the next reply may be its late one. */
  private suspect = false;
  private closed = false;
  /** Rejects what untilClosed() waits for, when the bus closes first. */
  private readonly waiting = new Set<(err: Error) => void>();
  private readonly sleepers = new Set<() => void>();
  private readonly discards = new Episodes();
  /** Replies discarded on a serial line: late, stray, or not matching their request. */
  discardedReplies = 0;
  private lastDiscard = 0;
  users = 0;

  constructor(
    readonly name: string,
    private readonly address: BusAddress,
    private readonly log: Logger,
  ) {
    this.silence = rtuSilence(address.serial?.baud ?? 9600);
  }

  /** Runs `fn` for `unit` after the requests queued before it. */
  request<T>(unit: number, timeout: number, fn: (client: Client) => Promise<T>): Promise<T> {
    const run = async () => {
      if (this.closed) throw new BusError(`${this.name}: closed`, 'closed');
      const backoff = this.units.get(unit);
      if (backoff && performance.now() < backoff.until) throw new BusError(`unit ${unit} is backed off after ${backoff.failures} timeouts`, 'backoff');
      const client = await this.connect(timeout);
      const port = this.port;
      const guard = port && this.suspect ? guardTime(timeout) : 0;
      client.setID(unit);
      client.setTimeout(timeout + guard);
      if (port) {
        port.guard = guard;
        await this.quiet(port);
      }
      try {
        // forgotten once it settled, not when the bus closed first (shut() stops its timer)
        const result = await this.untilClosed(fn(client).finally(() => forgetTransactions(client)));
        this.suspect = false;
        this.units.delete(unit);
        this.matchesAgain();
        return result;
      } catch (err) {
        const mismatch = port?.mismatch;
        if (isTimeout(err) && !mismatch) {
          const failures = (backoff?.failures ?? 0) + 1;
          // one timeout is a glitch; from the second on, skip the unit for 5 s, 10 s, … 60 s
          if (failures >= 2) this.units.set(unit, { failures, until: performance.now() + Math.min(MAX_UNIT_BACKOFF, 5000 * 2 ** (failures - 2)) });
          else this.units.set(unit, { failures, until: 0 });
        }
        if (port && (isTimeout(err) || mismatch)) {
          this.suspect = true;
          await this.drain(port, timeout);
        } else if (port) port.flush('a reply that came after its request failed');
        // a serial line stays open when one slave is silent; a TCP link that timed out is suspect
        if (isConnectionError(err) && (this.address.tcp || !isTimeout(err))) this.drop();
        if (mismatch && !this.closed) throw new Error(`reply does not match the request: ${mismatch}`);
        throw err;
      }
    };
    const result = this.tail.then(run, run);
    this.tail = result.catch(() => undefined);
    return result;
  }

  /**
   * `work`, unless the bus closes first. Not a Promise.race with a promise of the bus's closing:
   * each race leaves a reaction on that promise for as long as it is pending, that is for the
   * bus's life, and each reaction held its request's reply (100 devices polled every second:
   * 100 kB of heap more each second, without end).
   */
  private untilClosed<T>(work: Promise<T>): Promise<T> {
    work.catch(() => {}); // settles later, by modbus-serial's own timeout, when the bus closed first
    if (this.closed) return Promise.reject(new BusError(`${this.name}: closed`, 'closed'));
    return new Promise<T>((resolve, reject) => {
      this.waiting.add(reject);
      work.then(resolve, reject).finally(() => this.waiting.delete(reject));
    });
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.sleepers.add(wake);
    });
  }

  /** Waits for the silent interval after the last byte on the line, as a frame must. */
  private async quiet(port: CheckedRtuPort): Promise<void> {
    for (;;) {
      const wait = port.lastByteAt + this.silence - performance.now();
      if (wait <= 0 || this.closed) return;
      await this.sleep(wait);
    }
  }

  /**
   * After a request that timed out: listens for `window` ms, and on until the line is silent,
   * then discards what came, so that a late reply cannot be taken as the next request's.
   */
  private async drain(port: CheckedRtuPort, window: number): Promise<void> {
    port.expecting = false;
    const partial = port.buffered;
    const end = performance.now() + window;
    for (;;) {
      const now = performance.now();
      const wait = Math.max(end - now, port.lastByteAt + this.silence - now);
      if (wait <= 0 || this.closed) break;
      await this.sleep(wait);
    }
    port.flush(partial > 0 ? `an incomplete or unrecognised reply (${partial} bytes when its request timed out)` : 'a reply that came after its request timed out');
  }

  /**
   * Counts a discarded reply; logs the first of an episode, which lasts until replies have
   * matched their requests for a minute (a slave late one time in seven is one episode).
   */
  private discarded(reason: string): void {
    this.discardedReplies++;
    this.lastDiscard = performance.now();
    if (this.discards.begin('discard')) this.log.warn({ bus: this.name }, `${this.name}: discarded a reply: ${reason} (each is counted; logged again after a quiet minute)`);
  }

  private matchesAgain(): void {
    if (!this.discards.has('discard') || performance.now() - this.lastDiscard < DISCARD_EPISODE) return;
    const count = this.discards.end('discard');
    this.log.info({ bus: this.name }, `${this.name}: replies have matched their requests for a minute, after ${count} discarded`);
  }

  private async connect(timeout: number): Promise<Client> {
    if (this.client?.isOpen) return this.client;
    const wait = this.nextConnect - performance.now();
    if (wait > 0) throw new BusError(`${this.name}: not connected; next attempt in ${Math.ceil(wait / 1000)} s`, 'disconnected');
    let port: CheckedRtuPort | undefined;
    let client: Client;
    let timer: NodeJS.Timeout | undefined;
    const answer = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${timeout} ms`)), timeout);
    });
    answer.catch(() => {});
    try {
      if (this.address.tcp) {
        client = new ModbusRTU();
        await this.untilClosed(Promise.race([client.connectTCP(this.address.tcp.host, { port: this.address.tcp.port }), answer]));
      } else {
        const s = this.address.serial!;
        // vmin: the smallest frame, as modbus-serial's connectRTUBuffered sets it
        port = new CheckedRtuPort(s.path, { baudRate: s.baud ?? 9600, parity: s.parity ?? 'none', dataBits: s.data_bits ?? 8, stopBits: s.stop_bits ?? 1, platformOptions: { vmin: 5, vtime: 0 } });
        client = new (ModbusRTU as unknown as new (port: BufferedPort) => Client)(port);
        const opened = new Promise<void>((resolve, reject) => (client as unknown as { open(cb: (err?: Error) => void): void }).open((err) => (err ? reject(err) : resolve())));
        await this.untilClosed(Promise.race([opened, answer]));
      }
    } catch (err) {
      clearTimeout(timer);
      this.nextConnect = performance.now() + this.reconnect.next();
      shut(client!);
      if (this.closed) throw new BusError(`${this.name}: closed`, 'closed');
      throw new BusError(`${this.name}: cannot connect: ${(err as Error).message}; attempt ${this.reconnect.attempts}, next in ${Math.ceil((this.nextConnect - performance.now()) / 1000)} s`, 'disconnected');
    }
    clearTimeout(timer);
    client.on('close', () => {
      if (this.client !== client) return;
      this.client = undefined;
      this.port = undefined;
    });
    client.on('error', () => {});
    port?.on('discard', (reason: string) => this.discarded(reason));
    this.reconnect.reset();
    this.client = client;
    this.port = port;
    return client;
  }

  private drop(): void {
    const client = this.client;
    this.client = undefined;
    this.port = undefined;
    if (client) shut(client);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const reject of [...this.waiting]) reject(new BusError(`${this.name}: closed`, 'closed'));
    for (const wake of [...this.sleepers]) wake();
    await this.tail;
    this.drop();
  }
}

/**
 * Drops the requests a client has finished from its table. modbus-serial keeps every request it
 * sent in `_transactions` under its transaction id, and over TCP the ids go round 256 before a
 * slot is reused: each finished request stays with its callback, and through it the promise that
 * holds its reply (the register values and the frame), about 1.6 kB each. With 100 devices polled
 * every second that was 160 kB/s of heap for the first 256 s, about 40 MB held for good (the
 * V8 heap after a full GC: 21 MB at 7 s, 34 MB at 86 s). The bus sends one request at a time, so
 * when one has settled nothing in the table waits for a reply; a reply that comes later still
 * (after its timeout) finds no request and modbus-serial ignores it.
 */
function forgetTransactions(client: Client): void {
  const internals = client as unknown as { _transactions?: Record<number, unknown> };
  if (internals._transactions) internals._transactions = {};
}

/** Closes a client whatever its state, and stops the timers of its requests in flight. */
function shut(client: Client | undefined): void {
  if (!client) return;
  (client as unknown as { _cancelPendingTransactions?(): void })._cancelPendingTransactions?.();
  try {
    const port = (client as unknown as { _port?: { destroy?(cb: () => void): void } })._port;
    // a TCP socket still connecting is destroyed: end() would wait for the connection
    if (port?.destroy) client.destroy(() => {});
    else client.close(() => {});
  } catch {
    // nothing was open
  }
}

export class BusError extends Error {
  constructor(
    message: string,
    readonly kind: 'disconnected' | 'backoff' | 'closed',
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
