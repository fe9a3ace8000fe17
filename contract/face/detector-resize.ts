/**
 * The BlazeFace graph made to read a smaller square input. The network is convolutional, so only its declared
 * input shape and the few constant shapes derived from it (the Reshapes that flatten each feature map into
 * anchor rows, and the ConstantOfShape zeros its channel padding concatenates) name the side; scaled together,
 * the same weights find faces at the new side, with the anchor grids shrunk to match (decodeDetections reads
 * them from the outputs' row counts). A face crop's one detector pass runs it at CROP_DETECTOR_SIDE
 * (contract/face/photo.ts), a fraction of the full side's cost. Pure TypeScript, shared by server and page.
 */
import { MessageWriter, ModelMetadataError, ProtoReader, wireFields, type WireField } from '../onnx-wire.ts';
import { DEFAULT_CROP_PASS, detectorSides, type CropPass } from './photo.ts';

// ONNX protobuf field numbers (onnx.proto).
const MODEL_GRAPH = 7;
const GRAPH_NODE = 1;
const GRAPH_INITIALIZER = 5;
const GRAPH_INPUT = 11;
const GRAPH_OUTPUT = 12;
const GRAPH_VALUE_INFO = 13;
const NODE_INPUT = 1;
const NODE_OUTPUT = 2;
const NODE_OP_TYPE = 4;
const TENSOR_INT64_DATA = 7;
const TENSOR_NAME = 8;
const TENSOR_RAW_DATA = 9;
const VALUE_INFO_NAME = 1;
const VALUE_INFO_TYPE = 2;
const TYPE_TENSOR = 1;
const TENSOR_TYPE_ELEM_TYPE = 1;
const TENSOR_TYPE_SHAPE = 2;
const SHAPE_DIM = 1;
const DIM_VALUE = 1;
const ELEM_FLOAT = 1;

const utf8 = new TextDecoder();

interface GraphNode {
  op: string;
  inputs: string[];
  outputs: string[];
}

function payloadOf(field: WireField): Uint8Array {
  return field.payload ?? new Uint8Array(0);
}

function nodeOf(bytes: Uint8Array): GraphNode {
  const node: GraphNode = { op: '', inputs: [], outputs: [] };
  for (const f of wireFields(bytes, 0, 'a node')) {
    if (f.field === NODE_INPUT) node.inputs.push(utf8.decode(f.payload));
    else if (f.field === NODE_OUTPUT) node.outputs.push(utf8.decode(f.payload));
    else if (f.field === NODE_OP_TYPE) node.op = utf8.decode(f.payload);
  }
  return node;
}

/** An int64 initializer's name and values (raw little-endian, packed or one varint a value). */
function int64Initializer(bytes: Uint8Array): { name: string; values: number[] } {
  let name = '';
  const values: number[] = [];
  for (const f of wireFields(bytes, 0, 'an initializer')) {
    if (f.field === TENSOR_NAME) name = utf8.decode(f.payload);
    else if (f.field === TENSOR_RAW_DATA) {
      const raw = payloadOf(f);
      const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
      for (let i = 0; i + 8 <= raw.length; i += 8) values.push(Number(view.getBigInt64(i, true)));
    } else if (f.field === TENSOR_INT64_DATA && f.value !== undefined) values.push(f.value);
    else if (f.field === TENSOR_INT64_DATA) {
      const packed = new ProtoReader(payloadOf(f), f.payloadAt ?? 0, 'packed int64 data');
      while (!packed.done) values.push(packed.varint());
    }
  }
  return { name, values };
}

/** The initializer `bytes` with its values replaced by `values`, as raw int64. */
function withInt64Values(bytes: Uint8Array, values: readonly number[]): Uint8Array {
  const tensor = new MessageWriter();
  for (const f of wireFields(bytes, 0, 'an initializer')) {
    if (f.field !== TENSOR_RAW_DATA && f.field !== TENSOR_INT64_DATA) tensor.raw(f.encoded);
  }
  const raw = new Uint8Array(8 * values.length);
  const view = new DataView(raw.buffer);
  values.forEach((value, i) => view.setBigInt64(8 * i, BigInt(value), true));
  return tensor.bytes(TENSOR_RAW_DATA, raw).finish();
}

function floatValueInfo(name: string, dims: readonly number[]): Uint8Array {
  const shape = new MessageWriter();
  for (const dim of dims) shape.message(SHAPE_DIM, new MessageWriter().int(DIM_VALUE, dim).finish());
  const tensorType = new MessageWriter().int(TENSOR_TYPE_ELEM_TYPE, ELEM_FLOAT).message(TENSOR_TYPE_SHAPE, shape.finish()).finish();
  const type = new MessageWriter().message(TYPE_TENSOR, tensorType).finish();
  return new MessageWriter().string(VALUE_INFO_NAME, name).message(VALUE_INFO_TYPE, type).finish();
}

