import { isBitArea, spanOf, typeOf, type ModbusPoint, type WordOrder } from './points.js';
import type { Value } from '../../core/reading.js';

/**
 * Bytes in big-endian (ABCD) order from the registers as the device sends them:
 * ABCD as is; CDAB words reversed; BADC bytes swapped in each word; DCBA both (little-endian).
 */
function toBigEndian(words: ArrayLike<number>, from: number, count: number, order: WordOrder): Buffer {
  const bytes = Buffer.allocUnsafe(count * 2);
  const reverseWords = order === 'CDAB' || order === 'DCBA';
  const swapBytes = order === 'BADC' || order === 'DCBA';
  for (let i = 0; i < count; i++) {
    const word = words[from + (reverseWords ? count - 1 - i : i)];
    bytes[i * 2] = swapBytes ? word & 0xff : word >> 8;
    bytes[i * 2 + 1] = swapBytes ? word >> 8 : word & 0xff;
  }
  return bytes;
}

/** The registers to send for big-endian bytes: the inverse of toBigEndian. */
function fromBigEndian(bytes: Buffer, order: WordOrder): number[] {
  const count = bytes.length / 2;
  const reverseWords = order === 'CDAB' || order === 'DCBA';
  const swapBytes = order === 'BADC' || order === 'DCBA';
  const words = new Array<number>(count);
  for (let i = 0; i < count; i++) {
    const hi = bytes[i * 2];
    const lo = bytes[i * 2 + 1];
    words[reverseWords ? count - 1 - i : i] = swapBytes ? (lo << 8) | hi : (hi << 8) | lo;
  }
  return words;
}

/**
 * The point's value from a block read at `from`: registers (numbers 0..65535) or bits.
 * Numbers get `raw * scale + offset`; a NaN or infinite float comes back as is, for the caller
 * to mark bad. 64-bit integers beyond 2^53 lose precision as JS numbers.
 */
export function decode(point: ModbusPoint, data: ArrayLike<number | boolean>, from: number): Value {
  if (isBitArea(point.area)) return Boolean(data[from]);
  const words = data as ArrayLike<number>;
  const type = typeOf(point);
  if (type === 'bool') return ((words[from] >> (point.bit ?? 0)) & 1) === 1;
  const order = point.order ?? 'ABCD';
  const bytes = toBigEndian(words, from, spanOf(point), order);
  if (type === 'string') return bytes.toString('latin1').replace(/[\0 ]+$/, '');
  let raw: number;
  switch (type) {
    case 'int16':
      raw = bytes.readInt16BE(0);
      break;
    case 'uint16':
      raw = bytes.readUInt16BE(0);
      break;
    case 'int32':
      raw = bytes.readInt32BE(0);
      break;
    case 'uint32':
      raw = bytes.readUInt32BE(0);
      break;
    case 'int64':
      raw = Number(bytes.readBigInt64BE(0));
      break;
    case 'uint64':
      raw = Number(bytes.readBigUInt64BE(0));
      break;
    case 'float32':
      raw = bytes.readFloatBE(0);
      break;
    case 'float64':
      raw = bytes.readDoubleBE(0);
      break;
  }
  return raw * (point.scale ?? 1) + (point.offset ?? 0);
}

export class EncodeError extends Error {}

const FLOAT32_MAX = 3.4028234663852886e38;

/**
 * The registers (or the coil state) that write `value` to the point: scale, offset and order
 * reversed. Refuses, naming the type, what the registers cannot hold exactly: a value of the
 * wrong type, one outside the type's range, and for an integer type one that is not a whole
 * register value after scale and offset (it would be rounded: the device would not get what
 * was asked).
 */
export function encode(point: ModbusPoint, value: Value): number[] | boolean {
  const type = typeOf(point);
  if (isBitArea(point.area) || type === 'bool') {
    if (typeof value !== 'boolean' && value !== 0 && value !== 1) throw new EncodeError(`${JSON.stringify(value)} is not a boolean (the point is a ${isBitArea(point.area) ? point.area : 'bool'})`);
    if (!isBitArea(point.area)) throw new EncodeError('writing one bit of a register is not supported (it would overwrite the other bits)');
    return Boolean(value);
  }
  const order = point.order ?? 'ABCD';
  if (type === 'string') {
    if (typeof value !== 'string') throw new EncodeError(`${JSON.stringify(value)} is not a string (the point is a string of ${spanOf(point)} registers)`);
    const bytes = Buffer.alloc(spanOf(point) * 2);
    if (Buffer.byteLength(value, 'latin1') > bytes.length) throw new EncodeError(`"${value}" is longer than ${bytes.length} characters`);
    bytes.write(value, 'latin1');
    return fromBigEndian(bytes, order);
  }
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new EncodeError(`${JSON.stringify(value)} is not a number (the point is ${type})`);
  const scale = point.scale ?? 1;
  const offset = point.offset ?? 0;
  const raw = (value - offset) / scale;
  const bytes = Buffer.alloc(spanOf(point) * 2);
  const integer = (min: number, max: number) => {
    const rounded = Math.round(raw);
    if (rounded < min || rounded > max) throw new EncodeError(`${value} is out of range for ${type} (raw ${rounded}, from ${min} to ${max})`);
    // decimal scales are inexact in binary (0.3 / 0.1 is 2.9999999999999996): allow that much
    if (Math.abs(raw - rounded) > 1e-9 * Math.max(1, Math.abs(raw))) {
      throw new EncodeError(`${value} is not a whole ${type} value after scale ${scale} and offset ${offset} (raw ${raw}): it would be rounded`);
    }
    return rounded;
  };
  switch (type) {
    case 'int16':
      bytes.writeInt16BE(integer(-32768, 32767));
      break;
    case 'uint16':
      bytes.writeUInt16BE(integer(0, 65535));
      break;
    case 'int32':
      bytes.writeInt32BE(integer(-(2 ** 31), 2 ** 31 - 1));
      break;
    case 'uint32':
      bytes.writeUInt32BE(integer(0, 2 ** 32 - 1));
      break;
    case 'int64':
      bytes.writeBigInt64BE(BigInt(integer(Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER)));
      break;
    case 'uint64':
      bytes.writeBigUInt64BE(BigInt(integer(0, Number.MAX_SAFE_INTEGER)));
      break;
    case 'float32':
      if (!(Math.abs(raw) <= FLOAT32_MAX)) throw new EncodeError(`${value} is out of range for float32 (raw ${raw})`);
      bytes.writeFloatBE(raw);
      break;
    case 'float64':
      if (!Number.isFinite(raw)) throw new EncodeError(`${value} is out of range for float64 (raw ${raw})`);
      bytes.writeDoubleBE(raw);
      break;
  }
  return fromBigEndian(bytes, order);
}
