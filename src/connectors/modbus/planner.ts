import { isBitArea, spanOf, type Area, type ModbusPoint } from './points.js';

export interface Block {
  area: Area;
  start: number;
  /** registers, or bits for coils and discrete inputs */
  count: number;
  points: { point: ModbusPoint; at: number }[];
}

export interface PlanLimits {
  /** Unused registers (or bits) that may be read to join two points into one request. */
  maxGap: number;
  maxRegisters: number;
  maxBits: number;
}

export const DEFAULT_LIMITS: PlanLimits = { maxGap: 10, maxRegisters: 125, maxBits: 2000 };

/**
 * Coalesces points into the fewest read requests: per area, points in address order join the
 * current block while the gap to it is at most `maxGap` and the block stays within the
 * protocol's (or the device's) limit per request.
 */
export function plan(points: readonly ModbusPoint[], limits: PlanLimits = DEFAULT_LIMITS): Block[] {
  const sorted = [...points].sort((a, b) => (a.area === b.area ? a.address - b.address : a.area < b.area ? -1 : 1));
  const blocks: Block[] = [];
  let block: Block | undefined;
  for (const point of sorted) {
    const end = point.address + spanOf(point);
    const limit = isBitArea(point.area) ? limits.maxBits : limits.maxRegisters;
    const blockEnd = block ? block.start + block.count : 0;
    if (block && block.area === point.area && point.address <= blockEnd + limits.maxGap && Math.max(blockEnd, end) - block.start <= limit) {
      block.count = Math.max(blockEnd, end) - block.start;
    } else {
      block = { area: point.area, start: point.address, count: end - point.address, points: [] };
      blocks.push(block);
    }
    block.points.push({ point, at: point.address - block.start });
  }
  return blocks;
}
