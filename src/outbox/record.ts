import type { Reading } from '../core/reading.js';

/**
 * The upstream record of a reading, as JSON: the format of config-contract.yaml. `epoch` names
 * the outbox opening that handed out `seq`: (agent, epoch, seq) names one record, ever.
 */
export function recordJson(agent: string, stream: string, reading: Reading, seq: number, epoch?: string): string {
  return JSON.stringify({
    agent,
    stream,
    device: reading.device,
    ts: reading.ts,
    epoch,
    seq,
    values: reading.event && isEmpty(reading.values) ? undefined : reading.values,
    quality: reading.quality,
    event: reading.event,
    capture: reading.capture,
  });
}

function isEmpty(values: Reading['values']): boolean {
  for (const _ in values) return false;
  return true;
}