function valueInfoName(bytes: Uint8Array): string {
  for (const f of wireFields(bytes, 0, 'a value info')) if (f.field === VALUE_INFO_NAME) return utf8.decode(f.payload);
  return '';
}

function scaled(value: number, factor: number, what: string, side: number): number {
  const result = value * factor;
  if (!Number.isInteger(result)) throw new RangeError(`The detector cannot read a ${side}x${side} input: its ${what} ${value} would become ${result}, not a whole number`);
  return result;
}

/**
 * `bytes` (a BlazeFace ONNX graph whose NHWC input is `fromSide` square) made to read a `side` x `side` input.
 * `side` must keep every feature map whole: a multiple of 32 for the back model's 16x16 and 8x8 maps at 256.
 */
export function resizeDetectorGraph(bytes: Uint8Array, fromSide: number, side: number): Uint8Array {
  if (!(Number.isInteger(side) && side > 0)) throw new RangeError(`Detector side ${side} is invalid; expected a positive whole number`);
  if (side === fromSide) return bytes;
  const factor = side / fromSide;
  let graph: Uint8Array | undefined;
  for (const f of wireFields(bytes, 0, 'the model')) if (f.field === MODEL_GRAPH) graph = payloadOf(f);
  if (graph === undefined) throw new ModelMetadataError('Not a valid ONNX model: it has no graph');
  const nodes = [...wireFields(graph, 0, 'the graph')].filter((f) => f.field === GRAPH_NODE).map((f) => nodeOf(payloadOf(f)));
  const rowShapes = new Set(nodes.filter((n) => n.op === 'Reshape').map((n) => n.inputs[1]));
  const zeroShapes = new Set(nodes.filter((n) => n.op === 'ConstantOfShape').map((n) => n.inputs[0]));
  const reshapeOf = new Map(nodes.filter((n) => n.op === 'Reshape').map((n) => [n.outputs[0], n.inputs[1]]));
  const newShapes = new Map<string, number[]>();

  const out = new MessageWriter();
  const outputs: WireField[] = [];
  let inputs = 0;
  for (const f of wireFields(graph, 0, 'the graph')) {
    if (f.field === GRAPH_INITIALIZER) {
      const { name, values } = int64Initializer(payloadOf(f));
      let next: number[] | undefined;
      // [1, rows, k]: rows are cells x anchors a cell, so they scale with the map's area.
      if (rowShapes.has(name) && values.length === 3) next = [values[0], scaled(values[1], factor * factor, 'anchor rows', side), values[2]];
      // [1, channels, height, width] of zeros.
      if (zeroShapes.has(name) && values.length === 4) next = [values[0], values[1], scaled(values[2], factor, 'feature map side', side), scaled(values[3], factor, 'feature map side', side)];
      if (next === undefined) {
        out.raw(f.encoded);
        continue;
      }
      newShapes.set(name, next);
      out.message(GRAPH_INITIALIZER, withInt64Values(payloadOf(f), next));
    } else if (f.field === GRAPH_INPUT) {
      inputs++;
      out.message(GRAPH_INPUT, floatValueInfo(valueInfoName(payloadOf(f)), [1, side, side, 3]));
    } else if (f.field === GRAPH_OUTPUT) {
      // Written last, once every output's new shape is known.
      outputs.push(f);
    } else if (f.field !== GRAPH_VALUE_INFO) {
      // Intermediate shapes are dropped: they named the old side, and onnxruntime infers them again.
      out.raw(f.encoded);
    }
  }
  if (inputs !== 1 || rowShapes.size === 0 || newShapes.size !== rowShapes.size + zeroShapes.size) {
    throw new ModelMetadataError(`The detector's graph is not BlazeFace's as expected (${inputs} inputs, ${rowShapes.size} anchor-row reshapes, ${newShapes.size} shapes resized); it can only run at its own ${fromSide}x${fromSide} input`);
  }
  for (const f of outputs) {
    const name = valueInfoName(payloadOf(f));
    const shape = newShapes.get(reshapeOf.get(name) ?? '');
    if (shape === undefined) out.raw(f.encoded);
    else out.message(GRAPH_OUTPUT, floatValueInfo(name, shape));
  }
  const model = new MessageWriter();
  for (const f of wireFields(bytes, 0, 'the model')) model.raw(f.field === MODEL_GRAPH ? new MessageWriter().message(MODEL_GRAPH, out.finish()).finish() : f.encoded);
  return model.finish();
}

/** The detector's graph resized to each side it is run at besides its own (`detectorSides`), for a session each. */
export function resizedDetectorGraphs(bytes: Uint8Array, inputSize: number, cropPass: CropPass = DEFAULT_CROP_PASS): [side: number, graph: Uint8Array][] {
  return detectorSides(inputSize, cropPass)
    .filter((side) => side !== inputSize)
    .map((side) => [side, resizeDetectorGraph(bytes, inputSize, side)]);
}
