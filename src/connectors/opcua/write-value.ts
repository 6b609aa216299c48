import { DataType } from 'node-opcua';
import type { Value } from '../../core/reading.js';

const integerRanges: Partial<Record<DataType, [number, number]>> = {
  [DataType.SByte]: [-128, 127],
  [DataType.Byte]: [0, 255],
  [DataType.Int16]: [-32768, 32767],
  [DataType.UInt16]: [0, 65535],
  [DataType.Int32]: [-2147483648, 2147483647],
  [DataType.UInt32]: [0, 4294967295],
  // beyond 2^53 a JavaScript number is no longer the integer that was asked for
  [DataType.Int64]: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  [DataType.UInt64]: [0, Number.MAX_SAFE_INTEGER],
};

const FLOAT_MAX = 3.4028234663852886e38;

/**
 * The value to send to a node of `type`, exactly as asked, or the reason it cannot be: node-opcua
 * would otherwise truncate 1.7 to 1 for an Int16, wrap 40000 around, or send "abc" as NaN.
 */
export function valueForType(value: Value, type: DataType): { value: Value } | { refused: string } {
  const typeName = DataType[type] ?? `data type ${type}`;
  const shown = JSON.stringify(value);
  const range = integerRanges[type];
  if (range) {
    if (typeof value !== 'number') return { refused: `${shown} is not a number` };
    if (!Number.isInteger(value)) return { refused: `${shown} is not an integer` };
    if (value < range[0] || value > range[1]) return { refused: `${shown} is out of range ${range[0]}..${range[1]}` };
    return { value };
  }
  switch (type) {
    case DataType.Double:
    case DataType.Float:
      if (typeof value !== 'number') return { refused: `${shown} is not a number` };
      if (!Number.isFinite(value)) return { refused: `${shown} is not a finite number` };
      if (type === DataType.Float && Math.abs(value) > FLOAT_MAX) return { refused: `${shown} is out of the Float range ±${FLOAT_MAX}` };
      return { value };
    case DataType.Boolean:
      if (typeof value === 'boolean') return { value };
      if (value === 0 || value === 1) return { value: value === 1 };
      return { refused: `${shown} is not true, false, 0 or 1` };
    case DataType.String:
      if (typeof value !== 'string') return { refused: `${shown} is not a string` };
      return { value };
    default:
      return { refused: `writing to a ${typeName} node is not supported` };
  }
}
