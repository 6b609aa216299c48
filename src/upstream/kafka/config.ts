/** The keys of a Kafka upstream: its schema, its loaded type, its defaults and its cross checks in one place. */
import { duration, name, object, oneOf, section, text, tls, Type, withDefault, type IssueAt, type Static } from '../../core/config-kit.js';
import { checkTemplate } from '../upstream.js';

export const kafkaUpstreamSchema = object({
  name,
  type: Type.Literal('kafka'),
  brokers: Type.Array(text, { minItems: 1 }),
  topic: text,
  key: withDefault(text, '{device}'),
  acks: withDefault(oneOf(['all', 1, 0, -1]), 'all'),
  /** true when acks is all (or -1), else false: set by prepareKafkaUpstream */
  idempotent: Type.Optional(Type.Boolean()),
  compression: withDefault(oneOf(['none', 'gzip', 'snappy', 'lz4', 'zstd']), 'none'),
  batch: section({ max_records: withDefault(Type.Integer({ minimum: 1, maximum: 100000 }), 1000), max_wait: duration('10ms') }),
  /** how long a request may go unanswered before it is an error (the client retries it, then the send fails) */
  timeout: duration('10s'),
  client_id: Type.Optional(text),
  tls: Type.Optional(tls),
  sasl: Type.Optional(
    object({ mechanism: oneOf(['plain', 'scram-sha-256', 'scram-sha-512']), username: text, password: Type.String() }),
  ),
});

export type KafkaUpstreamConfig = Static<typeof kafkaUpstreamSchema> & { idempotent: boolean };

/** acks 1 or 0 alone turns idempotence off, as the Java client does. */
export function prepareKafkaUpstream(config: Static<typeof kafkaUpstreamSchema>): void {
  config.idempotent ??= config.acks === 'all' || config.acks === -1;
}

export function checkKafkaUpstream(config: KafkaUpstreamConfig, at: readonly (string | number)[], issueAt: IssueAt) {
  const issues = [...checkTemplate(config.topic, [...at, 'topic'], issueAt), ...checkTemplate(config.key, [...at, 'key'], issueAt)];
  if (config.idempotent && config.acks !== 'all' && config.acks !== -1) {
    issues.push(issueAt([...at, 'idempotent'], `upstream ${config.name}: an idempotent producer needs acks: all (set idempotent: false to use acks: ${config.acks})`));
  }
  return issues;
}
