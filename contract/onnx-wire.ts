/**
 * The protobuf wire format as ONNX files use it: a reader that walks a message field by field, naming where a
 * malformed file goes wrong, and a writer that encodes one. Pure TypeScript with no Node imports, shared by the
 * exporter, the server and the browser.
 */

/** Bytes that do not hold a valid ONNX model, or a model whose metadata is missing or wrong. */
export class ModelMetadataError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ModelMetadataError';
  }
}

export const WIRE_VARINT = 0;
export const WIRE_FIXED64 = 1;
export const WIRE_LENGTH_DELIMITED = 2;
export const WIRE_FIXED32 = 5;

/** Reads one protobuf message; every failure names the message and the byte where it happened. */
export class ProtoReader {
  offset = 0;
  constructor(
    private readonly bytes: Uint8Array,
    /** where `bytes` starts in the file, for messages */
    private readonly base: number,
    private readonly what: string,
  ) {}

  get done(): boolean {
    return this.offset >= this.bytes.length;
  }

  fail(message: string): never {
    throw new ModelMetadataError(`Not a valid ONNX model: ${message} (in ${this.what} at byte ${this.base + this.offset})`);
  }

  varint(): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.offset >= this.bytes.length) this.fail('the file is truncated inside a number');
      const byte = this.bytes[this.offset++];
      // Exact up to 2^53; larger values only occur in fields this reader skips or reports.
      result += (byte & 0x7f) * scale;
      scale *= 128;
      if ((byte & 0x80) === 0) return result;
    }
    return this.fail('a number is longer than 10 bytes');
  }

  /** The next field's number and wire type, validated. */
  tag(): { field: number; wireType: number } {
    const start = this.offset;
    const key = this.varint();
    const field = Math.floor(key / 8);
    const wireType = key % 8;
    if (field === 0) {
      this.offset = start;
      this.fail('field number 0');
    }
    if (wireType !== WIRE_VARINT && wireType !== WIRE_FIXED64 && wireType !== WIRE_LENGTH_DELIMITED && wireType !== WIRE_FIXED32) {
      this.offset = start;
      this.fail(`field ${field} has wire type ${wireType}, which ONNX never uses`);
    }
    return { field, wireType };
  }

  /** A length-delimited value: its bytes and where they start in the file. */
  lengthDelimited(field: number): { bytes: Uint8Array; at: number } {
    const length = this.varint();
    const left = this.bytes.length - this.offset;
    if (length > left) this.fail(`the file is truncated: field ${field} needs ${length} bytes, ${left} are left`);
    const at = this.base + this.offset;
    const bytes = this.bytes.subarray(this.offset, this.offset + length);
    this.offset += length;
    return { bytes, at };
  }

  skip(field: number, wireType: number): void {
    switch (wireType) {
      case WIRE_VARINT:
        this.varint();
        return;
      case WIRE_FIXED64:
      case WIRE_FIXED32: {
        const size = wireType === WIRE_FIXED64 ? 8 : 4;
        if (this.offset + size > this.bytes.length) this.fail(`the file is truncated inside field ${field}`);
        this.offset += size;
        return;
      }
      default:
        this.lengthDelimited(field);
    }
  }

  expect(field: number, wireType: number, expected: number, name: string): void {
    if (wireType !== expected) this.fail(`field ${field} (${name}) has wire type ${wireType}; expected ${expected}`);
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

export function decodeString(reader: ProtoReader, bytes: Uint8Array, name: string): string {
  try {
    return utf8.decode(bytes);
  } catch {
    return reader.fail(`${name} is not valid UTF-8`);
  }
}

export function toBytes(data: Uint8Array | ArrayBuffer): Uint8Array {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  throw new ModelMetadataError(`Expected the model's bytes as a Uint8Array or ArrayBuffer, got ${Object.prototype.toString.call(data)}`);
}

/** One field of a message: what `ProtoReader.fields` yields. */
export interface WireField {
  field: number;
  wireType: number;
  /** the whole field, tag included, to copy it into another message unchanged */
  encoded: Uint8Array;
  /** a length-delimited field's payload (a string, bytes or a message) */
  payload?: Uint8Array;
  /** where `payload` starts in the file, for a reader of the message it holds */
  payloadAt?: number;
  /** a varint field's value */
  value?: number;
}

/** Every field of the message in `bytes`, in order. */
export function* wireFields(bytes: Uint8Array, base: number, what: string): Generator<WireField> {
  const reader = new ProtoReader(bytes, base, what);
  while (!reader.done) {
    const start = reader.offset;
    const { field, wireType } = reader.tag();
    let payload: Uint8Array | undefined;
    let payloadAt: number | undefined;
    let value: number | undefined;
    if (wireType === WIRE_LENGTH_DELIMITED) ({ bytes: payload, at: payloadAt } = reader.lengthDelimited(field));
    else if (wireType === WIRE_VARINT) value = reader.varint();
    else reader.skip(field, wireType);
    yield { field, wireType, encoded: bytes.subarray(start, reader.offset), payload, payloadAt, value };
  }
}

const textEncoder = new TextEncoder();

/** Accumulates one message's bytes. */
export class MessageWriter {
  private readonly chunks: Uint8Array[] = [];
  private pending: number[] = [];

  private flushPending(): void {
    if (this.pending.length > 0) {
      this.chunks.push(Uint8Array.from(this.pending));
      this.pending = [];
    }
  }

  private varint(value: number | bigint): void {
    // Negative int64 values are ten bytes of two's complement, as protobuf specifies.
    let v = BigInt.asUintN(64, BigInt(value));
    while (v >= 0x80n) {
      this.pending.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    this.pending.push(Number(v));
  }

  private tag(field: number, wireType: number): void {
    this.varint((field << 3) | wireType);
  }

  int(field: number, value: number): this {
    if (!Number.isSafeInteger(value)) throw new RangeError(`protobuf field ${field}: ${value} is not a safe integer`);
    this.tag(field, WIRE_VARINT);
    this.varint(value);
    return this;
  }

  float(field: number, value: number): this {
    this.tag(field, WIRE_FIXED32);
    const bytes = new Uint8Array(4);
    new DataView(bytes.buffer).setFloat32(0, value, true);
    this.pending.push(...bytes);
    return this;
  }

  bytes(field: number, value: Uint8Array): this {
    this.tag(field, WIRE_LENGTH_DELIMITED);
    this.varint(value.length);
    this.flushPending();
    this.chunks.push(value);
    return this;
  }

  string(field: number, value: string): this {
    return this.bytes(field, textEncoder.encode(value));
  }

  /** A non-empty string; proto3 leaves empty strings out. */
  optionalString(field: number, value: string | undefined): this {
    return value === undefined || value === '' ? this : this.string(field, value);
  }

  message(field: number, value: Uint8Array): this {
    return this.bytes(field, value);
  }

  /** Fields already encoded (tag included), copied as they are. */
  raw(encoded: Uint8Array): this {
    this.flushPending();
    this.chunks.push(encoded);
    return this;
  }

  finish(): Uint8Array {
    this.flushPending();
    return concatBytes(this.chunks);
  }
}

/** The parts, one after another, in one new array. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
