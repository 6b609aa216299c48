import type { Logger } from 'pino';
import type { ActionSinkConfig } from '../config/types.js';
import type { Reading } from './reading.js';

/** Performs a write: the device's connector live, a printer in a replay. */
export type Write = (point: string, value: ActionSinkConfig['value']) => Promise<void>;

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
    private readonly now: () => number = Date.now,
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
      () => this.report(actionEvent(reading, this.config, 'info', `wrote ${JSON.stringify(value)} to ${target}`, undefined, now)),
      (err: Error) => {
        this.log.error({ device, point, err: err.message }, `action: writing ${JSON.stringify(value)} to ${target} failed: ${err.message}`);
        this.report(actionEvent(reading, this.config, 'major', `writing ${JSON.stringify(value)} to ${target} failed: ${err.message}`, err.message, now));
      },
    );
  }
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
