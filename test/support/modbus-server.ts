import modbusSerial from 'modbus-serial';
import { freePort, waitForPort } from './ports.js';

type ServerTCP = InstanceType<typeof modbusSerial.ServerTCP>;
const { ServerTCP } = modbusSerial as unknown as { ServerTCP: new (vector: object, options: object) => ServerTCP };

/** The memory of one unit: what a meter would hold. */
export class UnitMemory {
  readonly holding = new Uint16Array(65536);
  readonly input = new Uint16Array(65536);
  readonly coils = new Uint8Array(65536);
  readonly discrete = new Uint8Array(65536);
  /** Addresses whose writes are refused with exception 2 (illegal data address). */
  readonly refuse = new Set<number>();
  /** Addresses whose reads (of holding registers starting there, or of one there) are refused the same way. */
  readonly refuseReads = new Set<number>();
  /** When n > 0, every n-th read of holding registers is refused with exception 4 (device failure). */
  refuseEvery = 0;
  private holdingReads = 0;

  /** Throws the exception of a refused holding register read at `addr`. */
  checkRead(addr: number): void {
    if (this.refuseReads.has(addr)) throw { modbusErrorCode: 0x02, msg: 'refused' };
    if (this.refuseEvery > 0 && ++this.holdingReads % this.refuseEvery === 0) throw { modbusErrorCode: 0x04, msg: 'device failure' };
  }
}

/**
 * A Modbus TCP server (modbus-serial's ServerTCP, an implementation independent of our client
 * code) on a free loopback port, serving any number of unit ids; it can be stopped and started
 * again on the same port, and counts the requests it answered.
 */
export class ModbusServer {
  readonly units = new Map<number, UnitMemory>();
  requests = 0;
  private server: ServerTCP | undefined;

  private constructor(readonly port: number) {}

  static async start(): Promise<ModbusServer> {
    const server = new ModbusServer(await freePort());
    await server.resume();
    return server;
  }

  unit(id: number): UnitMemory {
    let memory = this.units.get(id);
    if (!memory) this.units.set(id, (memory = new UnitMemory()));
    return memory;
  }

  async resume(): Promise<void> {
    const memory = (unit: number) => {
      this.requests++;
      return this.unit(unit);
    };
    const refuse = (unit: number, addr: number) => {
      if (this.unit(unit).refuse.has(addr)) throw { modbusErrorCode: 0x02, msg: 'refused' };
    };
    this.server = new ServerTCP(
      {
        getCoil: (addr: number, unit: number) => memory(unit).coils[addr] === 1,
        getDiscreteInput: (addr: number, unit: number) => memory(unit).discrete[addr] === 1,
        getMultipleInputRegisters: (addr: number, length: number, unit: number) => Array.from(memory(unit).input.subarray(addr, addr + length)),
        getMultipleHoldingRegisters: (addr: number, length: number, unit: number) => {
          this.unit(unit).checkRead(addr);
          return Array.from(memory(unit).holding.subarray(addr, addr + length));
        },
        getHoldingRegister: (addr: number, unit: number) => {
          this.unit(unit).checkRead(addr);
          return memory(unit).holding[addr];
        },
        getInputRegister: (addr: number, unit: number) => memory(unit).input[addr],
        setCoil: (addr: number, value: boolean, unit: number) => {
          refuse(unit, addr);
          memory(unit).coils[addr] = value ? 1 : 0;
        },
        setRegister: (addr: number, value: number, unit: number) => {
          refuse(unit, addr);
          memory(unit).holding[addr] = value;
        },
        setRegisterArray: (addr: number, values: number[], unit: number) => {
          refuse(unit, addr);
          memory(unit).holding.set(values, addr);
        },
      },
      { host: '127.0.0.1', port: this.port, unitID: 255 },
    );
    this.server.on('socketError', () => {});
    this.server.on('serverError', () => {});
    await waitForPort(this.port);
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    for (const socket of server.socks.keys()) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
