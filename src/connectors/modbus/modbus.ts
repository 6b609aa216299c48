import { fillDefaults, type Value } from '../../config/kit.js';
import type { Quality, Reading } from '../../streams/reading.js';
import { deviceStatusEvent, WriteError, type Connector, type ConnectorContext, type ConnectorFactory } from '../connector.js';
import { acquireBus, BusError, isTimeout, releaseBus, type Client, type ModbusBus } from './bus.js';
import { decode, encode, EncodeError } from './codec.js';
import { plan, type Block } from './planner.js';
import { modbusRtuSchema, modbusTcpSchema, type ModbusConfig } from './config.js';
import { spanOf, type ModbusPoint } from './points.js';

const FUNCTION = { coil: 1, discrete: 2, holding: 3, input: 4 } as const;

export const createModbus: ConnectorFactory = async (device, context) =>
  new ModbusDevice(fillDefaults(device.protocol === 'modbus-rtu' ? modbusRtuSchema : modbusTcpSchema, structuredClone(device)), context);

/** A group of points polled together at one rate, with its read plan. */
interface PollGroup {
  every: number;
  blocks: Block[];
  timer?: NodeJS.Timeout;
  busy: boolean;
}

/**
 * A Modbus TCP or RTU device: polls its points in planned blocks on a drift-free schedule per
 * poll rate, through the bus it shares with the other devices on the same gateway or serial
 * line, and writes `writable` points through the same queue (then reads them back). A failed
 * read gives its points `bad` quality; a device whose reads all fail is offline until one
 * succeeds (DEVICE_OFFLINE / DEVICE_ONLINE events). Each kind of error is logged once per
 * episode, with the device, unit, function and address.
 */
class ModbusDevice implements Connector {
  readonly id: string;
  online = true;
  /** Reads that failed (exception, timeout, CRC, wrong length, no connection), counted for metrics. */
  readErrors = 0;
  private readonly bus: ModbusBus;
  private readonly unit: number;
  private readonly timeout: number;
  private readonly retries: number;
  private readonly groups: PollGroup[];
  /** Reads failing now, with the kind of error that began the episode. */
  private readonly failing = new Map<string, string>();
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
    this.bus = acquireBus(config.protocol === 'modbus-tcp' ? { tcp: { host: config.host, port: config.port } } : { serial: config.serial }, context.log);
    const limits = { maxGap: config.max_gap, maxRegisters: config.max_registers, maxBits: config.max_bits };
    const byRate = new Map<number, ModbusPoint[]>();
    for (const point of config.points) {
      const every = point.poll ?? config.poll;
      byRate.set(every, [...(byRate.get(every) ?? []), point]);
    }
    this.groups = [...byRate].map(([every, points]) => ({ every, blocks: plan(points, limits), busy: false }));
  }

  /** Requests one poll of every point makes (for tests and the benchmark). */
  get requestsPerPoll(): number {
    return this.groups.reduce((n, g) => n + g.blocks.length, 0);
  }

  start(deliver: (reading: Reading) => void): void {
    this.deliver = deliver;
    for (const group of this.groups) {
      // Polls fall on multiples of the rate from the epoch: no drift, however long it runs.
      // The next one follows the one due, not the clock, which a timer may read a little early.
      const { every } = group;
      let due = Math.ceil((Date.now() + 1) / every) * every;
      const arm = () => {
        group.timer = setTimeout(() => {
          if (this.stopped) return;
          due += every;
          if (due <= Date.now()) due = Math.ceil((Date.now() + 1) / every) * every; // skip what a stall missed
          arm();
          if (!group.busy) void this.poll(group);
        }, Math.max(0, due - Date.now()));
      };
      arm();
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
    if (succeeded === 0 && lastError) this.setOnline(false, lastError);
    else if (succeeded > 0) this.setOnline(true);
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
        const retry = attempt < this.retries && !(err instanceof BusError) && (err as { modbusCode?: number }).modbusCode === undefined;
        if (retry) continue;
        this.readErrors++;
        this.failed(episode, `unit ${this.unit}, function ${fc} (${block.area}), address ${block.start}, count ${block.count}`, err as Error);
        throw err;
      }
    }
  }

  /**
   * Logs an error once when its episode starts, not on every poll: a read that keeps failing
   * (whatever the error of each try: a short RTU reply is a timeout, then a CRC error on the
   * bytes that follow, then a backed-off unit) is one episode until a read succeeds.
   */
  private failed(episode: string, where: string, err: Error): void {
    if (this.failing.has(episode)) return;
    this.failing.set(episode, errorKind(err));
    this.context.log.warn({ device: this.id, unit: this.unit, err: err.message }, `device ${this.id}: ${where}: ${err.message}`);
  }

  private recovered(episode: string): void {
    if (!this.failing.delete(episode)) return;
    this.context.log.info({ device: this.id }, `device ${this.id}: ${episode} works again`);
  }

  private setOnline(online: boolean, err?: Error): void {
    if (online === this.online) return;
    this.online = online;
    const description = online ? `device ${this.id} answers again` : `device ${this.id} does not answer: ${err?.message}`;
    if (online) this.context.log.info({ device: this.id }, description);
    else this.context.log.warn({ device: this.id }, description);
    this.context.report?.(deviceStatusEvent(this.id, online, description));
  }

  async write(name: string, value: Value): Promise<void> {
    const point = this.config.points.find((p) => p.name === name);
    if (!point) throw new WriteError(this.id, name, 'no such point');
    if (!point.writable) throw new WriteError(this.id, name, 'the point is not writable');
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
    try {
      await this.bus.request(this.unit, this.timeout, async (client) => {
        if (typeof encoded === 'boolean') await client.writeCoil(point.address, encoded);
        else if (encoded.length === 1) await client.writeRegister(point.address, encoded[0]);
        else await client.writeRegisters(point.address, encoded);
      });
    } catch (err) {
      throw new WriteError(this.id, name, `${where}: ${(err as Error).message}`);
    }
    // Read back what the device now holds: a write is done when the device shows it.
    const block: Block = { area: point.area, start: point.address, count: spanOf(point), points: [] };
    let readBack: ArrayLike<number | boolean>;
    try {
      readBack = await this.bus.request(this.unit, this.timeout, (client) => readBlock(client, block));
    } catch (err) {
      throw new WriteError(this.id, name, `written, but reading it back failed: ${(err as Error).message}`);
    }
    const expected = typeof encoded === 'boolean' ? [encoded] : encoded;
    for (let i = 0; i < expected.length; i++) {
      if (Boolean(readBack[i]) !== Boolean(expected[i]) || (typeof expected[i] === 'number' && readBack[i] !== expected[i])) {
        throw new WriteError(this.id, name, `${where}: wrote ${JSON.stringify(expected)} but the device holds ${JSON.stringify(Array.from(readBack).slice(0, expected.length))}`);
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const group of this.groups) clearTimeout(group.timer);
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

function errorKind(err: Error): string {
  if (err instanceof BusError) return err.kind;
  const code = (err as { modbusCode?: number }).modbusCode;
  if (code !== undefined) return `exception ${code}`;
  if (isTimeout(err)) return 'timeout';
  return err.message.replace(/\d+/g, '#');
}
