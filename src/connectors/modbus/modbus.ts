import { fillDefaults } from '../../core/config-kit.js';
import type { Quality, Reading, Value } from '../../core/reading.js';
import { writablePoint, WriteError, type Connector, type ConnectorContext, type ConnectorFactory, type WriteOutcome } from '../connector.js';
import { DeviceStatus } from '../status.js';
import { everyTick, schedule } from '../../core/schedule.js';
import { acquireBus, BusError, releaseBus, type Client, type ModbusBus } from './bus.js';
import { decode, encode, EncodeError } from './codec.js';
import { plan, type Block } from './planner.js';
import { modbusRtuSchema, modbusTcpSchema, type ModbusConfig } from './config.js';
import { spanOf, type ModbusPoint } from './points.js';

const FUNCTION = { coil: 1, discrete: 2, holding: 3, input: 4 } as const;
/** A read that fails now and then is one episode until it has worked this long. */
const QUIET_EPISODE = 60_000;

export const createModbus: ConnectorFactory = async (device, context) =>
  new ModbusDevice(fillDefaults(device.protocol === 'modbus-rtu' ? modbusRtuSchema : modbusTcpSchema, structuredClone(device)), context);

/** A group of points polled together at one rate, with its read plan. */
interface PollGroup {
  every: number;
  blocks: Block[];
  stopPolls?: () => void;
  busy: boolean;
}

/**
 * A Modbus TCP or RTU device: polls its points in planned blocks on a drift-free schedule per
 * poll rate, through the bus it shares with the other devices on the same gateway or serial
 * line, and writes `writable` points through the same queue (then reads them back). A failed
 * read gives its points `bad` quality; a device whose reads all fail for `offline_after` polls
 * in a row is offline until one poll succeeds (DEVICE_OFFLINE / DEVICE_ONLINE events). Each
 * kind of error is logged once per episode, with the device, unit, function and address.
 */
class ModbusDevice implements Connector {
  readonly id: string;
  /**
   * Reads that failed (exception, timeout, CRC, wrong length, a reply that did not match its
   * request, no connection), counted for metrics.
   */
  readErrors = 0;
  private readonly bus: ModbusBus;
  private readonly unit: number;
  private readonly timeout: number;
  private readonly retries: number;
  private readonly groups: PollGroup[];
  /** Reads failing now (or lately): failures in the episode, and when the last was. */
  private readonly failing = new Map<string, { failures: number; last: number }>();
  private readonly status: DeviceStatus;
  private deliver: (reading: Reading) => void = () => {};
  private stopped = false;

  constructor(
    private readonly config: ModbusConfig,
    private readonly context: ConnectorContext,
  ) {
    this.id = config.id;
    this.unit = config.unit_id;
    this.timeout = config.timeout;
    this.retries = config.retries;
    this.status = new DeviceStatus(config.id, context, config.offline_after);
    this.bus = acquireBus(config.protocol === 'modbus-tcp' ? { tcp: { host: config.host, port: config.port } } : { serial: config.serial }, context.log);
    const limits = { maxGap: config.max_gap, maxRegisters: config.max_registers, maxBits: config.max_bits };
    const byRate = new Map<number, ModbusPoint[]>();
    for (const point of config.points) {
      const every = point.poll ?? config.poll;
      byRate.set(every, [...(byRate.get(every) ?? []), point]);
    }
    this.groups = [...byRate].map(([every, points]) => ({ every, blocks: plan(points, limits), busy: false }));
  }

  get online(): boolean {
    return this.status.online;
  }

  /** Replies discarded on the device's serial line (late, stray, or not matching their request). */
  get discardedReplies(): number {
    return this.bus.discardedReplies;
  }

  /** Requests one poll of every point makes (for tests and the benchmark). */
  get requestsPerPoll(): number {
    return this.groups.reduce((n, g) => n + g.blocks.length, 0);
  }

  start(deliver: (reading: Reading) => void): void {
    this.deliver = deliver;
    for (const group of this.groups) {
      // Once at start, then on multiples of the rate from the epoch (no drift), waited for on
      // the monotonic clock (a step of the wall clock neither silences nor floods them).
      group.stopPolls = schedule(everyTick(group.every), () => {
        if (!this.stopped && !group.busy) void this.poll(group);
      }, { atStart: true });
    }
  }

  private async poll(group: PollGroup): Promise<void> {
    group.busy = true;
    const ts = Date.now();
    const values: Reading['values'] = Object.create(null); // `__proto__` is a point name too
    let quality: Record<string, Quality> | undefined;
    let succeeded = 0;
    let lastError: Error | undefined;
    for (const block of group.blocks) {
      if (this.stopped) break;
      try {
        const data = await this.read(block);
        succeeded++;
        for (const { point, at } of block.points) {
          const value = decode(point, data, at);
          if (typeof value === 'number' && !Number.isFinite(value)) {
            values[point.name] = null;
            (quality ??= {})[point.name] = 'bad';
          } else values[point.name] = value;
        }
      } catch (err) {
        lastError = err as Error;
        for (const { point } of block.points) {
          values[point.name] = null;
          (quality ??= {})[point.name] = 'bad';
        }
      }
    }
    group.busy = false;
    if (this.stopped) return;
    if (succeeded === 0 && lastError) this.status.failed(lastError.message);
    else if (succeeded > 0) this.status.succeeded();
    this.deliver({ device: this.id, ts, values, quality });
  }

