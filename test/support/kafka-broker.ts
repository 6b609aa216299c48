// A Kafka broker for tests: one node, records in memory, speaking the real wire protocol for
// what a producer and a simple consumer need (ApiVersions, Metadata, InitProducerId, Produce
// with record batches v2 and their CRC-32C checked, ListOffsets, Fetch, SASL PLAIN and
// SCRAM-SHA-256/512), optionally over TLS. Its fidelity is checked by kcat (librdkafka), an
// independent client. Self-contained and written in erasable TypeScript, so the benchmark can
// load it with Node's own type stripping.
import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer as createTcpServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, type TlsOptions } from 'node:tls';
import { gunzipSync, zstdDecompressSync } from 'node:zlib';

export const ErrorCode = {
  NONE: 0,
  OFFSET_OUT_OF_RANGE: 1,
  CORRUPT_MESSAGE: 2,
  UNKNOWN_TOPIC_OR_PARTITION: 3,
  NOT_LEADER_OR_FOLLOWER: 6,
  REQUEST_TIMED_OUT: 7,
  MESSAGE_TOO_LARGE: 10,
  NOT_ENOUGH_REPLICAS: 19,
  NOT_ENOUGH_REPLICAS_AFTER_APPEND: 20,
  TOPIC_AUTHORIZATION_FAILED: 29,
  UNSUPPORTED_SASL_MECHANISM: 33,
  ILLEGAL_SASL_STATE: 34,
  UNSUPPORTED_VERSION: 35,
  OUT_OF_ORDER_SEQUENCE_NUMBER: 45,
  SASL_AUTHENTICATION_FAILED: 58,
  UNSUPPORTED_COMPRESSION_TYPE: 76,
} as const;

const Api = { Produce: 0, Fetch: 1, ListOffsets: 2, Metadata: 3, SaslHandshake: 17, ApiVersions: 18, InitProducerId: 22, SaslAuthenticate: 36 } as const;

/** Versions offered: all but ApiVersions v3 are non-flexible (no compact encodings). */
const SUPPORTED: [number, number, number][] = [
  [Api.Produce, 3, 7],
  [Api.Fetch, 4, 4],
  [Api.ListOffsets, 1, 2],
  [Api.Metadata, 1, 6],
  [Api.SaslHandshake, 0, 1],
  [Api.ApiVersions, 0, 3],
  [Api.InitProducerId, 0, 1],
  [Api.SaslAuthenticate, 0, 1],
];

export interface StoredRecord {
  topic: string;
  partition: number;
  offset: number;
  timestamp: number;
  key: string | null;
  value: string | null;
  headers: Record<string, string>;
  producerId: number;
}

export interface BrokerOptions {
  partitions?: number;
  /** Create a topic on first Metadata or Produce (Kafka's auto.create.topics.enable). */
  autoCreate?: boolean;
  /** Largest record batch accepted (Kafka's message.max.bytes). */
  maxMessageBytes?: number;
  /** Topics this client may not write to. */
  deniedTopics?: string[];
  tls?: TlsOptions;
  /** Users allowed in; SASL is required when set. */
  sasl?: { mechanism: 'PLAIN' | 'SCRAM-SHA-256' | 'SCRAM-SHA-512'; users: Record<string, string> };
  port?: number;
}

interface Partition {
  batches: { baseOffset: number; lastOffset: number; bytes: Buffer }[];
  logEnd: number;
}

interface Injected {
  api: number;
  code: number;
  remaining: number;
  topic?: string;
  partition?: number;
}

export class KafkaTestBroker {
  port = 0;
  readonly topics = new Map<string, Partition[]>();
  /** SCRAM logins that sent the client nonce twice (librdkafka < 2.6.1), and RFC 5802 ones. */
  readonly scramLogins = { rfc: 0, legacyNonce: 0 };
  /** The client ids requests carried. */
  readonly clientIds = new Set<string>();
  /** Requests served, by API key. */
  readonly requests = new Map<number, number>();
  /** When each Produce request arrived (Date.now()), in order. */
  readonly produceTimes: number[] = [];
  /** throttle_time_ms put in every Produce answer (a client over its quota is asked to wait this long). */
  throttleMs = 0;
  /** Answers to requests of `api` (all when unset) are held this long, as by a broker that is overloaded. */
  private delay: { ms: number; api?: number } = { ms: 0 };
  private readonly options: BrokerOptions;
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly injected: Injected[] = [];
  private readonly producers = new Map<string, { nextSequence: number; recent: { sequence: number; offset: number }[] }>();
  private nextProducerId = 1000;
  private readonly waiters = new Set<() => void>();

