import { createRequire } from 'node:module';
import mqtt, { type MqttClient } from 'mqtt';

/**
 * Eclipse Tahu's JavaScript payload codec (sparkplug-payload): an implementation independent of
 * ours, so that every message the tests check is read as a Sparkplug host would read it.
 */
const tahu = createRequire(import.meta.url)('sparkplug-payload').get('spBv1.0') as {
  decodePayload(bytes: Uint8Array): { timestamp?: unknown; seq?: unknown; metrics?: TahuMetric[] };
  encodePayload(payload: object): Uint8Array;
};

interface TahuMetric {
  name?: string;
  alias?: unknown;
  timestamp?: unknown;
  type: string;
  value: unknown;
  isHistorical?: boolean;
  properties?: Record<string, { type: string; value: unknown }>;
}

/** A metric as Tahu decoded it, with its 64-bit numbers (Long) as JavaScript numbers. */
export interface SpMetric {
  name?: string;
  alias?: number;
  timestamp?: number;
  type: string;
  value: unknown;
  isHistorical?: boolean;
  quality?: number;
  /** The agent's own quality word, beside Sparkplug's code */
  edgeQuality?: string;
}

export interface SpMessage {
  topic: string;
  kind: string;
  node: string;
  device?: string;
  timestamp?: number;
  seq?: number;
  metrics: SpMetric[];
  /** As the broker delivered it to a QoS 1 subscription: the publisher's QoS, and the retain flag of a live message. */
  qos?: number;
  retain?: boolean;
}

/** A Long from protobufjs, or a number, as a number. */
function num(value: unknown): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'object' && 'toNumber' in value) return (value as { toNumber(): number }).toNumber();
  return Number(value);
}

export function decodeTahu(topic: string, payload: Buffer): SpMessage {
  const [, , kind, node, device] = topic.split('/');
  const decoded = tahu.decodePayload(payload);
  return {
    topic,
    kind,
    node,
    device,
    timestamp: num(decoded.timestamp),
    seq: num(decoded.seq),
    metrics: (decoded.metrics ?? []).map((m) => ({
      name: m.name,
      alias: num(m.alias),
      timestamp: num(m.timestamp),
      type: m.type,
      value: typeof m.value === 'object' && m.value !== null && 'toNumber' in m.value ? num(m.value) : m.value,
      isHistorical: m.isHistorical,
      quality: num(m.properties?.Quality?.value),
      edgeQuality: m.properties?.edge_quality?.value as string | undefined,
    })),
  };
}

export function encodeTahu(payload: object): Buffer {
  return Buffer.from(tahu.encodePayload(payload));
}

/**
 * What a Sparkplug host application sees: every message under spBv1.0/ decoded with Tahu, in
 * arrival order. It can publish its own STATE (Sparkplug 3.0: JSON, retained) and commands.
 */
export class SparkplugHost {
  readonly messages: SpMessage[] = [];

  private constructor(readonly client: MqttClient) {
    client.on('message', (topic, payload, packet) => {
      if (topic.startsWith('spBv1.0/STATE/')) return;
      this.messages.push({ ...decodeTahu(topic, payload), qos: packet.qos, retain: packet.retain });
    });
  }

  static async connect(url: string, group: string): Promise<SparkplugHost> {
    const client = mqtt.connect(url, { clientId: `test-host-${Math.random().toString(16).slice(2)}`, clean: true, reconnectPeriod: 100 });
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    const host = new SparkplugHost(client);
    await client.subscribeAsync(`spBv1.0/${group}/#`, { qos: 1 });
    // subscribed again after a broker restart (a clean session forgets it)
    client.on('connect', () => void client.subscribeAsync(`spBv1.0/${group}/#`, { qos: 1 }).catch(() => undefined));
    return host;
  }

  of(kind: string, device?: string): SpMessage[] {
    return this.messages.filter((m) => m.kind === kind && (device === undefined || m.device === device));
  }

  async state(hostId: string, online: boolean, timestamp = Date.now()): Promise<void> {
    await this.client.publishAsync(`spBv1.0/STATE/${hostId}`, JSON.stringify({ online, timestamp }), { qos: 1, retain: true });
  }

  async command(topic: string, metrics: object[]): Promise<void> {
    await this.client.publishAsync(topic, encodeTahu({ timestamp: Date.now(), metrics }), { qos: 0 });
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }
}
