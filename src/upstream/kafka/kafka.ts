import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { compatibilityPartitioner, Producer, protocolErrorsCodesById, type MessageToProduce } from '@platformatic/kafka';
import type { Logger } from 'pino';
import type { KafkaUpstreamConfig } from './config.js';
import { Backoff } from '../../core/backoff.js';
import type { OutboxRow } from '../../outbox/outbox.js';
import { tlsOptions } from '../../core/tls.js';
import { fillTemplate, RefusedTopics, type SendResult, type Upstream } from '../upstream.js';

/** Keys, values and headers go as bytes: the client's serializers would copy them for every record. */
type Message = MessageToProduce<Buffer, Buffer, Buffer, Buffer>;

/** Kafka errors a broker will give again however often the records are sent. */
const FOR_GOOD = new Set(['MESSAGE_TOO_LARGE', 'RECORD_LIST_TOO_LARGE', 'TOPIC_AUTHORIZATION_FAILED', 'INVALID_TOPIC_EXCEPTION', 'INVALID_RECORD', 'UNSUPPORTED_COMPRESSION_TYPE', 'UNKNOWN_TOPIC_OR_PARTITION']);
const TOO_LARGE = new Set(['MESSAGE_TOO_LARGE', 'RECORD_LIST_TOO_LARGE']);

interface KafkaError extends Error {
  apiId?: string;
  errors?: KafkaError[];
  response?: { responses?: { name: string; partitionResponses: { index: number; errorCode: number }[] }[] };
  produced?: { offsets?: { topic: string; partition: number }[] };
}

/** Where a stream's records from one device go. */
interface Route {
  topic: string;
  key: Buffer;
  headers: Map<Buffer, Buffer>;
  partition: number;
  /** The partition count `partition` was worked out for (a topic may gain partitions). */
  partitionsOf: number;
}

/** Devices per stream whose routes are kept (beyond, the stream's are worked out afresh). */
const MAX_ROUTES = 10_000;

/** Where each row goes, and what Kafka said of that topic-partition. */
interface Outcome {
  acknowledged: Set<string>;
  refused: Map<string, string>;
}

/**
 * Produces records to Kafka with @platformatic/kafka (pure JavaScript: nothing to build or
 * download at install). One record per outbox row: key from the `key` template (default
 * `{device}`, so a device's records stay in one partition and in order), the record JSON as
 * the value, `agent`, `stream` and `device` as headers. Partitions are chosen as the Java
 * client does (murmur2 of the key), so keys land where other producers put them.
 *
 * One send is in flight at a time: the client re-initialises an idempotent producer after
 * an error, so a second send in flight could overtake a failed first one and break the order
 * per key. Idempotence still makes the client's own retries of a send exactly-once.
 */
export class KafkaUpstream implements Upstream {
  readonly name: string;
  readonly window = 1;
  readonly batch: number;
  readonly linger: number;
  readonly connected = true;
  private readonly producer: Producer<Buffer, Buffer, Buffer, Buffer>;
  private readonly routes = new Map<string, Map<string, Route>>();
  /** Topics Kafka refused for good lately: their records are dead-lettered without a send until the topic's next probe. */
  private readonly refusedTopics = new RefusedTopics();
  /** No produce before this time (Date.now()): the broker's throttle_time_ms asked us to wait. */
  private throttledUntil = 0;
  private throttled = false;
  private closed = false;
  /** Ends a throttle wait at once (on close). */
  private wakeUp: (() => void) | undefined;
  private readonly onResponse = (message: unknown) => this.noteThrottle(message as ApiResponse);
  /** Between the client's own retries of a request (connect, metadata, produce). */
  private readonly retryBackoff = new Backoff(250, 5000);
  /** A request failed and no send has succeeded since: logged once, at the first failure. */
  private failing = false;

