import { createRequire } from 'node:module';

/**
 * Loads mqtt-packet (MQTT.js's packet coder) with a no-op in place of its `debug` loggers,
 * unless DEBUG names them. mqtt-packet calls `debug(...)` about ten times per packet it reads
 * or writes, and `debug`'s rest parameter allocates an array at every call, enabled or not: in
 * a burst through the agent (scripts/bench/e2e, workload a) that was 19 % of all the memory
 * allocated, 330 MB for 200,000 messages in and out, and the young-generation collections it
 * caused. MQTT.js's own logger is replaced through its `log` option (src/mqtt/client.ts);
 * mqtt-packet has no option, so its modules are required here, before MQTT.js requires them,
 * with `debug` answering the no-op for their namespaces only. Every other module, loaded before
 * or after, gets `debug` as it is.
 *
 * Imported by src/mqtt/client.ts ahead of MQTT.js. When mqtt-packet was loaded already (a
 * program that imported MQTT.js first), this does nothing: MQTT.js works as before.
 */
const require = createRequire(import.meta.url);

function loadQuietly(): void {
  const fromMqtt = createRequire(require.resolve('mqtt'));
  const packetPath = fromMqtt.resolve('mqtt-packet');
  if (require.cache[packetPath]) return;
  const fromPacket = createRequire(packetPath);
  type CreateDebug = ((namespace: string) => unknown) & { enabled(namespace: string): boolean };
  const createDebug = fromPacket('debug') as CreateDebug;
  const cached = require.cache[fromPacket.resolve('debug')];
  if (!cached) return;
  const noop = () => {};
  cached.exports = (namespace: string) => (createDebug.enabled(namespace) ? createDebug(namespace) : noop);
  try {
    fromMqtt('mqtt-packet');
  } finally {
    cached.exports = createDebug;
  }
}

try {
  loadQuietly();
} catch {
  // a layout of node_modules this does not expect: MQTT.js loads mqtt-packet as it is
}
