import type { Logger } from 'pino';
import type { ActionSinkConfig } from '../config/types.js';
import type { WriteOutcome } from '../connectors/connector.js';
import type { Reading } from '../core/reading.js';

/** Performs a write: the device's connector live, a printer in a replay. */
export type Write = (point: string, value: ActionSinkConfig['value']) => Promise<WriteOutcome | void>;

/**
 * The `action` sink: writes a value to a device's point on the configured edge (`on: raise`,
 * the default, `clear` or `both`; a reading that no hysteresis marked counts as raising), at
 * most once per `min_interval`, and reports each write (done or failed) as an ACTION event.
 */
export class ActionSink {
  private lastWrite = -Infinity;

  constructor(
    private readonly config: ActionSinkConfig,
    private readonly write: Write,
    private readonly report: (event: Reading) => void,
    private readonly log: Logger,
    /** min_interval is a span, not a date: monotonic, so a step of the wall clock back cannot mute the action for as long. */
    private readonly now: () => number = () => performance.now(),
    /** The ACTION event's time: the wall clock live, the data's in a replay (never the monotonic clock). */
    private readonly stamp: () => number = Date.now,
  ) {}

  handle(reading: Reading): void {
    const on = this.config.on ?? 'raise';
    const edge = reading.edge ?? 'raise';
    if (on !== 'both' && on !== edge) return;
    const now = this.now();
    if (now - this.lastWrite < (this.config.min_interval ?? 0)) return;
    this.lastWrite = now;
    const { device, point, value } = this.config;
    const target = `${device}.${point}`;
    this.write(point, value).then(
      (outcome) => {
        const event = actionEvent(reading, this.config, 'info', describeWrite(value, target, outcome), undefined, this.stamp());
        if (outcome) {
          event.event!.written = outcome.written;
          if (outcome.readBack !== undefined) event.event!.read_back = outcome.readBack;
        }
        this.report(event);
      },
      (err: Error) => {
        this.log.error({ device, point, err: err.message }, `action: writing ${JSON.stringify(value)} to ${target} failed: ${err.message}`);
        this.report(actionEvent(reading, this.config, 'major', `writing ${JSON.stringify(value)} to ${target} failed: ${err.message}`, err.message, this.stamp()));
      },
    );
  }
}

/** Says exactly what the device received, when that differs from what was asked, and what it then held. */
function describeWrite(asked: ActionSinkConfig['value'], target: string, outcome: WriteOutcome | void): string {
  if (!outcome) return `wrote ${JSON.stringify(asked)} to ${target}`;
  const sent = outcome.written === asked ? JSON.stringify(asked) : `${JSON.stringify(outcome.written)} (asked ${JSON.stringify(asked)})`;
  const back = outcome.readBack === undefined ? '' : `; read back ${JSON.stringify(outcome.readBack)}`;
  return `wrote ${sent} to ${target}${back}`;
}

function actionEvent(cause: Reading, config: ActionSinkConfig, severity: 'info' | 'major', description: string, error: string | undefined, ts: number): Reading {
  return {
    device: config.device,
    ts,
    values: {},
    event: {
      code: 'ACTION',
      severity,
      description,
      state: 'raised',
      point: config.point,
      value: config.value,
      ok: error === undefined,
      error,
      cause_ts: cause.ts,
    },
  };
}
