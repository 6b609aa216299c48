/** The `outbox:` section: its schema, its loaded type and its defaults in one place. */
import { duration, oneOf, section, size, Type, withDefault, type Static } from '../core/config-kit.js';

export const outboxSchema = section({
  max_size: size('1GB'),
  max_age: duration('7d'),
  when_full: withDefault(oneOf(['drop-oldest', 'reject-new']), 'drop-oldest'),
  durability: withDefault(oneOf(['normal', 'full']), 'normal'),
  /** A group is committed when it holds this many records... */
  group_records: withDefault(Type.Integer({ minimum: 1 }), 1000),
  /** ...or this long after its first record, whichever comes first. */
  group_wait: duration('10ms'),
});

export type OutboxConfig = Static<typeof outboxSchema>;
