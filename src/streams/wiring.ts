import type { Logger } from 'pino';
import type { StreamConfig } from '../config/types.js';
import type { WriteOutcome } from '../connectors/connector.js';
import { ActionSink } from './action.js';
import type { BuiltStream } from './build.js';
import type { Reading, Value } from '../core/reading.js';
import { Stream } from './stream.js';

/** Where a stream's output goes: the live agent's outbox and connectors, or replay's printer. */
export interface StreamSinks {
  /** Queues a record for these upstreams (the stream's `to:` names). */
  send(upstreams: readonly string[], stream: string, reading: Reading): void;
  /** Writes a point of a device (an `action` sink of `stream`). */
  write(device: string, point: string, value: Value, stream: string): Promise<WriteOutcome | void>;
  log: Logger;
  /** The clock of `min_interval` between actions (replay: the data's). */
  now?: () => number;
  /** Whether each write goes upstream as an ACTION event (replay prints the writes instead). */
  actionEvents?: boolean;
  /** A step that throws is logged and its reading dropped (the live agent), instead of the error going on (replay). */
  containErrors?: boolean;
}

/** A stream with its steps and sinks: readings pushed in come out to its upstreams and actions. */
export function wireStream(config: StreamConfig, built: BuiltStream, sinks: StreamSinks): Stream {
  const upstreams = config.to.filter((sink): sink is string => typeof sink === 'string');
  const toUpstreams = (reading: Reading) => {
    if (upstreams.length > 0) sinks.send(upstreams, config.name, reading);
  };
  const report = sinks.actionEvents === false ? () => {} : toUpstreams;
  const actions = config.to.flatMap((sink) =>
    typeof sink === 'string' ? [] : [new ActionSink(sink.action, (point, value) => sinks.write(sink.action.device, point, value, config.name), report, sinks.log, sinks.now, sinks.now)],
  );
  return new Stream(
    config,
    built.steps,
    (reading) => {
      toUpstreams(reading);
      for (const action of actions) action.handle(reading);
    },
    built.counters,
    sinks.containErrors ? sinks.log : undefined,
  );
}
