import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';

export interface UpstreamRecord {
  agent: string;
  stream: string;
  device: string;
  ts: number;
  seq: number;
  values?: Record<string, unknown>;
  quality?: Record<string, string>;
  event?: Record<string, unknown>;
}

/**
 * Collects the records an agent publishes, as a consumer upstream would: a persistent
 * session at QoS 1, so nothing is lost on its side while the broker restarts.
 */
export class Subscriber {
  readonly records: UpstreamRecord[] = [];
  readonly topics: string[] = [];
  messages = 0;

  private constructor(private readonly client: MqttClient) {
    client.on('message', (topic, payload) => {
      this.messages++;
      const parsed = JSON.parse(payload.toString()) as UpstreamRecord | UpstreamRecord[];
      for (const record of Array.isArray(parsed) ? parsed : [parsed]) {
        this.records.push(record);
        this.topics.push(topic);
      }
    });
  }

  static async connect(url: string, filter = '#', options: IClientOptions = {}): Promise<Subscriber> {
    const client = mqtt.connect(url, { clientId: `test-sub-${Math.random().toString(16).slice(2)}`, clean: false, reconnectPeriod: 100, ...options });
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    // listening before the SUBACK: a message in the same network read as it comes before the promise settles
    const subscriber = new Subscriber(client);
    await client.subscribeAsync(filter, { qos: 1 });
    return subscriber;
  }

  /** Distinct seqs seen, and how many copies beyond the first arrived. */
  get seqs(): { distinct: Set<number>; duplicates: number } {
    const distinct = new Set(this.records.map((r) => r.seq));
    return { distinct, duplicates: this.records.length - distinct.size };
  }

  /** The seqs in the order of their first arrival. */
  firstArrivals(): number[] {
    const seen = new Set<number>();
    const order: number[] = [];
    for (const { seq } of this.records) {
      if (!seen.has(seq)) {
        seen.add(seq);
        order.push(seq);
      }
    }
    return order;
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }
}