  constructor(
    private readonly config: KafkaUpstreamConfig,
    private readonly agentId: string,
    private readonly log: Logger,
  ) {
    this.name = config.name;
    this.batch = config.batch.max_records;
    this.linger = config.batch.max_wait;
    const tls = config.tls ? tlsOptions(config.tls) : undefined;
    this.producer = new Producer({
      clientId: config.client_id ?? `edge-agent-${agentId}-${config.name}`,
      bootstrapBrokers: config.brokers,
      acks: config.acks === 'all' ? -1 : config.acks,
      idempotent: config.idempotent,
      compression: config.compression,
      autocreateTopics: true,
      connectTimeout: 5000,
      // the time the broker may take for a produce (its timeout_ms)...
      timeout: config.timeout,
      // ...and the time we wait for any answer: the client's default is 30 s, whatever `timeout` says
      requestTimeout: config.timeout,
      retries: 3,
      retryDelay: (_client, operation, attempt, _retries, error) => this.retryDelay(operation, attempt, error as KafkaError),
      tls,
      sasl: config.sasl && {
        mechanism: config.sasl.mechanism.toUpperCase() as 'PLAIN' | 'SCRAM-SHA-256' | 'SCRAM-SHA-512',
        username: config.sasl.username,
        password: config.sasl.password,
      },
    });
    // The client reads throttle_time_ms from every answer and drops it: we take it from its
    // diagnostics channel, which publishes each answer of each connection.
    subscribe(API_RESPONSES, this.onResponse);
  }

  /**
   * The client's wait before it tries a failed request again: capped exponential with jitter.
   * The first failure of an episode is logged here, at once: the send itself fails only after
   * the client's retries (4 timeouts of a broker that accepts connections and never answers).
   */
  private retryDelay(operation: string, attempt: number, error: KafkaError): number {
    if (attempt <= 1) this.retryBackoff.reset();
    if (!this.failing && !this.closed) {
      this.failing = true;
      this.log.warn({ upstream: this.name, operation, err: error.message }, `upstream ${this.name}: ${operation} to Kafka ${this.config.brokers.join(',')} failed (${this.describeFailure(error)}); the client tries again`);
    }
    return this.retryBackoff.next();
  }

  /** Remembers how long the broker asked this producer to wait (KIP-219: the client must hold back). */
  private noteThrottle(message: ApiResponse): void {
    if (message.connection?.ownerId !== this.producer.instanceId) return;
    const throttle = message.result?.throttleTimeMs;
    if (typeof throttle !== 'number') return;
    if (throttle > 0) {
      this.throttledUntil = Math.max(this.throttledUntil, Date.now() + throttle);
      if (!this.throttled) this.log.warn({ upstream: this.name, throttle_ms: throttle }, `upstream ${this.name}: Kafka ${this.config.brokers.join(',')} throttles this client (throttle_time_ms ${throttle}, a quota is exceeded); produce requests wait as asked`);
      this.throttled = true;
    } else if (this.throttled && message.apiKey === PRODUCE) {
      this.throttled = false;
      this.log.info({ upstream: this.name }, `upstream ${this.name}: Kafka no longer throttles this client`);
    }
  }

