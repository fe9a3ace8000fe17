/**
 * One ONNX graph for several models that read the same image: nodes that compute the same thing from the same
 * tensors are kept once (common subexpression elimination across the files), so models that share a trunk, as
 * the multitask preset's three do, run it once per image instead of once per model. Models that share nothing
 * merge too, into one graph that runs them side by side.
 *
 * Two nodes are the same when their operator, domain, attributes and other fields are byte for byte equal, their
 * inputs are the same tensors, and they have the same outputs (how many, and which are left empty); two
 * initializers are the same when everything but their names is. Nothing is approximated: the merged graph is
 * the same computation as the separate ones. Random operators (and Dropout in training mode) are never merged.
 * What this module cannot rename safely (subgraphs, operators outside the standard domain, local functions,
 * training info, external or sparse data, IR versions before 4) is refused with a `ModelMergeError` that says
 * why: callers then run the models separately.
 *
 * Pure TypeScript with no Node imports: the server and the browser both use it.
 */
import { concatBytes, decodeString, MessageWriter, ModelMetadataError, ProtoReader, toBytes, wireFields, type WireField } from './onnx-wire.ts';

/** The models cannot be merged into one graph; the message says why. They still run separately. */
export class ModelMergeError extends Error {
  override name = 'ModelMergeError';
}

export interface ModelToMerge {
  /** names this model's outputs in the merged graph (`<key>/<output>`), e.g. its task */
  key: string;
  bytes: Uint8Array | ArrayBuffer;
}

export interface MergedModel {
  /** the merged model's protobuf bytes */
  bytes: Uint8Array;
  /** the one image input, named as in the first model */
  inputName: string;
  /** for each model's key: its own name for that input */
  inputNames: Record<string, string>;
  /** for each model's key: its output names -> their names in the merged graph */
  outputNames: Record<string, Record<string, string>>;
  /** nodes in the separate graphs together, and in the merged one (the identities naming its outputs excluded) */
  nodes: { separate: number; merged: number };
}

/** Field numbers of onnx.proto's messages, as far as merging needs them. */
const MODEL = { irVersion: 1, graph: 7, opsetImport: 8, trainingInfo: 20, functions: 25 } as const;
const GRAPH = { node: 1, initializer: 5, input: 11, output: 12, sparseInitializer: 15 } as const;
const NODE = { input: 1, output: 2, name: 3, opType: 4, attribute: 5, docString: 6, domain: 7 } as const;
const ATTRIBUTE = { graph: 6, graphs: 11 } as const;
const TENSOR = { name: 8, dataLocation: 14 } as const;
const VALUE_INFO = { name: 1 } as const;
const TENSOR_LOCATION_EXTERNAL = 1;

/** Operators whose every run draws new numbers: two of them are never the same node. */
const RANDOM_OPS = new Set(['RandomNormal', 'RandomNormalLike', 'RandomUniform', 'RandomUniformLike', 'Multinomial', 'Bernoulli']);

/** Whether a node draws new numbers each run: a random operator, or Dropout given a training_mode input. */
const isRandom = (node: ParsedNode): boolean => RANDOM_OPS.has(node.opType) || (node.opType === 'Dropout' && (node.inputs[2] ?? '') !== '');

interface ParsedNode {
  inputs: string[];
  outputs: string[];
  name: string;
  opType: string;
  /** everything but inputs, outputs, name and doc string: what, with the inputs, makes two nodes the same */
  identity: Uint8Array[];
}

/** A named value whose other fields (a tensor's data, a value's type) are kept as encoded. */
interface Named {
  name: string;
  rest: Uint8Array[];
}

interface ParsedModel {
  key: string;
  irVersion: number;
  opsets: Uint8Array[];
  /** the model's fields before the graph (ir_version, producer, ...), copied into the merged model */
  header: Uint8Array[];
  nodes: ParsedNode[];
  initializers: Named[];
  inputs: Named[];
  outputs: Named[];
}

const latin1 = (parts: readonly Uint8Array[]): string => {
  let text = '';
  for (const part of parts) for (let i = 0; i < part.length; i += 8192) text += String.fromCharCode(...part.subarray(i, i + 8192));
  return text;
};

