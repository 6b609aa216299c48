import type { OutboxRow } from '../outbox/outbox.js';

/** Where records go after the outbox: an MQTT broker, Kafka, a file. */
export interface Upstream {
  readonly name: string;
  /**
   * How many sends may await acknowledgement at once with the order still kept: more than
   * one only where a later send cannot succeed after an earlier one failed.
   */
  readonly window: number;
  /** Records per send (default 1000), and how long a short batch may wait to fill (default 0). */
  readonly batch?: number;
  readonly linger?: number;
  /** False while the upstream cannot take records (broker unreachable); the forwarder waits. */
  readonly connected: boolean;
  /** Called each time the upstream becomes able to take records again. */
  onConnect(listener: () => void): void;
  /**
   * Resolves once the upstream answered for every row: acknowledged, refused for good (listed
   * in `rejected`; they go to the dead-letter table), or not acknowledged (listed in `retry`).
   * Rejects when all the rows should be sent again (connection lost, timeout, a refusal the
   * upstream calls temporary).
   */
  send(rows: OutboxRow[]): Promise<SendResult | void>;
  close(): Promise<void>;
}

export interface SendResult {
  /** Rows the upstream will never accept, with its reason. */
  rejected: { ids: number[]; reason: string }[];
  /**
   * Rows the upstream did not acknowledge (a partial failure): they stay in the outbox and are
   * sent again, after a backoff, with everything behind them; the other rows count as delivered.
   */
  retry?: { ids: number[]; reason: string };
}

/** Fills `{agent} {stream} {device}` in a topic or key template. */
export function fillTemplate(template: string, agent: string, stream: string, device: string): string {
  return template.replace(/\{(agent|stream|device)\}/g, (_m, field: string) => (field === 'agent' ? agent : field === 'stream' ? stream : device));
}

/**
 * Topics an upstream refused for good lately, with the refusal: their records go to the
 * dead-letter table without being sent again for five minutes, so that a refused topic costs
 * one attempt, not one per record.
 */
export class RefusedTopics {
  private static readonly MEMORY = 5 * 60_000;
  private readonly topics = new Map<string, { until: number; reason: string }>();

  remember(topic: string, reason: string): void {
    this.topics.set(topic, { until: Date.now() + RefusedTopics.MEMORY, reason });
  }

  /** Why the topic is refused, for a record not sent again; undefined when it may be tried. */
  recall(topic: string): string | undefined {
    const refused = this.topics.get(topic);
    if (!refused || refused.until <= Date.now()) return undefined;
    return `${refused.reason} (refused within the last ${RefusedTopics.MEMORY / 60_000} min; not sent again)`;
  }
}