  constructor(options: BrokerOptions = {}) {
    this.options = { partitions: 3, autoCreate: true, maxMessageBytes: 1_048_588, ...options };
  }

  static async start(options: BrokerOptions = {}): Promise<KafkaTestBroker> {
    const broker = new KafkaTestBroker(options);
    await broker.listen(options.port ?? 0);
    return broker;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  async listen(port = this.port): Promise<void> {
    const onConnection = (socket: Socket) => this.serve(socket);
    const server = this.options.tls ? createTlsServer(this.options.tls, onConnection) : createTcpServer(onConnection);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    this.server = server;
    this.port = (server.address() as { port: number }).port;
  }

  /** Closes the listener and every connection; the records stay for a restart on the same port. */
  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Answers the next `count` requests of `api` (for `topic` and `partition`, if given) with `code`. */
  failNext(api: keyof typeof Api, code: number, count = 1, topic?: string, partition?: number): void {
    this.injected.push({ api: Api[api], code, remaining: count, topic, partition });
  }

  /** Holds every answer (or those of one API) `ms` before sending it; 0 answers at once again. */
  delayAnswers(ms: number, api?: keyof typeof Api): void {
    this.delay = { ms, api: api === undefined ? undefined : Api[api] };
  }

  /** Deletes a topic and its records, as an admin would (kafka-topics --delete). */
  deleteTopic(name: string): void {
    this.topics.delete(name);
  }

  createTopic(name: string, partitions = this.options.partitions!): Partition[] {
    let topic = this.topics.get(name);
    if (!topic) {
      topic = Array.from({ length: partitions }, () => ({ batches: [], logEnd: 0 }));
      this.topics.set(name, topic);
    }
    return topic;
  }

  /**
   * Every record of a topic, partition by partition, in offset order, decoded from the stored
   * batches (none, gzip or zstd: the others are stored and served as they came).
   */
  records(topic: string): StoredRecord[] {
    return (this.topics.get(topic) ?? []).flatMap((p, index) => p.batches.flatMap((b) => decodeBatch(b.bytes, topic, index)));
  }

  /** How many records a topic holds. */
  count(topic: string): number {
    return (this.topics.get(topic) ?? []).reduce((sum, p) => sum + p.logEnd, 0);
  }

  private serve(socket: Socket): void {
    this.sockets.add(socket);
    socket.setNoDelay(true);
    const session: Session = { authenticated: !this.options.sasl, mechanism: "", scram: undefined };
    let buffered: Buffer = Buffer.alloc(0);
    // chunks of a frame still incomplete: joined once it is whole, not on every chunk
    const pending: Buffer[] = [];
    let pendingBytes = 0;
    let queue = Promise.resolve();
    socket.on('data', (chunk: Buffer) => {
      if (buffered.length >= 4 && buffered.length + pendingBytes + chunk.length < 4 + buffered.readInt32BE(0)) {
        pending.push(chunk);
        pendingBytes += chunk.length;
        return;
      }
      buffered = buffered.length || pending.length ? Buffer.concat([buffered, ...pending, chunk]) : chunk;
      pending.length = 0;
      pendingBytes = 0;
      while (buffered.length >= 4) {
        const size = buffered.readInt32BE(0);
        if (buffered.length < 4 + size) break;
        const frame = buffered.subarray(4, 4 + size);
        buffered = buffered.subarray(4 + size);
        // Kafka answers in the order requests arrive on a connection.
        queue = queue.then(() => this.handle(frame, session, socket)).catch((err: Error) => {
          console.error(`kafka test broker: ${err.stack}`);
          socket.destroy();
        });
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => this.sockets.delete(socket));
  }

  private async handle(frame: Buffer, session: Session, socket: Socket): Promise<void> {
    const r = new Reader(frame);
    const api = r.int16();
    const version = r.int16();
    const correlationId = r.int32();
    const clientId = r.nullableString();
    if (clientId !== null) this.clientIds.add(clientId);
    if (api === Api.ApiVersions && version >= 3) r.taggedFields();
    this.requests.set(api, (this.requests.get(api) ?? 0) + 1);
    if (api === Api.Produce) this.produceTimes.push(Date.now());
    if (this.delay.ms > 0 && (this.delay.api === undefined || this.delay.api === api)) await new Promise((resolve) => setTimeout(resolve, this.delay.ms));
    if (process.env.KAFKA_BROKER_DEBUG) console.error(`kafka test broker: api ${api} v${version}`);
    if (!session.authenticated && api !== Api.ApiVersions && api !== Api.SaslHandshake && api !== Api.SaslAuthenticate) {
      socket.destroy();
      return;
    }
    const w = new Writer();
    w.int32(0).int32(correlationId); // size, filled in below
    const supported = SUPPORTED.find(([key]) => key === api);
    if (!supported || version < supported[1] || version > supported[2]) {
      if (api !== Api.ApiVersions) return void socket.destroy();
      this.apiVersions(w, 0, ErrorCode.UNSUPPORTED_VERSION);
    } else if (api === Api.ApiVersions) this.apiVersions(w, version, ErrorCode.NONE);
    else if (api === Api.Metadata) this.metadata(r, w, version);
    else if (api === Api.InitProducerId) this.initProducerId(r, w);
    else if (api === Api.Produce) {
      if (!this.produce(r, w, version)) return; // acks=0: no answer
    } else if (api === Api.ListOffsets) this.listOffsets(r, w, version);
    else if (api === Api.Fetch) await this.fetch(r, w);
    else if (api === Api.SaslHandshake) this.saslHandshake(r, w, session);
    else if (api === Api.SaslAuthenticate) {
      if (!this.saslAuthenticate(r, w, version, session)) {
        socket.end(w.finish());
        return;
      }
    }
    if (!socket.destroyed) socket.write(w.finish());
  }

  private takeInjected(api: number, topic?: string, partition?: number): number {
    const index = this.injected.findIndex((f) => f.api === api && (f.topic === undefined || f.topic === topic) && (f.partition === undefined || f.partition === partition));
    if (index < 0) return ErrorCode.NONE;
    const failure = this.injected[index];
    if (--failure.remaining <= 0) this.injected.splice(index, 1);
    return failure.code;
  }

  private apiVersions(w: Writer, version: number, error: number): void {
    w.int16(error);
    if (version >= 3) {
      w.uvarint(SUPPORTED.length + 1);
      for (const [key, min, max] of SUPPORTED) w.int16(key).int16(min).int16(max).uvarint(0);
      w.int32(0).uvarint(0);
    } else {
      w.int32(SUPPORTED.length);
      for (const [key, min, max] of SUPPORTED) w.int16(key).int16(min).int16(max);
      if (version >= 1) w.int32(0);
    }
  }

  private metadata(r: Reader, w: Writer, version: number): void {
    const requested = r.array(() => r.string());
    const allowCreate = version >= 4 ? r.bool() : true;
    const names = requested ?? [...this.topics.keys()];
    if (version >= 3) w.int32(0);
    w.int32(1).int32(1).string('127.0.0.1').int32(this.port).nullableString(null);
    if (version >= 2) w.nullableString('edge-agent-test');
    w.int32(1); // controller
    w.int32(names.length);
    for (const name of names) {
      const topic = this.topics.get(name) ?? (this.options.autoCreate && allowCreate ? this.createTopic(name) : undefined);
      w.int16(topic ? ErrorCode.NONE : ErrorCode.UNKNOWN_TOPIC_OR_PARTITION).string(name).bool(false);
      w.int32(topic?.length ?? 0);
      for (let i = 0; i < (topic?.length ?? 0); i++) {
        w.int16(0).int32(i).int32(1);
        w.int32(1).int32(1); // replicas
        w.int32(1).int32(1); // in-sync replicas
        if (version >= 5) w.int32(0); // offline replicas
      }
    }
  }

  private initProducerId(r: Reader, w: Writer): void {
    r.nullableString();
    r.int32();
    w.int32(0).int16(this.takeInjected(Api.InitProducerId)).int64(this.nextProducerId++).int16(0);
  }

  /** False when acks=0 (Kafka sends no answer then). */
  private produce(r: Reader, w: Writer, version: number): boolean {
    r.nullableString(); // transactional id
    const acks = r.int16();
    r.int32(); // timeout
    const topics = r.array(() => ({ name: r.string(), partitions: r.array(() => ({ index: r.int32(), records: r.bytes() }))! }))!;
    w.int32(topics.length);
    for (const { name, partitions } of topics) {
      w.string(name).int32(partitions.length);
      for (const { index, records } of partitions) {
        const [error, baseOffset] = this.append(name, index, records ?? Buffer.alloc(0));
        w.int32(index).int16(error).int64(baseOffset).int64(-1);
        if (version >= 5) w.int64(0);
      }
    }
    w.int32(this.throttleMs);
    if (topics.length) this.notify();
    return acks !== 0;
  }

  /** Validates and appends the batches of one partition: all of them or none. */
  private append(name: string, index: number, records: Buffer): [number, number] {
    const injected = this.takeInjected(Api.Produce, name, index);
    // after append: the records are stored and the answer says they may not be (a lost ack)
    if (injected && injected !== ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND) return [injected, -1];
    if (this.options.deniedTopics?.includes(name)) return [ErrorCode.TOPIC_AUTHORIZATION_FAILED, -1];
    const topic = this.topics.get(name) ?? (this.options.autoCreate ? this.createTopic(name) : undefined);
    const partition = topic?.[index];
    if (!partition) return [ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1];
    const batches: Buffer[] = [];
    for (let at = 0; at + 12 <= records.length; ) {
      const length = records.readInt32BE(at + 8);
      batches.push(records.subarray(at, at + 12 + length));
      at += 12 + length;
    }
    for (const batch of batches) {
      if (batch.length < 61 || batch.readInt8(16) !== 2) return [ErrorCode.CORRUPT_MESSAGE, -1];
      if (crc32c(batch.subarray(21)) !== batch.readUInt32BE(17)) return [ErrorCode.CORRUPT_MESSAGE, -1];
      if (batch.length > this.options.maxMessageBytes!) return [ErrorCode.MESSAGE_TOO_LARGE, -1];
      if (![0, 1, 2, 3, 4].includes(batch.readInt16BE(21) & 7)) return [ErrorCode.UNSUPPORTED_COMPRESSION_TYPE, -1];
    }
    let first = -1;
    for (const original of batches) {
      const producerId = Number(original.readBigInt64BE(43));
      const sequence = original.readInt32BE(53);
      const count = original.readInt32BE(23) + 1;
      if (producerId >= 0) {
        // Idempotence: a batch sent again is answered with its first offset, not stored twice.
        const key = `${producerId}/${name}/${index}`;
        const state = this.producers.get(key) ?? { nextSequence: 0, recent: [] };
        const seen = state.recent.find((b) => b.sequence === sequence);
        if (seen) {
          if (first < 0) first = seen.offset;
          continue;
        }
        if (sequence !== state.nextSequence) return [ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, -1];
        state.nextSequence = sequence + count;
        state.recent.push({ sequence, offset: partition.logEnd });
        if (state.recent.length > 5) state.recent.shift();
        this.producers.set(key, state);
      }
      const bytes = Buffer.from(original);
      bytes.writeBigInt64BE(BigInt(partition.logEnd), 0);
      const baseOffset = partition.logEnd;
      if (first < 0) first = baseOffset;
      partition.batches.push({ baseOffset, lastOffset: baseOffset + count - 1, bytes });
      partition.logEnd += count;
    }
    return [injected || ErrorCode.NONE, injected ? -1 : first];
  }

  private listOffsets(r: Reader, w: Writer, version: number): void {
    r.int32();
    if (version >= 2) r.int8();
    const topics = r.array(() => ({ name: r.string(), partitions: r.array(() => ({ index: r.int32(), timestamp: r.int64() }))! }))!;
    if (version >= 2) w.int32(0);
    w.int32(topics.length);
    for (const { name, partitions } of topics) {
      w.string(name).int32(partitions.length);
      for (const { index, timestamp } of partitions) {
        const partition = this.topics.get(name)?.[index];
        const offset = partition ? (timestamp === -2 ? 0 : partition.logEnd) : -1;
        w.int32(index).int16(partition ? 0 : ErrorCode.UNKNOWN_TOPIC_OR_PARTITION).int64(-1).int64(offset);
      }
    }
  }

  private async fetch(r: Reader, w: Writer): Promise<void> {
    r.int32(); // replica
    const maxWait = r.int32();
    r.int32(); // min bytes
    r.int32(); // max bytes
    r.int8(); // isolation
    const topics = r.array(() => ({ name: r.string(), partitions: r.array(() => ({ index: r.int32(), offset: r.int64(), maxBytes: r.int32() }))! }))!;
    const collect = () =>
      topics.map(({ name, partitions }) => ({
        name,
        partitions: partitions.map(({ index, offset, maxBytes }) => {
          const partition = this.topics.get(name)?.[index];
          if (!partition) return { index, error: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, end: -1, data: Buffer.alloc(0) };
          if (offset > partition.logEnd) return { index, error: ErrorCode.OFFSET_OUT_OF_RANGE, end: partition.logEnd, data: Buffer.alloc(0) };
          const chunks: Buffer[] = [];
          let size = 0;
          for (const batch of partition.batches) {
            if (batch.lastOffset < offset) continue;
            if (size > 0 && size + batch.bytes.length > maxBytes) break;
            chunks.push(batch.bytes);
            size += batch.bytes.length;
          }
          return { index, error: 0, end: partition.logEnd, data: Buffer.concat(chunks) };
        }),
      }));
    let answer = collect();
    if (maxWait > 0 && answer.every((t) => t.partitions.every((p) => p.data.length === 0))) {
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.waiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, Math.min(maxWait, 1000));
        this.waiters.add(done);
      });
      answer = collect();
    }
    w.int32(0).int32(answer.length);
    for (const { name, partitions } of answer) {
      w.string(name).int32(partitions.length);
      for (const p of partitions) w.int32(p.index).int16(p.error).int64(p.end).int64(p.end).int32(-1).bytes(p.data);
    }
  }

