"""A faulty Modbus RTU slave on a serial port, for the agent's error paths.

usage: rtu_faulty.py PORT MODE   (MODE: crc = replies with a wrong CRC; short = replies with
one register less than asked, with a right CRC). Answers FC3 reads only. Prints "ready".
"""
import struct
import sys

import serial


def crc16(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


port = serial.Serial(sys.argv[1], 19200, timeout=0.01)
mode = sys.argv[2]
print("ready", flush=True)
buffer = b""
while True:
    buffer += port.read(64)
    if len(buffer) < 8:
        continue
    request, buffer = buffer[:8], buffer[8:]
    unit, function, start, count = struct.unpack(">BBHH", request[:6])
    if mode == "short":
        count -= 1
    body = bytes([unit, function, 2 * count]) + b"".join(struct.pack(">H", start + i) for i in range(count))
    crc = crc16(body)
    if mode == "crc":
        crc ^= 0x5A5A
    port.write(body + struct.pack("<H", crc))
