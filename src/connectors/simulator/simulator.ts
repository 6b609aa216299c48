import { fillDefaults } from '../../core/config-kit.js';
import { simulatorSchema, type SimulatorConfig } from './config.js';
import type { Reading, Value } from '../../core/reading.js';
import { writablePoint, type Connector, type ConnectorFactory } from '../connector.js';
import { everyTick, schedule } from '../../core/schedule.js';
import { signalOf, type Signal } from './signals.js';

/** A built-in meter: signals instead of a device, so the agent can be tried with no hardware. */
export const createSimulator: ConnectorFactory = async (device) => new Simulator(fillDefaults(simulatorSchema, structuredClone(device)));

class Simulator implements Connector {
  readonly id: string;
  readonly online = true;
  private readonly poll: number;
  private readonly signals: { name: string; signal: Signal }[];
  private readonly written = new Map<string, Value>();
  private stopSchedule: (() => void) | undefined;

  constructor(private readonly device: SimulatorConfig) {
    this.id = device.id;
    this.poll = device.poll;
    this.signals = device.points.map((p) => ({ name: p.name, signal: signalOf(p) }));
  }

  start(deliver: (reading: Reading) => void): void {
    // Once at start, then on multiples of `poll` from the epoch (no drift), waited for on the monotonic clock.
    this.stopSchedule = schedule(everyTick(this.poll), (ts) => {
      const values: Reading['values'] = Object.create(null); // `__proto__` is a point name too
      for (const { name, signal } of this.signals) values[name] = this.written.get(name) ?? signal(ts);
      deliver({ device: this.id, ts, values });
    }, { atStart: true });
  }

  async write(point: string, value: Value): Promise<void> {
    writablePoint(this.id, this.device.points, point);
    this.written.set(point, value);
  }

  async stop(): Promise<void> {
    this.stopSchedule?.();
  }
}