  private notify(): void {
    for (const waiter of [...this.waiters]) waiter();
  }

  private saslHandshake(r: Reader, w: Writer, session: Session): void {
    const mechanism = r.string();
    const offered = this.options.sasl?.mechanism;
    session.mechanism = mechanism;
    w.int16(mechanism === offered ? 0 : ErrorCode.UNSUPPORTED_SASL_MECHANISM).int32(offered ? 1 : 0);
    if (offered) w.string(offered);
  }

  /** False when authentication failed: the answer is sent and the connection closed. */
  private saslAuthenticate(r: Reader, w: Writer, version: number, session: Session): boolean {
    const message = r.bytes() ?? Buffer.alloc(0);
    const users = this.options.sasl?.users ?? {};
    let reply = Buffer.alloc(0);
    let error = '';
    if (session.mechanism === 'PLAIN') {
      const [, user, password] = message.toString().split('\0');
      if (users[user] === undefined || users[user] !== password) error = `wrong user or password for ${user}`;
      else session.authenticated = true;
    } else if (session.mechanism.startsWith('SCRAM-')) {
      const step = scramStep(session, message.toString(), users);
      if (typeof step === 'string') {
        reply = Buffer.from(step);
        if (step.startsWith('v=')) this.scramLogins[session.legacyNonce ? 'legacyNonce' : 'rfc']++;
      }
      else error = step.error;
    } else error = 'no SASL handshake';
    w.int16(error ? ErrorCode.SASL_AUTHENTICATION_FAILED : 0).nullableString(error || null).bytes(reply);
    if (version >= 1) w.int64(0);
    return !error;
  }
}