function string(field: WireField, what: string): string {
  if (field.payload === undefined) throw new ModelMergeError(`${what} has wire type ${field.wireType}; expected a string`);
  return decodeString(new ProtoReader(field.payload, field.payloadAt ?? 0, what), field.payload, what);
}

function message(field: WireField, what: string): WireField[] {
  if (field.payload === undefined) throw new ModelMergeError(`${what} is not a message (wire type ${field.wireType})`);
  return [...wireFields(field.payload, field.payloadAt ?? 0, what)];
}

/** A named message, from its fields: its name field read, the rest kept as encoded. */
function named(fields: readonly WireField[], nameField: number, what: string): Named {
  let name = '';
  const rest: Uint8Array[] = [];
  for (const f of fields) {
    if (f.field === nameField) name = string(f, `${what}'s name`);
    else rest.push(f.encoded);
  }
  return { name, rest };
}

function parseNode(field: WireField, key: string): ParsedNode {
  const node: ParsedNode = { inputs: [], outputs: [], name: '', opType: '', identity: [] };
  for (const f of message(field, `a node of ${key}`)) {
    if (f.field === NODE.input) node.inputs.push(string(f, 'a node input'));
    else if (f.field === NODE.output) node.outputs.push(string(f, 'a node output'));
    else if (f.field === NODE.name) node.name = string(f, 'a node name');
    else if (f.field === NODE.docString) continue;
    else {
      if (f.field === NODE.opType) node.opType = string(f, 'an op_type');
      const domain = f.field === NODE.domain ? string(f, 'a domain') : '';
      if (domain !== '' && domain !== 'ai.onnx') throw new ModelMergeError(`${key}: node "${node.name}" is in domain "${domain}"; only the standard ai.onnx operators are merged`);
      if (f.field === NODE.attribute && message(f, 'an attribute').some((a) => a.field === ATTRIBUTE.graph || a.field === ATTRIBUTE.graphs)) {
        throw new ModelMergeError(`${key}: node "${node.name}" has a subgraph, whose outer-scope names merging cannot rename`);
      }
      node.identity.push(f.encoded);
    }
  }
  return node;
}

function parseModel(model: ModelToMerge): ParsedModel {
  const bytes = toBytes(model.bytes);
  const parsed: ParsedModel = { key: model.key, irVersion: 0, opsets: [], header: [], nodes: [], initializers: [], inputs: [], outputs: [] };
  let graph: WireField | undefined;
  for (const f of wireFields(bytes, 0, `the ${model.key} model`)) {
    if (f.field === MODEL.graph) graph = f;
    else if (f.field === MODEL.opsetImport) parsed.opsets.push(f.encoded);
    else if (f.field === MODEL.functions || f.field === MODEL.trainingInfo) throw new ModelMergeError(`${model.key}: the model has local functions or training info, which merging does not handle`);
    else if (f.field < MODEL.graph) {
      if (f.field === MODEL.irVersion) parsed.irVersion = f.value ?? 0;
      parsed.header.push(f.encoded);
    }
    // metadata_props (and anything later) describe one model, not the merged graph: left out.
  }
  if (graph === undefined) throw new ModelMergeError(`${model.key}: the model has no graph`);
  // Before IR 4, initializers had to be listed among the graph's inputs as well; the merged graph does not.
  if (parsed.irVersion < 4) throw new ModelMergeError(`${model.key}: IR version ${parsed.irVersion} is older than 4, which merging needs`);
  for (const f of message(graph, `the ${model.key} graph`)) {
    if (f.field === GRAPH.node) parsed.nodes.push(parseNode(f, model.key));
    else if (f.field === GRAPH.initializer) {
      const fields = message(f, `an initializer of ${model.key}`);
      const tensor = named(fields, TENSOR.name, `an initializer of ${model.key}`);
      const location = fields.find((t) => t.field === TENSOR.dataLocation);
      if (location?.value === TENSOR_LOCATION_EXTERNAL) throw new ModelMergeError(`${model.key}: initializer "${tensor.name}" keeps its data in an external file`);
      parsed.initializers.push(tensor);
    } else if (f.field === GRAPH.sparseInitializer) throw new ModelMergeError(`${model.key}: the graph has sparse initializers, which merging does not handle`);
    else if (f.field === GRAPH.input) parsed.inputs.push(named(message(f, `an input of ${model.key}`), VALUE_INFO.name, `an input of ${model.key}`));
    else if (f.field === GRAPH.output) parsed.outputs.push(named(message(f, `an output of ${model.key}`), VALUE_INFO.name, `an output of ${model.key}`));
    // The graph's name, doc string and value_info (optional shape hints) are not needed to run it.
  }
  // IR 3 listed initializers among the inputs too; the image is the input that is not one.
  const initialized = new Set(parsed.initializers.map((t) => t.name));
  parsed.inputs = parsed.inputs.filter((input) => !initialized.has(input.name));
  if (parsed.inputs.length !== 1) throw new ModelMergeError(`${model.key}: the graph has ${parsed.inputs.length} inputs; merging needs one image input`);
  return parsed;
}

