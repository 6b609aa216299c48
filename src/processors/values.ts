import type { Reading } from '../streams/reading.js';

/** The point's value as a number, or undefined when it is missing: absent, null, NaN, ±Infinity, not a number, or of bad quality. */
export function numberOf(reading: Reading, point: string): number | undefined {
  const value = reading.values[point];
  if (typeof value !== 'number' || !Number.isFinite(value)) return undefined;
  if (reading.quality?.[point] === 'bad') return undefined;
  return value;
}

/** A key function over `fields` (`device`, or point names), defaulting to device (+ point). */
export function keyFunction(fields: string[] | undefined, point?: string): (reading: Reading) => string {
  if (!fields) return point ? (r) => `${r.device}/${point}` : (r) => r.device;
  if (fields.length === 1 && fields[0] === 'device') return point ? (r) => `${r.device}/${point}` : (r) => r.device;
  return (r) => {
    let key = '';
    for (const field of fields) key += (field === 'device' ? r.device : String(r.values[field] ?? '')) + '/';
    return point ? key + point : key;
  };
}

/** A copy of the reading with one value (and its quality) replaced. */
export function withValue(reading: Reading, point: string, value: number, quality?: 'interpolated' | 'estimated'): Reading {
  const values = { ...reading.values, [point]: value };
  let qualities = reading.quality;
  if (quality) qualities = { ...qualities, [point]: quality };
  else if (qualities?.[point]) {
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
  if (quality?.[point]) {
    quality = { ...quality };
    delete quality[point];
  }
  return { ...reading, values, quality };
}
