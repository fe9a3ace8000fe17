/**
 * Walks a tfjs layers model (sequential or functional, any number of outputs) from its outputs back to
 * its inputs and emits each layer call through the layer table.
 */
import * as tf from '@tensorflow/tfjs';
import { GraphBuilder } from './graph-builder.ts';
import { ConfigReader, LAYER_TABLE, supportedLayerNames, UnsupportedLayerError, type GraphValue, type LayerContext, type LayerTable, type LayerWeight, type Shape } from './layers.ts';
import { DataType, type GraphProto, type ValueInfoProto } from './onnx-proto.ts';

/** The symbolic name of the batch dimension of every input and output. */
export const BATCH_DIM = 'N';

export interface ConvertOptions {
  /** ONNX input names, one per model input (default: "input" for one input, else the input layers' names) */
  inputNames?: readonly string[];
  /** ONNX output names, one per model output (default: "output" for one output, else the output layers' names) */
  outputNames?: readonly string[];
  /** the layer table (default `LAYER_TABLE`; tests swap an entry to prove what a wrong one would do) */
  layers?: LayerTable;
  graphName?: string;
}

export interface ConvertedModel {
  graph: GraphProto;
  /** Keras shapes of the inputs and outputs, batch first (null) */
  inputs: { name: string; shape: Shape }[];
  outputs: { name: string; shape: Shape }[];
}

/** The ONNX graph of a tfjs layers model. Throws `UnsupportedLayerError` naming every layer it cannot express. */
export function convertLayersModel(model: tf.LayersModel, options: ConvertOptions = {}): ConvertedModel {
  const table = options.layers ?? LAYER_TABLE;
  const unsupported = allLayers(model).filter((layer) => !Object.hasOwn(table, layer.getClassName()));
  if (unsupported.length > 0) {
    const list = unsupported.map((layer) => `"${layer.name}" (class ${layer.getClassName()})`).join(', ');
    throw new UnsupportedLayerError(
      `Cannot export model "${model.name}": layer${unsupported.length > 1 ? 's' : ''} ${list} ${unsupported.length > 1 ? 'are' : 'is'} not supported. Supported layer classes: ${supportedLayerNames(table)}`,
    );
  }

  const g = new GraphBuilder();
  const inputNames = names(options.inputNames, model.inputs, 'input', 'inputNames').map((n) => g.reserveName(n));
  const outputNames = names(options.outputNames, model.outputs, 'output', 'outputNames').map((n) => g.reserveName(n));
  const values = new Map<number, GraphValue>();
  const initializers = new Map<string, string>();

  const callLayer = (symbolic: tf.SymbolicTensor, inputs: GraphValue[]): GraphValue => {
    const layer = symbolic.sourceLayer;
    const className = layer.getClassName();
    const fail = (detail: string) => new UnsupportedLayerError(`Cannot export layer "${layer.name}" (class ${className}): ${detail}`);
    if (symbolic.dtype !== 'float32') throw fail(`its output is ${symbolic.dtype}; only float32 is supported`);
    const weights = new Map<string, LayerWeight>();
    for (const variable of layer.weights) {
      // "conv2d_1/kernel" or "conv2d_1/kernel:0" -> "kernel"
      const shortName = variable.originalName.replace(/:\d+$/, '').split('/').pop() ?? variable.originalName;
      weights.set(shortName, { shape: variable.shape.map((d) => d ?? 0), values: variable.read().dataSync() as Float32Array });
    }
    const ctx: LayerContext = {
      layerName: layer.name,
      className,
      graph: g,
      inputs,
      outputShape: symbolic.shape,
      config: new ConfigReader(layer.getConfig(), fail),
      weight: (shortName) => {
        const weight = weights.get(shortName);
        if (weight === undefined) throw fail(`it has no weight "${shortName}" (it has: ${[...weights.keys()].join(', ') || 'none'})`);
        return weight;
      },
      initializer: (key, dims, make) => {
        const id = `${layer.name}\u0000${key}`;
        let name = initializers.get(id);
        if (name === undefined) {
          name = g.floatTensor(`${layer.name}/${key}`, dims, make());
          initializers.set(id, name);
        }
        return name;
      },
      unsupported: fail,
    };
    const value = table[className].convert(ctx);
    const rank = value.shape.length;
    if (rank !== symbolic.shape.length) throw fail(`the exporter produced rank ${rank}, tfjs says [${symbolic.shape.join(', ')}]`);
    return value;
  };

  const graphInputs: ValueInfoProto[] = model.inputs.map((symbolic, i) => {
    if (symbolic.dtype !== 'float32') {
      throw new UnsupportedLayerError(`Cannot export model "${model.name}": input "${symbolic.name}" is ${symbolic.dtype}; only float32 inputs are supported`);
    }
    values.set(symbolic.id, callLayer(symbolic, [{ name: inputNames[i], shape: symbolic.shape, layout: 'keras' }]));
    return valueInfo(inputNames[i], symbolic.shape);
  });

  // Depth-first from the outputs, without recursion (deep residual nets would overflow the stack).
  const visit = (root: tf.SymbolicTensor): GraphValue => {
    const stack: tf.SymbolicTensor[] = [root];
    while (stack.length > 0) {
      const top = stack[stack.length - 1];
      if (values.has(top.id)) {
        stack.pop();
        continue;
      }
      const pending = top.inputs.filter((input) => !values.has(input.id));
      if (pending.length > 0) {
        stack.push(...pending);
        continue;
      }
      if (top.inputs.length === 0) {
        throw new UnsupportedLayerError(`Cannot export model "${model.name}": tensor "${top.name}" has no inputs and is not a model input`);
      }
      values.set(top.id, callLayer(top, top.inputs.map((input) => values.get(input.id) as GraphValue)));
      stack.pop();
    }
    return values.get(root.id) as GraphValue;
  };

  const graphOutputs: ValueInfoProto[] = model.outputs.map((symbolic, i) => {
    const value = visit(symbolic);
    // Outputs leave in Keras layout, under their own names.
    if (value.layout === 'nchw') g.node('Transpose', [value.name], outputNames[i], { perm: [0, 2, 3, 1] }, outputNames[i]);
    else g.node('Identity', [value.name], outputNames[i], {}, outputNames[i]);
    return valueInfo(outputNames[i], symbolic.shape);
  });

  return {
    graph: { name: options.graphName ?? model.name, nodes: g.nodes, initializers: g.initializers, inputs: graphInputs, outputs: graphOutputs },
    inputs: model.inputs.map((s, i) => ({ name: inputNames[i], shape: s.shape })),
    outputs: model.outputs.map((s, i) => ({ name: outputNames[i], shape: s.shape })),
  };
}

/** Every layer of the model, the input layers included (a Sequential's `layers` leaves them out). */
function allLayers(model: tf.LayersModel): tf.layers.Layer[] {
  const layers = new Set<tf.layers.Layer>(model.layers);
  for (const input of model.inputs) layers.add(input.sourceLayer);
  return [...layers];
}

function names(given: readonly string[] | undefined, tensors: tf.SymbolicTensor[], single: string, option: string): string[] {
  if (given !== undefined) {
    if (given.length !== tensors.length) throw new Error(`${option} has ${given.length} names; the model has ${tensors.length}`);
    return [...given];
  }
  if (tensors.length === 1) return [single];
  return tensors.map((t) => t.sourceLayer.name);
}

function valueInfo(name: string, shape: Shape): ValueInfoProto {
  return { name, elemType: DataType.FLOAT, shape: shape.map((d, i) => (i === 0 ? BATCH_DIM : d)) };
}