/** The merged graph under construction: distinct tensors, by what computes them. */
class GraphMerger {
  readonly nodes: Uint8Array[] = [];
  readonly initializers: Uint8Array[] = [];
  readonly outputs: Uint8Array[] = [];
  private readonly usedNames = new Set<string>();
  /** initializers by a hash of their content; equal hashes are compared byte for byte */
  private readonly byInitializer = new Map<number, { content: Uint8Array; name: string }[]>();
  private readonly byNode = new Map<string, string[]>();
  private mergedNodes = 0;

  get nodeCount(): number {
    return this.mergedNodes;
  }

  /** `preferred` if no tensor has it yet, else `preferred` with a number. */
  private fresh(preferred: string): string {
    let name = preferred;
    for (let n = 2; this.usedNames.has(name); n++) name = `${preferred}~${n}`;
    this.usedNames.add(name);
    return name;
  }

  /** Takes `name` as it is; false if a tensor has it already. */
  claim(name: string): boolean {
    if (this.usedNames.has(name)) return false;
    this.usedNames.add(name);
    return true;
  }

  /** The merged name of an initializer: an earlier model's, where one holds the same data. */
  initializer(tensor: Named): string {
    const content = concatBytes(tensor.rest);
    const hash = fnv1a(content);
    const candidates = this.byInitializer.get(hash) ?? [];
    const known = candidates.find((c) => sameBytes(c.content, content));
    if (known !== undefined) return known.name;
    const name = this.fresh(tensor.name);
    this.byInitializer.set(hash, [...candidates, { content, name }]);
    this.initializers.push(new MessageWriter().string(TENSOR.name, name).raw(content).finish());
    return name;
  }

  /** The merged names of a node's outputs: an earlier node's, where it is the same operation on the same tensors. */
  node(node: ParsedNode, inputs: string[]): string[] {
    // Inputs length-prefixed, so that no two lists of names give one key; outputs by which are present, since an
    // operator may compute differently for a different number of them (Split without sizes, for one).
    const key = [latin1(node.identity), ...inputs.map((name) => `${name.length}:${name}`), node.outputs.map((o) => (o === '' ? '0' : '1')).join('')].join('\u0000');
    const random = isRandom(node);
    const known = random ? undefined : this.byNode.get(key);
    if (known !== undefined) return known;
    const outputs = node.outputs.map((output) => (output === '' ? '' : this.fresh(output)));
    if (!random) this.byNode.set(key, outputs);
    const w = new MessageWriter();
    for (const input of inputs) w.string(NODE.input, input);
    for (const output of outputs) w.string(NODE.output, output);
    w.string(NODE.name, this.fresh(`node:${node.name === '' ? (outputs[0] ?? node.opType) : node.name}`));
    this.nodes.push(w.raw(concatBytes(node.identity)).finish());
    this.mergedNodes++;
    return outputs;
  }

  /** A graph output named `name` (claimed beforehand), an identity of `tensor`. */
  output(tensor: string, name: string, type: Uint8Array[]): void {
    this.nodes.push(new MessageWriter().string(NODE.input, tensor).string(NODE.output, name).string(NODE.name, this.fresh(`node:${name}`)).string(NODE.opType, 'Identity').finish());
    this.outputs.push(new MessageWriter().string(VALUE_INFO.name, name).raw(concatBytes(type)).finish());
  }
}