  private async read(block: Block): Promise<ArrayLike<number | boolean>> {
    const fc = FUNCTION[block.area];
    const episode = `read FC${fc} at ${block.start}`;
    for (let attempt = 0; ; attempt++) {
      try {
        const result = await this.bus.request(this.unit, this.timeout, (client) => readBlock(client, block));
        if (result.length < block.count) throw new Error(`reply of ${result.length} ${block.area === 'coil' || block.area === 'discrete' ? 'bits' : 'registers'} for ${block.count} asked`);
        this.recovered(episode);
        return result;
      } catch (err) {
        const retry = attempt < this.retries && !this.stopped && !(err instanceof BusError) && (err as { modbusCode?: number }).modbusCode === undefined;
        if (retry) continue;
        if (err instanceof BusError && err.kind === 'closed') throw err;
        this.readErrors++;
        this.failed(episode, `unit ${this.unit}, function ${fc} (${block.area}), address ${block.start}, count ${block.count}`, err as Error);
        throw err;
      }
    }
  }

  /**
   * Logs an error once when its episode starts, not on every poll: a read that keeps failing
   * (whatever the error of each try: a short RTU reply is a timeout, then a CRC error on the
   * bytes that follow, then a backed-off unit) is one episode, and so is one that fails now and
   * then (a slave late one time in seven): the episode ends after a minute without failures.
   */
  private failed(episode: string, where: string, err: Error): void {
    const open = this.failing.get(episode);
    if (open) {
      open.failures++;
      open.last = performance.now();
      return;
    }
    this.failing.set(episode, { failures: 1, last: performance.now() });
    this.context.log.warn({ device: this.id, unit: this.unit, err: err.message }, `device ${this.id}: ${where}: ${err.message}`);
  }

  private recovered(episode: string): void {
    const open = this.failing.get(episode);
    if (!open || performance.now() - open.last < QUIET_EPISODE) return;
    this.failing.delete(episode);
    this.context.log.info({ device: this.id }, `device ${this.id}: ${episode} has worked for a minute, after ${open.failures} failures`);
  }

  /**
   * Writes the point's registers (or coil) and reads them back. The value is checked before
   * anything is sent: its type, and that it makes a whole, in-range register value after scale
   * and offset (no silent rounding or wrapping). The device's echo must name the address and
   * value sent. Resolves with the value as sent, decoded back (what the register now means),
   * and the value read back, which must be the same registers.
   */
  async write(name: string, value: Value): Promise<WriteOutcome> {
    const point = writablePoint(this.id, this.config.points, name);
    if (point.area === 'input' || point.area === 'discrete') throw new WriteError(this.id, name, `${point.area} ${point.area === 'input' ? 'registers' : 'inputs'} are read-only`);
    let encoded: number[] | boolean;
    try {
      encoded = encode(point, value);
    } catch (err) {
      if (err instanceof EncodeError) throw new WriteError(this.id, name, err.message);
      throw err;
    }
    const fc = typeof encoded === 'boolean' ? 5 : encoded.length === 1 ? 6 : 16;
    const where = `unit ${this.unit}, function ${fc}, address ${point.address}`;
    let echo: { address: number; state?: boolean; value?: number; length?: number };
    try {
      echo = await this.bus.request(this.unit, this.timeout, async (client) => {
        if (typeof encoded === 'boolean') return client.writeCoil(point.address, encoded);
        if (encoded.length === 1) return client.writeRegister(point.address, encoded[0]);
        return client.writeRegisters(point.address, encoded);
      });
    } catch (err) {
      throw new WriteError(this.id, name, `${where}: ${(err as Error).message}`);
    }
    // The echo says what the device did: another address or value is not this write.
    const sent = typeof encoded === 'boolean' ? { address: point.address, state: encoded } : encoded.length === 1 ? { address: point.address, value: encoded[0] } : { address: point.address, length: encoded.length };
    if (Object.entries(sent).some(([key, v]) => echo[key as keyof typeof echo] !== v)) {
      throw new WriteError(this.id, name, `${where}: the device echoed ${JSON.stringify(echo)} for ${JSON.stringify(sent)}`);
    }
    const registers = typeof encoded === 'boolean' ? [encoded] : encoded;
    const written = decode(point, registers, 0);
    // Read back what the device now holds: a write is done when the device shows it.
    const block: Block = { area: point.area, start: point.address, count: spanOf(point), points: [] };
    let readBack: ArrayLike<number | boolean>;
    try {
      readBack = await this.bus.request(this.unit, this.timeout, (client) => readBlock(client, block));
    } catch (err) {
      throw new WriteError(this.id, name, `written, but reading it back failed: ${(err as Error).message}`);
    }
    for (let i = 0; i < registers.length; i++) {
      if (Boolean(readBack[i]) !== Boolean(registers[i]) || (typeof registers[i] === 'number' && readBack[i] !== registers[i])) {
        throw new WriteError(this.id, name, `${where}: wrote ${JSON.stringify(registers)} but the device holds ${JSON.stringify(Array.from(readBack).slice(0, registers.length))}`);
      }
    }
    const held = decode(point, readBack, 0);
    return { written, readBack: typeof held === 'number' && !Number.isFinite(held) ? null : held };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const group of this.groups) group.stopPolls?.();
    await releaseBus(this.bus);
  }
}

async function readBlock(client: Client, block: Block): Promise<ArrayLike<number | boolean>> {
  switch (block.area) {
    case 'coil':
      return (await client.readCoils(block.start, block.count)).data;
    case 'discrete':
      return (await client.readDiscreteInputs(block.start, block.count)).data;
    case 'holding':
      return (await client.readHoldingRegisters(block.start, block.count)).data;
    case 'input':
      return (await client.readInputRegisters(block.start, block.count)).data;
  }
}
