// Modbus TCP servers for scripts/bench/modbus, in a process of their own so that the agent's
// side is measured alone. argv: count of servers. Prints "ports p1,p2,…" when listening.
// Unit 1's holding registers 0..49 hold 0..49, register 100 a value that swings between 100
// and 500 every 20 ms (a threshold breach for the latency run); each write of coil 0 is
// printed as "write <epoch ms with fractions>".
import modbusSerial, { type IServiceVector } from 'modbus-serial';

const count = Number(process.argv[2] ?? 1);
const registers = Array.from({ length: 200 }, (_, i) => i);
let coil = false;
setInterval(() => (registers[100] = registers[100] === 500 ? 100 : 500), 20);
const now = () => performance.timeOrigin + performance.now();
const vector: IServiceVector = {
  getHoldingRegister: (addr: number) => registers[addr],
  getMultipleHoldingRegisters: (addr: number, length: number) => registers.slice(addr, addr + length),
  getCoil: () => coil,
  setCoil: (_addr: number, value: boolean) => {
    coil = value;
    process.stdout.write(`write ${now()}\n`);
  },
};
const ports: number[] = [];
for (let i = 0; i < count; i++) {
  const port = 20000 + Math.floor(Math.random() * 20000);
  new modbusSerial.ServerTCP(vector, { host: '127.0.0.1', port, unitID: 255 }).on('serverError', () => {});
  ports.push(port);
}
setTimeout(() => console.log(`ports ${ports.join(',')}`), 300);
