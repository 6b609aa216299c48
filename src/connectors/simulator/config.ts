/** The keys of the simulator: its schema, its loaded type and its defaults in one place. */
import { anyValue, duration, name, object, oneOf, Type, withDefault, unit, writable, type Static } from '../../core/config-kit.js';

export const simulatorPoint = object({
  name,
  signal: withDefault(oneOf(['sine', 'counter', 'random', 'step', 'constant']), 'constant'),
  min: withDefault(Type.Number(), 0),
  max: withDefault(Type.Number(), 100),
  period: duration('10m'),
  /** counter: increase per hour */
  rate: withDefault(Type.Number(), 1),
  /** counter: the value at 2025-01-01; random: the first value ((min + max) / 2 when absent) */
  start: Type.Optional(Type.Number()),
  /** random: the largest move per reading ((max - min) / 100 when absent) */
  step: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
  value: withDefault(anyValue, 0),
  writable,
  unit,
});

export const simulatorSchema = object({
  id: name,
  protocol: Type.Literal('simulator'),
  poll: duration('1s'),
  points: Type.Array(simulatorPoint, { minItems: 1 }),
});

export type SimulatorPointConfig = Static<typeof simulatorPoint>;
export type SimulatorConfig = Static<typeof simulatorSchema>;
