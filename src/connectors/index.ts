import type { TObject } from '@sinclair/typebox';
import type { ConfigIssue } from '../core/config-error.js';
import type { IssueAt } from '../core/config-kit.js';
import type { ConnectorContext, ConnectorFactory, DeviceBase } from './connector.js';
import { modbusRtuSchema, modbusTcpSchema } from './modbus/config.js';
import { mqttDeviceSchema } from './mqtt/config.js';
import { opcuaSchema } from './opcua/config.js';
import { simulatorSchema } from './simulator/config.js';

export interface ConnectorPlugin {
  /** The device's keys (config.ts in the plugin's folder). */
  schema: TObject;
  /** Imported only when a config uses it: a Pi has little memory, and node-opcua alone is tens of megabytes. */
  create: () => Promise<ConnectorFactory>;
  /** What the schema cannot check about one device (`at` is the device's path in the config). */
  check?(device: any, at: readonly (string | number)[], issueAt: IssueAt): ConfigIssue[];
}

/** Connectors by protocol: one line each. */
export const connectors = {
  'modbus-tcp': { schema: modbusTcpSchema, create: async () => (await import('./modbus/modbus.js')).createModbus },
  'modbus-rtu': { schema: modbusRtuSchema, create: async () => (await import('./modbus/modbus.js')).createModbus },
  opcua: { schema: opcuaSchema, create: async () => (await import('./opcua/opcua.js')).createOpcuaDevice },
  mqtt: { schema: mqttDeviceSchema, create: async () => (await import('./mqtt/mqtt.js')).createMqttDevice },
  simulator: { schema: simulatorSchema, create: async () => (await import('./simulator/simulator.js')).createSimulator },
} satisfies Record<string, ConnectorPlugin>;

export async function createConnector(device: DeviceBase & { protocol: keyof typeof connectors }, context: ConnectorContext) {
  return (await connectors[device.protocol].create())(device, context);
}
