/**
 * The Sparkplug B payload (sparkplug_b.proto of Sparkplug 3.0) as protobuf bytes: the parts an
 * edge node sends (timestamp, seq, metrics with name, alias, timestamp, datatype, is_historical,
 * is_null, properties and a scalar value) and reads back (NCMD/DCMD). Written by hand, without a
 * protobuf library: the schema is fixed by the specification, the code is small, costs nothing
 * to load, and the tests check it against Eclipse Tahu's own codec.
 */

/** Sparkplug B datatypes (sparkplug_b.proto, DataType). */
export const DataType = {
  Int8: 1,
  Int16: 2,
  Int32: 3,
  Int64: 4,
  UInt8: 5,
  UInt16: 6,
  UInt32: 7,
  UInt64: 8,
  Float: 9,
  Double: 10,
  Boolean: 11,
  String: 12,
  DateTime: 13,
  Text: 14,
} as const;
export type DataTypeCode = (typeof DataType)[keyof typeof DataType];

export type MetricValue = number | boolean | string | null;

export interface Metric {
  name?: string;
  alias?: number;
  /** epoch ms */
  timestamp?: number;
  datatype?: DataTypeCode;
  isHistorical?: boolean;
  value: MetricValue;
  /** Properties: a number is an Int32 (Quality), a text a String */
  properties?: Record<string, number | string>;
}

export interface Payload {
  timestamp?: number;
  metrics: Metric[];
  seq?: number;
}

const WIRE_VARINT = 0;
const WIRE_64 = 1;
const WIRE_LEN = 2;
const WIRE_32 = 5;

/** A growing byte buffer, reused between messages. */
class Writer {
  buf = Buffer.allocUnsafe(256);
  pos = 0;

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  /** A non-negative integer up to 2^53 (timestamps need more than 32 bits). */
  varint(value: number): void {
    this.room(10);
    while (value >= 0x80) {
      this.buf[this.pos++] = (value % 0x80) | 0x80;
      value = Math.floor(value / 0x80);
    }
    this.buf[this.pos++] = value;
  }

  /** Any integer as the 64-bit two's complement protobuf stores (a negative Int64 takes 10 bytes). */
  varint64(value: number): void {
    if (value >= 0) return this.varint(value);
    let big = BigInt.asUintN(64, BigInt(value));
    this.room(10);
    while (big >= 0x80n) {
      this.buf[this.pos++] = Number(big & 0x7fn) | 0x80;
      big >>= 7n;
    }
    this.buf[this.pos++] = Number(big);
  }

  tag(field: number, wire: number): void {
    this.varint(field * 8 + wire);
  }

  string(field: number, text: string): void {
    const length = Buffer.byteLength(text);
    this.tag(field, WIRE_LEN);
    this.varint(length);
    this.room(length);
    this.pos += this.buf.write(text, this.pos);
  }

  double(field: number, value: number): void {
    this.tag(field, WIRE_64);
    this.room(8);
    this.pos = this.buf.writeDoubleLE(value, this.pos);
  }

  float(field: number, value: number): void {
    this.tag(field, WIRE_32);
    this.room(4);
    this.pos = this.buf.writeFloatLE(value, this.pos);
  }

  /** Starts a length-delimited field; `end` writes its length in front once its content is known. */
  begin(field: number): number {
    this.tag(field, WIRE_LEN);
    // room for a length of up to 2 MB as a 3-byte varint; `end` moves the content when shorter
    this.room(3);
    this.pos += 3;
    return this.pos;
  }

  end(start: number): void {
    const length = this.pos - start;
    const size = length < 0x80 ? 1 : length < 0x4000 ? 2 : length < 0x200000 ? 3 : 0;
    if (size === 0) throw new Error(`Sparkplug metric of ${length} bytes is too large`);
    if (size < 3) this.buf.copy(this.buf, start - 3 + size, start, this.pos);
    let at = start - 3;
    let rest = length;
    for (let i = 0; i < size; i++) {
      this.buf[at++] = (rest & 0x7f) | (i < size - 1 ? 0x80 : 0);
      rest >>>= 7;
    }
    this.pos -= 3 - size;
  }
}

const writer = new Writer();

