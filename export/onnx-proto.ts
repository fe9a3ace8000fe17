/**
 * The part of the ONNX protobuf schema (onnx/onnx.proto3) that the exporter writes, and a hand-written
 * encoder for it: a few hundred bytes of wire format are simpler to own than a protobuf dependency.
 * Field numbers are the schema's; the encoder writes fields in field-number order, as protoc does.
 */
import { MessageWriter } from '../contract/onnx-wire.ts';

/** TensorProto.DataType values used here. */
export const DataType = { FLOAT: 1, INT64: 7 } as const;
export type DataTypeCode = (typeof DataType)[keyof typeof DataType];

export interface TensorProto {
  name: string;
  dims: readonly number[];
  dataType: DataTypeCode;
  /** little-endian raw bytes, as `raw_data` */
  rawData: Uint8Array;
}

/** A dimension: a fixed size, a symbolic name (e.g. the batch "N"), or unknown (null). */
export type Dim = number | string | null;

export interface ValueInfoProto {
  name: string;
  elemType: DataTypeCode;
  shape: readonly Dim[];
}

export type AttributeValue = number | readonly number[] | string | { float: number } | { floats: readonly number[] };

export interface NodeProto {
  name: string;
  opType: string;
  inputs: readonly string[];
  outputs: readonly string[];
  /** integers become INT(S); use { float } / { floats } for FLOAT(S) */
  attributes: Readonly<Record<string, AttributeValue>>;
}

export interface GraphProto {
  name: string;
  nodes: readonly NodeProto[];
  initializers: readonly TensorProto[];
  inputs: readonly ValueInfoProto[];
  outputs: readonly ValueInfoProto[];
  docString?: string;
}

export interface ModelProto {
  irVersion: number;
  producerName: string;
  producerVersion: string;
  docString?: string;
  graph: GraphProto;
  opsetImports: readonly { domain: string; version: number }[];
  metadataProps: readonly { key: string; value: string }[];
}

/** The ONNX IR version that introduced each opset the exporter may write (onnx/helper.py VERSION_TABLE). */
export const IR_VERSION_FOR_OPSET: Readonly<Record<number, number>> = {
  13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9, 21: 10,
};

const AttributeType = { FLOAT: 1, INT: 2, STRING: 3, FLOATS: 6, INTS: 7 } as const;

function encodeTensor(tensor: TensorProto): Uint8Array {
  const w = new MessageWriter();
  for (const dim of tensor.dims) w.int(1, dim);
  w.int(2, tensor.dataType);
  w.string(8, tensor.name);
  w.bytes(9, tensor.rawData);
  return w.finish();
}

function encodeValueInfo(info: ValueInfoProto): Uint8Array {
  const shape = new MessageWriter();
  for (const dim of info.shape) {
    const d = new MessageWriter();
    if (typeof dim === 'number') d.int(1, dim);
    else if (typeof dim === 'string') d.string(2, dim);
    shape.message(1, d.finish());
  }
  const tensorType = new MessageWriter().int(1, info.elemType).message(2, shape.finish()).finish();
  const type = new MessageWriter().message(1, tensorType).finish();
  return new MessageWriter().string(1, info.name).message(2, type).finish();
}

function encodeAttribute(name: string, value: AttributeValue): Uint8Array {
  const w = new MessageWriter().string(1, name);
  if (typeof value === 'number') {
    w.int(3, value).int(20, AttributeType.INT);
  } else if (typeof value === 'string') {
    w.string(4, value).int(20, AttributeType.STRING);
  } else if (isNumberArray(value)) {
    for (const v of value) w.int(8, v);
    w.int(20, AttributeType.INTS);
  } else if ('float' in value) {
    w.float(2, value.float).int(20, AttributeType.FLOAT);
  } else {
    for (const v of value.floats) w.float(7, v);
    w.int(20, AttributeType.FLOATS);
  }
  return w.finish();
}

function isNumberArray(value: AttributeValue): value is readonly number[] {
  return Array.isArray(value);
}

function encodeNode(node: NodeProto): Uint8Array {
  const w = new MessageWriter();
  for (const input of node.inputs) w.string(1, input);
  for (const output of node.outputs) w.string(2, output);
  w.string(3, node.name);
  w.string(4, node.opType);
  for (const [name, value] of Object.entries(node.attributes)) w.message(5, encodeAttribute(name, value));
  return w.finish();
}

function encodeGraph(graph: GraphProto): Uint8Array {
  const w = new MessageWriter();
  for (const node of graph.nodes) w.message(1, encodeNode(node));
  w.string(2, graph.name);
  for (const tensor of graph.initializers) w.message(5, encodeTensor(tensor));
  w.optionalString(10, graph.docString);
  for (const input of graph.inputs) w.message(11, encodeValueInfo(input));
  for (const output of graph.outputs) w.message(12, encodeValueInfo(output));
  return w.finish();
}

/** The protobuf bytes of a model: what an `.onnx` file holds. */
export function encodeModel(model: ModelProto): Uint8Array {
  const w = new MessageWriter();
  w.int(1, model.irVersion);
  w.string(2, model.producerName);
  w.string(3, model.producerVersion);
  w.optionalString(6, model.docString);
  w.message(7, encodeGraph(model.graph));
  for (const opset of model.opsetImports) {
    w.message(8, new MessageWriter().optionalString(1, opset.domain).int(2, opset.version).finish());
  }
  for (const { key, value } of model.metadataProps) {
    w.message(14, new MessageWriter().string(1, key).string(2, value).finish());
  }
  return w.finish();
}

/** Little-endian float32 bytes, whatever the platform's byte order. */
export function float32Bytes(values: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(values.length * 4);
  const view = new DataView(out.buffer);
  for (let i = 0; i < values.length; i++) view.setFloat32(i * 4, values[i], true);
  return out;
}

/** Little-endian int64 bytes. */
export function int64Bytes(values: readonly number[]): Uint8Array {
  const out = new Uint8Array(values.length * 8);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => view.setBigInt64(i * 8, BigInt(v), true));
  return out;
}