interface Session {
  authenticated: boolean;
  legacyNonce?: boolean;
  mechanism: string;
  scram: ScramState | undefined;
}

interface ScramState {
  clientFirstBare: string;
  serverFirst: string;
  nonce: string;
  salt: Buffer;
  user: string;
}

/** The server side of RFC 5802 (SCRAM), as Kafka runs it: two SaslAuthenticate round trips. */
function scramStep(session: Session, message: string, users: Record<string, string>): string | { error: string } {
  const hash = session.mechanism === 'SCRAM-SHA-512' ? 'sha512' : 'sha256';
  const attrs = (text: string) => Object.fromEntries(text.split(',').map((part) => [part[0], part.slice(2)]));
  // librdkafka answers the server's final message with an empty one
  if (session.authenticated) return '';
  if (!session.scram) {
    const clientFirstBare = message.replace(/^[^,]*,[^,]*,/, '');
    const { n: user, r: clientNonce } = attrs(clientFirstBare);
    const nonce = clientNonce + randomBytes(12).toString('base64');
    const salt = randomBytes(16);
    const serverFirst = `r=${nonce},s=${salt.toString('base64')},i=4096`;
    session.scram = { clientFirstBare, serverFirst, nonce, salt, user };
    return serverFirst;
  }
  const { clientFirstBare, serverFirst, nonce, salt, user } = session.scram;
  const password = users[user];
  const { r: finalNonce, p: proof } = attrs(message);
  // librdkafka before 2.6.1 (kcat on Debian 12) sends the client nonce twice
  // (confluentinc/librdkafka#4895); Kafka 3.x accepted that, and so does this broker, counting it.
  const legacy = finalNonce === clientFirstBare.slice(clientFirstBare.indexOf(',r=') + 3) + nonce;
  if (password === undefined || (finalNonce !== nonce && !legacy) || !proof) return { error: `authentication failed for ${user}` };
  const salted = pbkdf2Sync(password, salt, 4096, hash === 'sha512' ? 64 : 32, hash);
  const clientKey = createHmac(hash, salted).update('Client Key').digest();
  const storedKey = createHash(hash).update(clientKey).digest();
  const authMessage = `${clientFirstBare},${serverFirst},${message.slice(0, message.indexOf(',p='))}`;
  const signature = createHmac(hash, storedKey).update(authMessage).digest();
  const given = Buffer.from(proof, 'base64');
  const expected = Buffer.from(clientKey.map((byte, i) => byte ^ signature[i]));
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { error: `authentication failed for ${user}` };
  session.authenticated = true;
  if (legacy) session.legacyNonce = true;
  const serverKey = createHmac(hash, salted).update('Server Key').digest();
  return `v=${createHmac(hash, serverKey).update(authMessage).digest('base64')}`;
}

