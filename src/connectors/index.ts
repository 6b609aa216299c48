import type { DeviceConfig } from '../config/types.js';
import type { ConnectorContext, ConnectorFactory } from './connector.js';

/**
 * Connectors by protocol. Each is imported only when a config uses it: a Pi has little
 * memory, and node-opcua alone is tens of megabytes.
 */
const factories: Record<DeviceConfig['protocol'], () => Promise<ConnectorFactory>> = {
  simulator: async () => (await import('./simulator/simulator.js')).createSimulator,
  'modbus-tcp': async () => (await import('./modbus/modbus.js')).createModbus,
  'modbus-rtu': async () => (await import('./modbus/modbus.js')).createModbus,
  mqtt: async () => (await import('./mqtt/mqtt.js')).createMqttDevice,
  opcua: async () => (await import('./opcua/opcua.js')).createOpcuaDevice,
};

export async function createConnector(device: DeviceConfig, context: ConnectorContext) {
  return (await factories[device.protocol]())(device, context);
}
