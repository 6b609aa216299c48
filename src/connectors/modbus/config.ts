/** The keys of a Modbus TCP or RTU device: its schema, its loaded type and its defaults in one place. */
import { duration, name, object, oneOf, port, text, Type, withDefault, unit, writable, type Static } from '../../core/config-kit.js';

export const modbusPoint = object({
  name,
  area: oneOf(['holding', 'input', 'coil', 'discrete']),
  address: Type.Integer({ minimum: 0, maximum: 65535 }),
  // type, order, bit, length, scale, offset: defaults applied by the codec (typeOf, decode), which also decodes points built in code
  type: Type.Optional(oneOf(['int16', 'uint16', 'int32', 'uint32', 'int64', 'uint64', 'float32', 'float64', 'bool', 'string'])),
  order: Type.Optional(oneOf(['ABCD', 'CDAB', 'BADC', 'DCBA'])),
  bit: Type.Optional(Type.Integer({ minimum: 0, maximum: 15 })),
  length: Type.Optional(Type.Integer({ minimum: 1, maximum: 125 })),
  scale: Type.Optional(Type.Number()),
  offset: Type.Optional(Type.Number()),
  /** the device's poll when absent */
  poll: Type.Optional(duration()),
  writable,
  unit,
});

const common = {
  id: name,
  unit_id: withDefault(Type.Integer({ minimum: 0, maximum: 255 }), 1),
  poll: duration('1s'),
  timeout: duration('1s'),
  retries: withDefault(Type.Integer({ minimum: 0, maximum: 10 }), 1),
  max_gap: withDefault(Type.Integer({ minimum: 0, maximum: 124 }), 10),
  max_registers: withDefault(Type.Integer({ minimum: 1, maximum: 125 }), 125),
  max_bits: withDefault(Type.Integer({ minimum: 1, maximum: 2000 }), 2000),
  /** Failed polls in a row before the device is reported offline (one good poll brings it back). */
  offline_after: withDefault(Type.Integer({ minimum: 1, maximum: 1000 }), 3),
  points: Type.Array(modbusPoint, { minItems: 1 }),
};

export const modbusTcpSchema = object({
  ...common,
  protocol: Type.Literal('modbus-tcp'),
  host: text,
  port: withDefault(port, 502),
});

export const serialSchema = object({
  path: text,
  baud: withDefault(Type.Integer({ minimum: 300 }), 9600),
  parity: withDefault(oneOf(['none', 'even', 'odd', 'mark', 'space']), 'none'),
  data_bits: withDefault(oneOf([7, 8]), 8),
  stop_bits: withDefault(oneOf([1, 2]), 1),
});

export const modbusRtuSchema = object({
  ...common,
  protocol: Type.Literal('modbus-rtu'),
  serial: serialSchema,
});

export type ModbusPoint = Static<typeof modbusPoint>;
export type SerialConfig = Static<typeof serialSchema>;
export type ModbusTcpConfig = Static<typeof modbusTcpSchema>;
export type ModbusRtuConfig = Static<typeof modbusRtuSchema>;
export type ModbusConfig = ModbusTcpConfig | ModbusRtuConfig;