/** The records of one stored batch, decompressed. */
function decodeBatch(batch: Buffer, topic: string, partition: number): StoredRecord[] {
  const baseOffset = Number(batch.readBigInt64BE(0));
  const compression = batch.readInt16BE(21) & 7;
  const baseTimestamp = Number(batch.readBigInt64BE(27));
  const producerId = Number(batch.readBigInt64BE(43));
  const count = batch.readInt32BE(57);
  const body = decompress(compression, batch.subarray(61));
  const r = new Reader(body);
  const records: StoredRecord[] = [];
  for (let i = 0; i < count; i++) {
    r.varint(); // length
    r.int8(); // attributes
    const timestamp = baseTimestamp + r.varint();
    const offset = baseOffset + r.varint();
    const key = r.varbytes();
    const value = r.varbytes();
    const headers: Record<string, string> = {};
    for (let h = r.varint(); h > 0; h--) headers[r.varbytes()!.toString()] = r.varbytes()?.toString() ?? '';
    records.push({ topic, partition, offset, timestamp, key: key?.toString() ?? null, value: value?.toString() ?? null, headers, producerId });
  }
  return records;
}

function decompress(codec: number, data: Buffer): Buffer {
  if (codec === 0) return data;
  if (codec === 1) return gunzipSync(data);
  if (codec === 4) return zstdDecompressSync(data);
  throw new Error(`the test broker cannot read compression ${codec} back (it stores and serves it unchanged)`);
}

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32C (Castagnoli), as record batches v2 carry it. */
export function crc32c(data: Buffer): number {
  let crc = 0xffffffff;
  for (let i = 0; i < data.length; i++) crc = CRC32C_TABLE[(crc ^ data[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

class Reader {
  private at = 0;
  private readonly buf: Buffer;
  constructor(buf: Buffer) {
    this.buf = buf;
  }
  int8(): number {
    return this.buf.readInt8(this.at++);
  }
  bool(): boolean {
    return this.int8() !== 0;
  }
  int16(): number {
    const v = this.buf.readInt16BE(this.at);
    this.at += 2;
    return v;
  }
  int32(): number {
    const v = this.buf.readInt32BE(this.at);
    this.at += 4;
    return v;
  }
  int64(): number {
    const v = this.buf.readBigInt64BE(this.at);
    this.at += 8;
    return Number(v);
  }
  nullableString(): string | null {
    const length = this.int16();
    if (length < 0) return null;
    this.at += length;
    return this.buf.toString('utf8', this.at - length, this.at);
  }
  string(): string {
    return this.nullableString() ?? '';
  }
  bytes(): Buffer | null {
    const length = this.int32();
    if (length < 0) return null;
    this.at += length;
    return this.buf.subarray(this.at - length, this.at);
  }
  array<T>(item: () => T): T[] | null {
    const length = this.int32();
    if (length < 0) return null;
    return Array.from({ length }, item);
  }
  uvarint(): number {
    let value = 0;
    for (let shift = 0; ; shift += 7) {
      const byte = this.buf[this.at++];
      value += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) return value;
    }
  }
  /** Zig-zag varint or varlong (records carry both; they fit a double here). */
  varint(): number {
    const raw = this.uvarint();
    return raw % 2 === 0 ? raw / 2 : -(raw + 1) / 2;
  }
  varbytes(): Buffer | null {
    const length = this.varint();
    if (length < 0) return null;
    this.at += length;
    return this.buf.subarray(this.at - length, this.at);
  }
  taggedFields(): void {
    for (let n = this.uvarint(); n > 0; n--) {
      this.uvarint();
      this.at += this.uvarint();
    }
  }
}

class Writer {
  private buf = Buffer.alloc(256);
  private at = 0;
  private room(n: number): void {
    if (this.at + n <= this.buf.length) return;
    const grown = Buffer.alloc(Math.max(this.buf.length * 2, this.at + n));
    this.buf.copy(grown, 0, 0, this.at);
    this.buf = grown;
  }
  int8(v: number): this {
    this.room(1);
    this.at = this.buf.writeInt8(v, this.at);
    return this;
  }
  bool(v: boolean): this {
    return this.int8(v ? 1 : 0);
  }
  int16(v: number): this {
    this.room(2);
    this.at = this.buf.writeInt16BE(v, this.at);
    return this;
  }
  int32(v: number): this {
    this.room(4);
    this.at = this.buf.writeInt32BE(v, this.at);
    return this;
  }
  int64(v: number): this {
    this.room(8);
    this.at = this.buf.writeBigInt64BE(BigInt(v), this.at);
    return this;
  }
  uvarint(v: number): this {
    do {
      this.room(1);
      this.buf[this.at++] = (v & 0x7f) | (v > 0x7f ? 0x80 : 0);
      v = Math.floor(v / 128);
    } while (v > 0);
    return this;
  }
  nullableString(v: string | null): this {
    if (v === null) return this.int16(-1);
    const bytes = Buffer.from(v);
    this.int16(bytes.length).room(bytes.length);
    this.at += bytes.copy(this.buf, this.at);
    return this;
  }
  string(v: string): this {
    return this.nullableString(v);
  }
  bytes(v: Buffer): this {
    this.int32(v.length).room(v.length);
    this.at += v.copy(this.buf, this.at);
    return this;
  }
  /** The frame with its size written in front. */
  finish(): Buffer {
    this.buf.writeInt32BE(this.at - 4, 0);
    return this.buf.subarray(0, this.at);
  }
}