/** The payload as protobuf bytes (a copy: the writer is reused). */
export function encodePayload(payload: Payload): Buffer {
  const w = writer;
  w.pos = 0;
  if (payload.timestamp !== undefined) {
    w.tag(1, WIRE_VARINT);
    w.varint(payload.timestamp);
  }
  for (const metric of payload.metrics) {
    const start = w.begin(2);
    encodeMetric(w, metric);
    w.end(start);
  }
  if (payload.seq !== undefined) {
    w.tag(3, WIRE_VARINT);
    w.varint(payload.seq);
  }
  return Buffer.from(w.buf.subarray(0, w.pos));
}

function encodeMetric(w: Writer, metric: Metric): void {
  if (metric.name !== undefined) w.string(1, metric.name);
  if (metric.alias !== undefined) {
    w.tag(2, WIRE_VARINT);
    w.varint(metric.alias);
  }
  if (metric.timestamp !== undefined) {
    w.tag(3, WIRE_VARINT);
    w.varint(metric.timestamp);
  }
  if (metric.datatype !== undefined) {
    w.tag(4, WIRE_VARINT);
    w.varint(metric.datatype);
  }
  if (metric.isHistorical) {
    w.tag(5, WIRE_VARINT);
    w.varint(1);
  }
  if (metric.value === null) {
    w.tag(7, WIRE_VARINT);
    w.varint(1);
  }
  if (metric.properties) {
    const start = w.begin(9);
    const keys = Object.keys(metric.properties);
    for (const key of keys) w.string(1, key);
    for (const key of keys) {
      // PropertyValue { type = 1; int_value = 3 | string_value = 8 }
      const property = metric.properties[key];
      const value = w.begin(2);
      w.tag(1, WIRE_VARINT);
      if (typeof property === 'string') {
        w.varint(DataType.String);
        w.string(8, property);
      } else {
        w.varint(DataType.Int32);
        w.tag(3, WIRE_VARINT);
        w.varint(property >>> 0);
      }
      w.end(value);
    }
    w.end(start);
  }
  if (metric.value !== null) encodeValue(w, metric.datatype ?? DataType.Double, metric.value);
}

/**
 * The value in the field its datatype names. Int8…Int32, UInt8 and UInt16 go to int_value (a
 * negative one as its 32-bit two's complement); UInt32, Int64, UInt64 and DateTime to
 * long_value, as Eclipse Tahu (Java and JavaScript) reads them.
 */
function encodeValue(w: Writer, datatype: DataTypeCode, value: number | boolean | string): void {
  switch (datatype) {
    case DataType.Int8:
    case DataType.Int16:
    case DataType.Int32:
    case DataType.UInt8:
    case DataType.UInt16:
      w.tag(10, WIRE_VARINT);
      w.varint(Number(value) >>> 0);
      return;
    case DataType.UInt32:
    case DataType.Int64:
    case DataType.UInt64:
    case DataType.DateTime:
      w.tag(11, WIRE_VARINT);
      w.varint64(Math.trunc(Number(value)));
      return;
    case DataType.Float:
      w.float(12, Number(value));
      return;
    case DataType.Double:
      w.double(13, Number(value));
      return;
    case DataType.Boolean:
      w.tag(14, WIRE_VARINT);
      w.varint(value ? 1 : 0);
      return;
    case DataType.String:
    case DataType.Text:
      w.string(15, String(value));
      return;
  }
}

/** Reads a payload (an NCMD, a DCMD, a test's message): unknown fields are skipped. Throws on malformed bytes. */
export function decodePayload(bytes: Uint8Array): Payload {
  const reader = new Reader(bytes, 0, bytes.length);
  const payload: Payload = { metrics: [] };
  while (reader.more()) {
    const [field, wire] = reader.tag();
    if (field === 1 && wire === WIRE_VARINT) payload.timestamp = reader.varint();
    else if (field === 2 && wire === WIRE_LEN) payload.metrics.push(decodeMetric(reader.sub()));
    else if (field === 3 && wire === WIRE_VARINT) payload.seq = reader.varint();
    else reader.skip(wire);
  }
  return payload;
}

