import { describe, expect, it } from 'vitest';
import { ActionSink } from '../src/streams/action.js';
import type { Reading } from '../src/core/reading.js';
import { testLog } from './support/log.js';

const reading = (ts: number, edge?: 'raise' | 'clear'): Reading => ({ device: 'm1', ts, values: { p: 1 }, edge });

function sink(on: 'raise' | 'clear' | 'both' | undefined, write: (point: string, value: unknown) => Promise<void>, minInterval = 0) {
  const events: Reading[] = [];
  let now = 0;
  const action = new ActionSink({ device: 'plc', point: 'trip', value: true, on, min_interval: minInterval }, write, (e) => events.push(e), testLog, () => now, () => now);
  return { action, events, setNow: (t: number) => (now = t) };
}

const settle = () => new Promise((r) => setImmediate(r));

describe('action sink', () => {
  it('writes on the configured edge only', async () => {
    const writes: string[] = [];
    for (const on of ['raise', 'clear', 'both', undefined] as const) {
      const { action } = sink(on, async () => void writes.push(String(on)));
      action.handle(reading(1, 'raise'));
      action.handle(reading(2, 'clear'));
      action.handle(reading(3)); // unmarked readings count as raising
    }
    expect(writes).toEqual(['raise', 'raise', 'clear', 'both', 'both', 'both', 'undefined', 'undefined']);
  });

  it('writes at most once per min_interval', async () => {
    let writes = 0;
    const { action, setNow } = sink('both', async () => void writes++, 10_000);
    for (const t of [0, 5_000, 9_999, 10_000, 15_000, 20_001]) {
      setNow(t);
      action.handle(reading(t));
    }
    expect(writes).toBe(3);
  });

  it('reports a write as an ACTION event, and a failed one with its error', async () => {
    const ok = sink('raise', async () => {});
    ok.setNow(1000);
    ok.action.handle(reading(1));
    const failed = sink('raise', async () => {
      throw new Error('device plc, point trip: illegal data address (exception 2)');
    });
    failed.setNow(2000);
    failed.action.handle(reading(2));
    await settle();
    expect(ok.events).toEqual([
      { device: 'plc', ts: 1000, values: {}, event: { code: 'ACTION', severity: 'info', description: 'wrote true to plc.trip', state: 'raised', point: 'trip', value: true, ok: true, error: undefined, cause_ts: 1 } },
    ]);
    expect(failed.events[0].event).toMatchObject({
      code: 'ACTION',
      severity: 'major',
      ok: false,
      error: 'device plc, point trip: illegal data address (exception 2)',
      description: 'writing true to plc.trip failed: device plc, point trip: illegal data address (exception 2)',
    });
  });
});