  /** Waits out the broker's throttle before the next produce. */
  private async throttle(): Promise<void> {
    const wait = this.throttledUntil - Date.now();
    if (wait <= 0 || this.closed) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, wait);
      this.wakeUp = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.wakeUp = undefined;
  }

  onConnect(): void {
    // The client connects on demand; a failed send is retried by the forwarder's backoff.
  }

  async send(rows: OutboxRow[]): Promise<SendResult> {
    const rejected: SendResult['rejected'] = [];
    const messages: Message[] = [];
    const sent: OutboxRow[] = [];
    const routes = rows.map((row) => this.routeOf(row.stream, row.device));
    const partitions = await this.partitionCounts(routes);
    rows.forEach((row, i) => {
      const route = routes[i];
      const count = partitions.get(route.topic)!;
      if (typeof count === 'string') {
        rejected.push({ ids: [row.id], reason: count });
        return;
      }
      if (route.partitionsOf !== count) {
        route.partition = compatibilityPartitioner(undefined as never, route.key) % count;
        route.partitionsOf = count;
      }
      messages.push({ topic: route.topic, key: route.key, value: Buffer.from(row.payload), partition: route.partition, headers: route.headers });
      sent.push(row);
    });
    if (messages.length === 0) return { rejected };
    const retry: number[] = [];
    let retryReason = '';
    await this.produce(messages, sent, rejected, (ids, reason) => {
      retry.push(...ids);
      retryReason ||= reason;
    });
    return retry.length ? { rejected, retry: { ids: retry, reason: retryReason } } : { rejected };
  }

  /**
   * Sends and sorts the rows by what Kafka said of their partition. A batch too large is split
   * in halves until the record Kafka cannot take is alone; only that one is refused.
   */
  private async produce(messages: Message[], rows: OutboxRow[], rejected: SendResult['rejected'], retry: (ids: number[], reason: string) => void): Promise<void> {
    let outcome: Outcome;
    try {
      await this.throttle();
      await this.producer.send({ messages });
      this.failing = false;
      this.acknowledged(messages);
      return;
    } catch (err) {
      outcome = outcomeOf(err as KafkaError);
      if (outcome.acknowledged.size > 0) this.failing = false;
      const failed = this.failure(err as KafkaError);
      if (outcome.acknowledged.size === 0 && outcome.refused.size === 0) throw failed;
      const unacknowledged = rows.filter((_, i) => !outcome.acknowledged.has(where(messages[i])));
      const refusals = [...new Set(outcome.refused.values())];
      const retriable = refusals.filter((r) => !FOR_GOOD.has(r));
      if (unacknowledged.length === rows.length && retriable.length === refusals.length) throw failed;
    }
    const tooLarge: [Message[], OutboxRow[]] = [[], []];
    const refusedTopics = new Map<string, string>();
    rows.forEach((row, i) => {
      const at = where(messages[i]);
      if (outcome.acknowledged.has(at)) {
        this.acknowledged([messages[i]]);
        return;
      }
      const refusal = outcome.refused.get(at);
      if (refusal && TOO_LARGE.has(refusal) && messages.length > 1) {
        tooLarge[0].push(messages[i]);
        tooLarge[1].push(row);
      } else if (refusal && FOR_GOOD.has(refusal)) {
        const reason = `Kafka refused the record: ${refusal} on ${at}`;
        if (!TOO_LARGE.has(refusal)) refusedTopics.set(messages[i].topic, reason);
        rejected.push({ ids: [row.id], reason });
      } else retry([row.id], refusal ?? 'no answer for its partition');
    });
    // once per topic and send: each refusal is one step of the topic's probe backoff
    for (const [topic, reason] of refusedTopics) this.refuse(topic, reason);
    const [large, largeRows] = tooLarge;
    if (large.length > 0) {
      const half = Math.ceil(large.length / 2);
      for (const [part, partRows] of [
        [large.slice(0, half), largeRows.slice(0, half)],
        [large.slice(half), largeRows.slice(half)],
      ] as const) {
        if (part.length) await this.produce(part, partRows, rejected, retry).catch((err: Error) => retry(partRows.map((r) => r.id), err.message));
      }
    }
  }

  /**
   * Topic, key, headers and partition of a stream's records from a device, worked out once:
   * the templates and the key's hash are not redone for every record.
   */
  private routeOf(stream: string, device: string): Route {
    let byDevice = this.routes.get(stream);
    if (!byDevice) this.routes.set(stream, (byDevice = new Map()));
    let route = byDevice.get(device);
    if (!route) {
      if (byDevice.size >= MAX_ROUTES) byDevice.clear();
      route = {
        topic: fillTemplate(this.config.topic, this.agentId, stream, device),
        key: Buffer.from(fillTemplate(this.config.key, this.agentId, stream, device)),
        // a Map, which the client takes as it is (an object it copies into a new Map per record)
        headers: new Map([
          [Buffer.from('agent'), Buffer.from(this.agentId)],
          [Buffer.from('stream'), Buffer.from(stream)],
          [Buffer.from('device'), Buffer.from(device)],
        ]),
        partition: 0,
        partitionsOf: 0,
      };
      byDevice.set(device, route);
    }
    return route;
  }

  /** Partitions of each topic of the rows, or why Kafka will not take records for it. */
  private async partitionCounts(routes: Route[]): Promise<Map<string, number | string>> {
    const counts = new Map<string, number | string>();
    for (const route of routes) counts.set(route.topic, 0);
    for (const topic of counts.keys()) {
      const refused = this.refusedTopics.recall(topic);
      if (refused) {
        counts.set(topic, refused);
        continue;
      }
      try {
        // a probe of a refused topic asks the broker afresh: the client's cached answer may say it is still missing
        const metadata = await this.producer.metadata({ topics: [topic], autocreateTopics: true, forceUpdate: this.refusedTopics.has(topic) });
        counts.set(topic, metadata.topics.get(topic)!.partitionsCount);
      } catch (err) {
        const refusal = refusalOf(err as KafkaError);
        if (!refusal) throw this.failure(err as KafkaError);
        const reason = `Kafka refused topic ${topic}: ${refusal}`;
        this.refuse(topic, reason);
        counts.set(topic, reason);
      }
    }
    return counts;
  }

  /** Dead-letters the topic's records until its next probe; logged when the refusal starts, not at each probe. */
  private refuse(topic: string, reason: string): void {
    const first = !this.refusedTopics.has(topic);
    const wait = this.refusedTopics.remember(topic, reason);
    if (first) this.log.warn({ upstream: this.name, topic }, `upstream ${this.name}: ${reason}; its records go to the dead-letter table, and the topic is probed again after a backoff (first in ${Math.round(wait / 1000)} s, then up to every 60 s)`);
  }

  /** Kafka took records of these topics: a refusal of theirs is over. */
  private acknowledged(messages: Message[]): void {
    if (this.refusedTopics.size === 0) return;
    let last = '';
    for (const { topic } of messages) {
      if (topic === last) continue;
      last = topic;
      if (this.refusedTopics.forget(topic)) this.log.info({ upstream: this.name, topic }, `upstream ${this.name}: Kafka takes records for topic ${topic} again`);
    }
  }

  /** An error that says which cluster and what went wrong inside the client's nested errors. */
  private failure(err: KafkaError): Error {
    return new Error(`Kafka ${this.config.brokers.join(',')}: ${this.describeFailure(err)}`, { cause: err });
  }

  private describeFailure(err: KafkaError): string {
    const timedOut = flatten(err).some((e) => e.message === 'Request timed out');
    return timedOut ? `no answer within ${this.config.timeout} ms (the request timed out)` : describe(err);
  }

  /** Disconnects; gives up after a second on a broker that does not answer. */
  async close(): Promise<void> {
    this.closed = true;
    this.wakeUp?.();
    unsubscribe(API_RESPONSES, this.onResponse);
    const closed = this.producer.close(true).then(
      () => true,
      () => false,
    );
    await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 1000).unref())]);
  }
}

