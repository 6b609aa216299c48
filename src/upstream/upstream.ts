import { Backoff, upperHalf } from '../core/backoff.js';
import type { DeviceBase, WriteOutcome } from '../connectors/connector.js';
import type { ConfigIssue } from '../core/config-error.js';
import type { IssueAt } from '../core/config-kit.js';
import type { Reading, Value } from '../core/reading.js';
import type { DeviceState } from '../core/latest.js';
import type { OutboxRow } from '../outbox/outbox.js';

/**
 * What an upstream may ask of the agent beside its records: a Sparkplug edge node keeps its
 * bdSeq in the data folder, describes the devices it reports, and writes the commands it gets.
 */
export interface UpstreamContext {
  /** agent.data_dir */
  dataDir: string;
  /** The highest record seq the outbox handed out so far: records up to it are older than now. */
  lastSeq(): number;
  /** A device's config as it runs now (undefined when there is no such device). */
  device(id: string): DeviceBase | undefined;
  /** Writes through the device's connector as it runs now (as an action does). */
  write(device: string, point: string, value: Value): Promise<WriteOutcome | void>;
  /** An event record for this upstream, through the outbox (stream `commands`). */
  report(event: Reading): void;
  /** A device's state as /api/devices shows it (online, each point's sample and last good value). */
  deviceState?(id: string): DeviceState | undefined;
}

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

/** The placeholders a topic or key template may hold. */
export const TEMPLATE_FIELDS = ['agent', 'stream', 'device'] as const;

/**
 * The issue of a template with a placeholder `fillTemplate` does not fill (`{point}`,
 * `{devcie}`): it would be published literally, to a topic nobody reads.
 */
export function checkTemplate(template: string, at: readonly (string | number)[], issueAt: IssueAt, fields: readonly string[] = TEMPLATE_FIELDS): ConfigIssue[] {
  const unknown = [...template.matchAll(/\{([^{}]*)\}/g)].map((m) => m[1]).filter((field) => !fields.includes(field));
  if (unknown.length === 0) return [];
  return [issueAt(at, `unknown placeholder ${unknown.map((f) => `{${f}}`).join(', ')} in "${template}" (known: ${fields.map((f) => `{${f}}`).join(' ')})`)];
}

/** Fills `{agent} {stream} {device}` in a topic or key template. */
export function fillTemplate(template: string, agent: string, stream: string, device: string): string {
  return template.replace(/\{(agent|stream|device)\}/g, (_m, field: string) => (field === 'agent' ? agent : field === 'stream' ? stream : device));
}

/**
 * Topics an upstream refused for good lately, with the refusal: their records go to the
 * dead-letter table without a send until the topic's next probe, so that a refused topic costs
 * one attempt per probe, not one per record. Probes come after a capped exponential backoff
 * with jitter (1 s, 2 s, 4 s … 60 s while the refusals go on): a topic an admin recreates, or
 * a permission granted again, is noticed within a minute, not after a fixed five. A record of
 * the topic acknowledged (`forget`) ends the refusal and resets its backoff.
 */
export class RefusedTopics {
  /** Topics remembered at most: beyond, the oldest is forgotten (and simply tried again). */
  private static readonly MAX = 10_000;
  private readonly topics = new Map<string, { until: number; reason: string; backoff: Backoff }>();

  constructor(
    private readonly base = 1000,
    private readonly max = 60_000,
  ) {}

  /** The topic was refused (again): no send before its next probe. Returns the wait, in ms. */
  remember(topic: string, reason: string): number {
    let refused = this.topics.get(topic);
    if (!refused) {
      if (this.topics.size >= RefusedTopics.MAX) this.topics.delete(this.topics.keys().next().value!);
      // jitter in the upper half: full jitter could probe again at once, and every batch would be a probe
      refused = { until: 0, reason, backoff: new Backoff(this.base, this.max, upperHalf) };
      this.topics.set(topic, refused);
    }
    // refusals of records sent together (one probe) are one step of the backoff
    if (refused.until > performance.now()) return refused.until - performance.now();
    const wait = refused.backoff.next();
    refused.until = performance.now() + wait;
    refused.reason = reason;
    return wait;
  }

  /** Why the topic is refused, for a record not sent; undefined when it may be tried (a probe, when it was refused before). */
  recall(topic: string): string | undefined {
    if (this.topics.size === 0) return undefined;
    const refused = this.topics.get(topic);
    if (!refused || refused.until <= performance.now()) return undefined;
    return `${refused.reason} (not sent: the topic is probed again in ${Math.ceil((refused.until - performance.now()) / 1000)} s)`;
  }

  /** True when the topic was refused before: its next try is a probe. */
  has(topic: string): boolean {
    return this.topics.size > 0 && this.topics.has(topic);
  }

  /** Topics refused now. */
  get size(): number {
    return this.topics.size;
  }

  /** The topic took a record: its refusal is over. True when there was one. */
  forget(topic: string): boolean {
    return this.topics.size > 0 && this.topics.delete(topic);
  }
}