function decodeMetric(r: Reader): Metric {
  const metric: Metric = { value: null };
  let raw: { kind: 'int' | 'long' | 'other'; value: number | boolean | string } | undefined;
  let isNull = false;
  while (r.more()) {
    const [field, wire] = r.tag();
    if (field === 1 && wire === WIRE_LEN) metric.name = r.string();
    else if (field === 2 && wire === WIRE_VARINT) metric.alias = r.varint();
    else if (field === 3 && wire === WIRE_VARINT) metric.timestamp = r.varint();
    else if (field === 4 && wire === WIRE_VARINT) metric.datatype = r.varint() as DataTypeCode;
    else if (field === 5 && wire === WIRE_VARINT) metric.isHistorical = r.varint() !== 0;
    else if (field === 7 && wire === WIRE_VARINT) isNull = r.varint() !== 0;
    else if (field === 10 && wire === WIRE_VARINT) raw = { kind: 'int', value: r.varint() };
    else if (field === 11 && wire === WIRE_VARINT) raw = { kind: 'long', value: r.varint64() };
    else if (field === 12 && wire === WIRE_32) raw = { kind: 'other', value: r.float() };
    else if (field === 13 && wire === WIRE_64) raw = { kind: 'other', value: r.double() };
    else if (field === 14 && wire === WIRE_VARINT) raw = { kind: 'other', value: r.varint() !== 0 };
    else if (field === 15 && wire === WIRE_LEN) raw = { kind: 'other', value: r.string() };
    else r.skip(wire);
  }
  if (isNull || !raw) return metric;
  metric.value = raw.value;
  // int_value is unsigned on the wire: the signed datatypes read back their sign
  if (raw.kind === 'int' && typeof raw.value === 'number') {
    const d = metric.datatype;
    if (d === DataType.Int8 || d === DataType.Int16 || d === DataType.Int32) metric.value = raw.value | 0;
  }
  return metric;
}

class Reader {
  constructor(
    private readonly bytes: Uint8Array,
    private pos: number,
    private readonly limit: number,
  ) {}

  more(): boolean {
    return this.pos < this.limit;
  }

  private byte(): number {
    if (this.pos >= this.limit) throw new Error('truncated Sparkplug payload');
    return this.bytes[this.pos++];
  }

  tag(): [number, number] {
    const key = this.varint();
    return [Math.floor(key / 8), key % 8];
  }

  /** Up to 2^53 exactly; beyond, approximately (as any JavaScript number). */
  varint(): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      const b = this.byte();
      value += (b & 0x7f) * scale;
      if (b < 0x80) return value;
      scale *= 0x80;
    }
    throw new Error('malformed varint in Sparkplug payload');
  }

  /** A 64-bit two's complement value: negative when its top bit is set (read as a BigInt, so that -1 stays -1). */
  varint64(): number {
    let value = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      const b = this.byte();
      value |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return Number(BigInt.asIntN(64, value));
    }
    throw new Error('malformed varint in Sparkplug payload');
  }

  private take(n: number): number {
    if (n < 0 || this.pos + n > this.limit) throw new Error('truncated Sparkplug payload');
    const at = this.pos;
    this.pos += n;
    return at;
  }

  string(): string {
    const n = this.varint();
    const at = this.take(n);
    return Buffer.from(this.bytes.buffer, this.bytes.byteOffset + at, n).toString('utf8');
  }

  float(): number {
    const at = this.take(4);
    return Buffer.from(this.bytes.buffer, this.bytes.byteOffset + at, 4).readFloatLE(0);
  }

  double(): number {
    const at = this.take(8);
    return Buffer.from(this.bytes.buffer, this.bytes.byteOffset + at, 8).readDoubleLE(0);
  }

  sub(): Reader {
    const n = this.varint();
    const at = this.take(n);
    return new Reader(this.bytes, at, at + n);
  }

  skip(wire: number): void {
    if (wire === WIRE_VARINT) this.varint();
    else if (wire === WIRE_64) this.take(8);
    else if (wire === WIRE_LEN) this.take(this.varint());
    else if (wire === WIRE_32) this.take(4);
    else throw new Error(`unsupported wire type ${wire} in Sparkplug payload`);
  }
}
