export type Area = 'holding' | 'input' | 'coil' | 'discrete';
export type ModbusType = 'int16' | 'uint16' | 'int32' | 'uint32' | 'int64' | 'uint64' | 'float32' | 'float64' | 'bool' | 'string';
export type WordOrder = 'ABCD' | 'CDAB' | 'BADC' | 'DCBA';

/** A point's keys as loaded (the schema is in config.ts). */
export type { ModbusPoint } from './config.js';
import type { ModbusPoint } from './config.js';

const WORDS: Record<ModbusType, number> = { int16: 1, uint16: 1, int32: 2, uint32: 2, int64: 4, uint64: 4, float32: 2, float64: 4, bool: 1, string: 1 };

export const isBitArea = (area: Area) => area === 'coil' || area === 'discrete';

/** The point's type, with the defaults: bool for coils and discrete inputs, uint16 for registers. */
export function typeOf(point: ModbusPoint): ModbusType {
  return point.type ?? (isBitArea(point.area) ? 'bool' : 'uint16');
}

/** Registers (or bits, for coils and discrete inputs) the point spans. */
export function spanOf(point: ModbusPoint): number {
  if (isBitArea(point.area)) return 1;
  const type = typeOf(point);
  return type === 'string' ? (point.length ?? 1) : WORDS[type];
}
