import type { OutboxRow } from '../outbox/outbox.js';

/** Where records go after the outbox: an MQTT broker, Kafka, a file. */
export interface Upstream {
  readonly name: string;
  /**
   * How many sends may await acknowledgement at once with the order still kept: more than
   * one only where a later send cannot succeed after an earlier one failed.
   */
  readonly window: number;
  /** False while the upstream cannot take records (broker unreachable); the forwarder waits. */
  readonly connected: boolean;
  /** Called each time the upstream becomes able to take records again. */
  onConnect(listener: () => void): void;
  /** Resolves once the upstream acknowledged every row; rejects if it did not. */
  send(rows: OutboxRow[]): Promise<void>;
  close(): Promise<void>;
}

/** Fills `{agent} {stream} {device}` in a topic or key template. */
export function fillTemplate(template: string, agent: string, stream: string, device: string): string {
  return template.replace(/\{(agent|stream|device)\}/g, (_m, field: string) => (field === 'agent' ? agent : field === 'stream' ? stream : device));
}
