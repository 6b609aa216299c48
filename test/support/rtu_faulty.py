"""A faulty Modbus RTU slave on a serial port, for the agent's error paths.

usage: rtu_faulty.py PORT MODE   (MODE: crc = replies with a wrong CRC; short = replies with
one register less than asked, with a right CRC; late = right replies, but one request in seven
is answered after 300 ms; very-late = the same after 500 ms; count = replies whose byte count says one register more
than they hold (frame length right, CRC right); echo = FC6 writes are answered with the address after the one
written, with a right CRC). Answers FC3 reads (and FC6 writes in echo mode); register N of unit U holds 100 * U + N, as
in rtu_server.py. Prints "ready". Needs pyserial: Debian's python3-serial, so run it with
/usr/bin/python3 (a pyenv python3 on PATH does not have it).
"""
import struct
import sys
import time

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
requests = 0
while True:
    buffer += port.read(64)
    if len(buffer) < 8:
        continue
    request, buffer = buffer[:8], buffer[8:]
    unit, function, start, count = struct.unpack(">BBHH", request[:6])
    requests += 1
    if mode == "echo" and function == 6:
        body = request[:2] + struct.pack(">HH", start + 1, count)
        port.write(body + struct.pack("<H", crc16(body)))
        continue
    if mode == "short":
        count -= 1
    body = bytes([unit, function, 2 * count + (2 if mode == "count" else 0)]) + b"".join(struct.pack(">H", 100 * unit + start + i) for i in range(count))
    crc = crc16(body)
    if mode == "crc":
        crc ^= 0x5A5A
    if mode in ("late", "very-late") and requests % 7 == 0:
        time.sleep(0.3 if mode == "late" else 0.5)
    port.write(body + struct.pack("<H", crc))
