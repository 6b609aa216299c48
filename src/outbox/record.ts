import type { Reading } from '../streams/reading.js';

/** The upstream record of a reading, as JSON: the format of config-contract.yaml. */
export function recordJson(agent: string, stream: string, reading: Reading, seq: number): string {
  return JSON.stringify({
    agent,
    stream,
    device: reading.device,
    ts: reading.ts,
    seq,
    values: reading.event && isEmpty(reading.values) ? undefined : reading.values,
    quality: reading.quality,
    event: reading.event,
  });
}

function isEmpty(values: Reading['values']): boolean {
  for (const _ in values) return false;
  return true;
}
