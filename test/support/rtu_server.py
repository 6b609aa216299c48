"""A Modbus RTU server (pymodbus, independent of the agent's client) on a serial port.

usage: rtu_server.py PORT UNIT[,UNIT...]
Each listed unit's holding and input register N holds 100 * unit + N; any other unit id on
the bus never answers (a dead slave). Prints "ready" once it listens.
"""
import logging
import sys

from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusSlaveContext
from pymodbus.server import StartSerialServer
from pymodbus.transaction import ModbusRtuFramer

logging.basicConfig(level=logging.CRITICAL)

port = sys.argv[1]
units = [int(u) for u in sys.argv[2].split(",")]
slaves = {}
for unit in units:
    registers = ModbusSequentialDataBlock(0, [100 * unit + n for n in range(200)])
    slaves[unit] = ModbusSlaveContext(hr=registers, ir=registers, co=ModbusSequentialDataBlock(0, [0] * 200), di=ModbusSequentialDataBlock(0, [0] * 200), zero_mode=True)
context = ModbusServerContext(slaves=slaves, single=False)
print("ready", flush=True)
StartSerialServer(context=context, framer=ModbusRtuFramer, port=port, baudrate=19200, timeout=0.005)