/** Each answer the client's connections receive, as their diagnostics channel publishes it. */
const API_RESPONSES = 'tracing:plt:kafka:connections:api:asyncStart';
const PRODUCE = 0;

interface ApiResponse {
  connection?: { ownerId?: number };
  apiKey?: number;
  result?: { throttleTimeMs?: number };
}

function where(message: Message): string {
  return `${message.topic}/${message.partition}`;
}

/** A metadata error that will not go away: the topic does not exist (and is not created) or is not ours. */
function refusalOf(err: KafkaError): string | undefined {
  if (/^Unknown topic /.test(err.message)) return 'UNKNOWN_TOPIC_OR_PARTITION (the topic does not exist and the broker does not create it)';
  const forGood = flatten(err).find((e) => e.apiId && FOR_GOOD.has(e.apiId));
  return forGood?.apiId;
}

/** The partitions Kafka acknowledged and the ones it refused, from every answer inside an error. */
function outcomeOf(err: KafkaError): Outcome {
  const acknowledged = new Set<string>();
  const refused = new Map<string, string>();
  for (const { topic, partition } of err.produced?.offsets ?? []) acknowledged.add(`${topic}/${partition}`);
  for (const e of flatten(err)) {
    for (const { name, partitionResponses } of e.response?.responses ?? []) {
      for (const { index, errorCode } of partitionResponses) {
        if (errorCode === 0) acknowledged.add(`${name}/${index}`);
        else refused.set(`${name}/${index}`, protocolErrorsCodesById[errorCode] ?? `error ${errorCode}`);
      }
    }
  }
  return { acknowledged, refused };
}

/** What went wrong, from the innermost errors: `NOT_ENOUGH_REPLICAS; connect ECONNREFUSED 127.0.0.1:9092`. */
function describe(err: KafkaError): string {
  const leaves = flatten(err).filter((e) => !e.errors?.length && !(e as { cause?: unknown }).cause);
  const text = (e: KafkaError & { serverErrorMessage?: string | null }) => (e.apiId ? `${e.apiId}${e.serverErrorMessage ? ` (${e.serverErrorMessage})` : ''}` : e.message);
  return [...new Set(leaves.map(text))].join('; ') || err.message;
}

function flatten(err: KafkaError): KafkaError[] {
  return [err, ...(err.errors ?? []).flatMap(flatten), ...((err as { cause?: KafkaError }).cause ? flatten((err as { cause: KafkaError }).cause) : [])];
}
