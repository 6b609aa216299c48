"""A pymodbus TCP server for scripts/bench/modbus: holding registers 0..199 hold 0..199 for
every unit id. argv: port. Prints "ready" when it listens."""
import logging
import sys

from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusSlaveContext
from pymodbus.server import StartTcpServer

logging.basicConfig(level=logging.CRITICAL)
block = ModbusSequentialDataBlock(0, list(range(200)))
context = ModbusServerContext(slaves=ModbusSlaveContext(hr=block, ir=block, zero_mode=True), single=True)
print("ready", flush=True)
StartTcpServer(context=context, address=("127.0.0.1", int(sys.argv[1])))