/** 32-bit FNV-1a: a cheap first test of whether two initializers hold the same bytes. */
function fnv1a(bytes: Uint8Array): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) hash = Math.imul(hash ^ bytes[i], 0x01000193);
  return hash >>> 0;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Merges models that read the same image input (same type and shape; the name may differ) and import the same
 * opsets into one model whose outputs are every model's, named `<key>/<output>`. Throws `ModelMergeError` when
 * they cannot be merged, malformed files included (onnxruntime then says what is wrong with them).
 */
export function mergeModels(models: readonly ModelToMerge[]): MergedModel {
  if (models.length === 0) throw new ModelMergeError('no models to merge');
  const keys = models.map((m) => m.key);
  const twice = keys.find((key, i) => keys.indexOf(key) !== i);
  if (twice !== undefined) throw new ModelMergeError(`two models have the key "${twice}"`);
  let parsed: ParsedModel[];
  try {
    parsed = models.map(parseModel);
  } catch (error) {
    throw error instanceof ModelMetadataError ? new ModelMergeError(error.message) : error;
  }
  const [first] = parsed;
  const input = first.inputs[0];
  for (const model of parsed.slice(1)) {
    if (model.irVersion !== first.irVersion) throw new ModelMergeError(`${model.key} has IR version ${model.irVersion}, ${first.key} ${first.irVersion}`);
    if (latin1(model.opsets) !== latin1(first.opsets)) throw new ModelMergeError(`${model.key} and ${first.key} import different opsets`);
    const [own] = model.inputs;
    if (latin1(own.rest) !== latin1(input.rest)) throw new ModelMergeError(`${model.key}'s input "${own.name}" differs from ${first.key}'s "${input.name}" in type or shape`);
  }

  const merger = new GraphMerger();
  merger.claim(input.name);
  // The outputs' names are claimed first, so that no inner tensor can take one.
  for (const model of parsed) {
    for (const output of model.outputs) {
      const name = `${model.key}/${output.name}`;
      if (!merger.claim(name)) throw new ModelMergeError(`two outputs would both be named "${name}"`);
    }
  }
  const outputNames: Record<string, Record<string, string>> = {};
  let separate = 0;
  for (const model of parsed) {
    // This model's tensor names -> the merged graph's.
    const names = new Map<string, string>([['', ''], [model.inputs[0].name, input.name]]);
    for (const tensor of model.initializers) names.set(tensor.name, merger.initializer(tensor));
    for (const node of model.nodes) {
      const inputs = node.inputs.map((name) => {
        const merged = names.get(name);
        if (merged === undefined) throw new ModelMergeError(`${model.key}: node "${node.name}" reads "${name}", which no earlier node or initializer defines`);
        return merged;
      });
      merger.node(node, inputs).forEach((merged, i) => {
        // An empty output stays absent: '' must keep meaning "no tensor" for the optional inputs that read it.
        if (node.outputs[i] !== '') names.set(node.outputs[i], merged);
      });
    }
    separate += model.nodes.length;
    outputNames[model.key] = {};
    for (const output of model.outputs) {
      const tensor = names.get(output.name);
      if (tensor === undefined) throw new ModelMergeError(`${model.key}: output "${output.name}" is computed by no node`);
      const name = `${model.key}/${output.name}`;
      merger.output(tensor, name, output.rest);
      outputNames[model.key][output.name] = name;
    }
  }

  const graph = new MessageWriter();
  for (const node of merger.nodes) graph.message(GRAPH.node, node);
  graph.string(2, `merged: ${keys.join(', ')}`);
  for (const tensor of merger.initializers) graph.message(GRAPH.initializer, tensor);
  graph.message(GRAPH.input, new MessageWriter().string(VALUE_INFO.name, input.name).raw(concatBytes(input.rest)).finish());
  for (const output of merger.outputs) graph.message(GRAPH.output, output);
  const model = new MessageWriter().raw(concatBytes(first.header)).message(MODEL.graph, graph.finish());
  for (const opset of first.opsets) model.raw(opset);
  const inputNames = Object.fromEntries(parsed.map((m) => [m.key, m.inputs[0].name]));
  return { bytes: model.finish(), inputName: input.name, inputNames, outputNames, nodes: { separate, merged: merger.nodeCount } };
}
