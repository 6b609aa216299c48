import { Type } from '../core/config-kit.js';
import type { Quality, Reading, Value } from '../core/reading.js';

/*
 * Point names are the user's: `constructor`, `toString` or `__proto__` are points like any
 * other. Values and qualities are plain objects (they travel as JSON), so they are read through
 * own keys only (a point a reading does not carry must not find Object.prototype.constructor)
 * and written as own properties (`x.__proto__ = 5` would set nothing).
 */

/**
 * A reading's values and qualities are numbers, booleans, text or null: what a plain property
 * read finds on Object.prototype instead (a function, an object) is no value. This keeps the
 * property read on V8's inline caches (Object.hasOwn is a call per reading).
 */
function isValue(v: unknown): v is Value | null {
  return v === null || typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean';
}

/** The point's own value in the reading (undefined when the reading does not carry it). */
export function pointValue(reading: Reading, point: string): Value | null | undefined {
  const v: unknown = reading.values[point];
  return isValue(v) ? v : undefined;
}

export function hasPoint(reading: Reading, point: string): boolean {
  return isValue(reading.values[point]);
}

export function pointQuality(reading: Reading, point: string): Quality | undefined {
  const q: unknown = reading.quality?.[point];
  return typeof q === 'string' ? (q as Quality) : undefined;
}

/** `round: N` on a step that computes values: decimal places of its results (0 to 15). */
export const roundDigits = Type.Optional(Type.Integer({ minimum: 0, maximum: 15 }));

/**
 * Rounds to `digits` decimal places (none: as computed), so that a sum of floats reaches the
 * user as 12.593, not 12.592999999999998. Non-finite values pass as they are.
 */
export function rounder(digits: number | undefined): (v: number) => number {
  if (digits === undefined) return (v) => v;
  const scale = 10 ** digits;
  return (v) => (Number.isFinite(v) ? Math.round(v * scale) / scale : v);
}

/** A value that is there: not null, not NaN or infinite, not of bad quality. */
export function goodValue(reading: Reading, point: string): boolean {
  const value = pointValue(reading, point);
  if (value === undefined || value === null || (typeof value === 'number' && !Number.isFinite(value))) return false;
  return pointQuality(reading, point) !== 'bad';
}

/** Whether the reading carries any good value: one that does not (failed reads) is no news. */
export function anyGoodValue(reading: Reading): boolean {
  for (const point in reading.values) if (goodValue(reading, point)) return true;
  return false;
}

/**
 * `dictionary[key]` when it is an object of the dictionary's own, else undefined: a plain read,
 * for a dictionary whose entries are objects. What Object.prototype offers in their place is a
 * function or, for `__proto__`, Object.prototype itself: neither is taken for an entry. A plain
 * read stays on V8's inline caches where Object.hasOwn is a call (this is per reading in window).
 */
export function ownEntry<T extends object>(dictionary: Record<string, T | undefined>, key: string): T | undefined {
  const v: unknown = dictionary[key];
  return typeof v === 'object' && v !== null && v !== Object.prototype ? (v as T) : undefined;
}

/** `dictionary[key] = value` as an own property, `__proto__` included. */
export function setOwn<T>(dictionary: Record<string, T>, key: string, value: T): void {
  if (key === '__proto__') Object.defineProperty(dictionary, key, { value, writable: true, enumerable: true, configurable: true });
  else dictionary[key] = value;
}

/** The point's value as a number, or undefined when it is missing: absent, null, NaN, ±Infinity, not a number, or of bad quality. */
export function numberOf(reading: Reading, point: string): number | undefined {
  const value = pointValue(reading, point);
  if (typeof value !== 'number' || !Number.isFinite(value)) return undefined;
  if (pointQuality(reading, point) === 'bad') return undefined;
  return value;
}

/**
 * A key function over `fields` (`device`, or point names), defaulting to device (+ point);
 * no fields make one key for the whole stream.
 * Keys are built once per distinct combination and reused: a string seen before is found in a
 * Map without being hashed again, which is most of a step's cost on the hot path.
 */
export function keyFunction(fields: string[] | undefined, point?: string): (reading: Reading) => string {
  const suffix = point ? `/${point}` : '';
  if (fields?.length === 0) {
    const whole = `*${suffix}`;
    return () => whole;
  }
  if (!fields || (fields.length === 1 && fields[0] === 'device')) {
    const byDevice = new Map<string, string>();
    return (r) => {
      let key = byDevice.get(r.device);
      if (key === undefined) {
        key = r.device + suffix;
        // device ids from a topic flood must not grow this without end
        if (byDevice.size < 100_000) byDevice.set(r.device, key);
      }
      return key;
    };
  }
  const part = (r: Reading, field: string) => {
    if (field === 'device') return r.device;
    // A read of its own rather than pointValue's: that one also serves every step's measured
    // points, and a load that sees many names goes through V8's global lookup cache, per reading.
    const v: unknown = r.values[field];
    if (typeof v === 'string') return v;
    return isValue(v) && v !== null ? String(v) : '';
  };
  // One level of Maps per field, so that no string is built to look a key up.
  type Level = Map<string, Level | string>;
  const root: Level = new Map();
  let cached = 0;
  const depth = fields.length - 1;
  const compose = (r: Reading) => fields.map((f) => part(r, f)).join('/') + suffix;
  return (r) => {
    let level = root;
    for (let i = 0; i < depth; i++) {
      const value = part(r, fields[i]);
      let next = level.get(value) as Level | undefined;
      if (!next) {
        if (cached >= 100_000) return compose(r);
        level.set(value, (next = new Map()));
      }
      level = next;
    }
    const lastPart = part(r, fields[depth]);
    let key = level.get(lastPart) as string | undefined;
    if (key !== undefined) return key;
    key = compose(r);
    // a field of many values (a measurement used as a key) must not grow the cache without end
    if (cached++ < 100_000) level.set(lastPart, key);
    return key;
  };
}

/** A copy of the reading with one value (and its quality) replaced. */
export function withValue(reading: Reading, point: string, value: number, quality?: 'interpolated' | 'estimated'): Reading {
  const values = { ...reading.values, [point]: value };
  let qualities = reading.quality;
  if (quality) qualities = { ...qualities, [point]: quality };
  else if (pointQuality(reading, point)) {
    qualities = { ...qualities };
    delete qualities[point];
  }
  return { ...reading, values, quality: qualities };
}

/** A copy of the reading without one value, or undefined when nothing else is left. */
export function withoutValue(reading: Reading, point: string): Reading | undefined {
  const values = { ...reading.values };
  delete values[point];
  if (Object.keys(values).length === 0) return undefined;
  let quality = reading.quality;
  if (pointQuality(reading, point)) {
    quality = { ...quality };
    delete quality[point];
  }
  return { ...reading, values, quality };
}
