import { duration, keyFields, name, object, Type, type Static } from '../core/config-kit.js';
import type { Emit, Reading } from '../core/reading.js';
import { check, operator } from './operator.js';
import { anyGoodValue, goodValue, keyFunction } from './values.js';

/** The operator's keys, their loaded type and their defaults. */
export const schema = object({
  for: duration(),
  point: Type.Optional(name),
  key: Type.Optional(keyFields),
});
type Params = Static<typeof schema>;

interface KeyState {
  device: string;
  /** When the last good reading came (or when watching began, for a device never heard from). */
  last: number;
  /** True once a raise passed, until a good reading clears it. */
  raised: boolean;
  /** No good reading has come yet: `last` is when watching began. */
  never?: boolean;
}

/**
 * `absence: { for: 5m, point: flow, key: [device] }`
 *
 * A dead-man per key (default: the device). When no good reading (one with a good value of
 * `point`, or of any point without `point`) has come for `for`, a raising edge passes, stamped
 * `last + for`, with `last_seen` (epoch ms of the last good reading; null when none ever came);
 * the next good reading passes as the clearing edge, with `last_seen` too. Readings that do not
 * end an absence do not pass. With the default key, every configured device the stream reads is
 * watched from the start, so one that never reports is caught too. Driven by the agent's clock
 * (replay: the data's); state is persisted, so an absence raised before a restart is not raised
 * again, and silence across a restart counts.
 */
export const absence = operator(schema, (params, context) => {
  check(params.for > 0, context, 'for must be more than 0', 'for');
  const keyOf = keyFunction(params.key);
  const { state } = context;
  const maxFuture = context.maxFuture ?? 3_600_000;
  /** Keys not raised yet, for the clock. */
  const watched = new Set<string>();
  for (const [key, keyState] of state.entries<KeyState>()) if (!keyState.raised) watched.add(key);
  // an absence raised must be cleared when the data returns, however long that takes
  state.retain = (keyState) => (keyState as KeyState).raised;

  // With the default key (the device), a device that never reports is silent too. Template ids
  // (`plug-{1}`) are not devices that report: the devices they make are watched once heard from.
  let started = false;
  const defaultKey = params.key === undefined || (params.key.length === 1 && params.key[0] === 'device');
  function watchConfigured(now: number) {
    started = true;
    if (!defaultKey) return;
    for (const device of context.devices ?? []) {
      if (/\{\d+\}/.test(device) || state.get<KeyState>(device)) continue;
      state.set(device, { device, last: now, raised: false, never: true } satisfies KeyState);
      watched.add(device);
    }
  }

  const isGood = (reading: Reading): boolean => (params.point !== undefined ? goodValue(reading, params.point) : anyGoodValue(reading));

  function raise(key: string, keyState: KeyState, emit: Emit) {
    keyState.raised = true;
    watched.delete(key);
    state.set(key, keyState);
    emit({ device: keyState.device, ts: keyState.last + params.for, values: { last_seen: keyState.never ? null : keyState.last }, edge: 'raise' });
  }

  return {
    process(reading, emit) {
      if (reading.untimely) return context.count('untimely');
      if (!started) watchConfigured(reading.ts);
      if (!isGood(reading)) return;
      const key = keyOf(reading);
      const keyState = state.get<KeyState>(key);
      if (!keyState) {
        state.set(key, { device: reading.device, last: reading.ts, raised: false } satisfies KeyState);
        watched.add(key);
        return;
      }
      // silence up to this reading counts, even when no tick saw it (replay, a busy loop)
      if (!keyState.raised && reading.ts >= keyState.last + params.for && !(keyState.last > context.now() + maxFuture)) raise(key, keyState, emit);
      if (reading.ts < keyState.last && !(keyState.last > context.now() + maxFuture)) return; // late: not news
      const wasRaised = keyState.raised;
      const lastSeen = keyState.never ? null : keyState.last;
      keyState.device = reading.device;
      keyState.last = reading.ts;
      keyState.raised = false;
      delete keyState.never;
      state.set(key, keyState);
      watched.add(key);
      if (wasRaised) emit({ ...reading, values: { ...reading.values, last_seen: lastSeen }, edge: 'clear' });
    },

    tick(now, emit) {
      if (!started) watchConfigured(now);
      for (const key of watched) {
        const keyState = state.get<KeyState>(key);
        if (!keyState || keyState.raised) {
          watched.delete(key);
          continue;
        }
        // stamped ahead of the clock (a clock stepped back since): silence is measured from now on
        if (keyState.last > now + maxFuture) {
          context.count('clock_back');
          keyState.last = now;
          state.set(key, keyState);
        }
        if (now >= keyState.last + params.for) raise(key, keyState, emit);
      }
    },
  };
});

