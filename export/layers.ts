/**
 * The one table that says what each tfjs-layers class becomes in ONNX, and the table of activations.
 *
 * Layout: the ONNX model takes and returns what the tfjs model does (NHWC), but image tensors (rank 4)
 * are held NCHW inside the graph, because ONNX convolutions and pooling are NCHW. Every value records
 * its Keras (NHWC) shape and whether it is held NCHW; a layer that depends on memory order (Flatten,
 * Reshape, Dense on images) first transposes back to NHWC, because Keras flattens in NHWC order.
 */
import type { serialization } from '@tensorflow/tfjs';
import { TEMPERATURE_FLOOR } from '../contract/temperature.ts';
import { ExportError } from './errors.ts';
import type { GraphBuilder } from './graph-builder.ts';

/** A Keras shape: batch first (null = any), then the rest, channels last for images. */
export type Shape = readonly (number | null)[];

/** A tensor in the graph being built. */
export interface GraphValue {
  name: string;
  /** the tensor's Keras (NHWC) shape, whatever its layout in the graph */
  shape: Shape;
  /** 'nchw': a rank-4 image held channels-first; 'keras': held exactly as Keras holds it */
  layout: 'nchw' | 'keras';
}

/** A layer weight as tfjs holds it (e.g. a Conv2D kernel is [kh, kw, in, out]). */
export interface LayerWeight {
  shape: readonly number[];
  values: Float32Array;
}

/** Thrown when a model holds a layer (or a layer option) the exporter cannot express: one kind of ExportError. */
export class UnsupportedLayerError extends ExportError {
  constructor(message: string) {
    super(message);
    this.name = 'UnsupportedLayerError';
  }
}

/** What a table entry gets for one call of a layer. */
export interface LayerContext {
  readonly layerName: string;
  readonly className: string;
  readonly graph: GraphBuilder;
  readonly inputs: readonly GraphValue[];
  /** the Keras output shape of this call */
  readonly outputShape: Shape;
  readonly config: ConfigReader;
  /** a weight by its short name (`kernel`, `bias`, `gamma`, `moving_mean`, ...) */
  weight(shortName: string): LayerWeight;
  /** an initializer made from this layer's weights, created once per layer (shared layers reuse it) */
  initializer(key: string, dims: readonly number[], make: () => ArrayLike<number>): string;
  /** an error about this layer that names it and its class */
  unsupported(detail: string): UnsupportedLayerError;
}

export interface LayerRule {
  /** what the layer becomes, in a few words (listed by `describeSupportedLayers`) */
  onnx: string;
  convert(ctx: LayerContext): GraphValue;
}

export type LayerTable = Readonly<Record<string, LayerRule>>;

// ---------------------------------------------------------------------------------------------
// Reading a layer's config (tfjs `getConfig()`, camelCase keys) with errors that name the key.

type ConfigValue = serialization.ConfigDictValue;

export class ConfigReader {
  constructor(
    private readonly config: serialization.ConfigDict,
    private readonly fail: (detail: string) => UnsupportedLayerError,
  ) {}

  raw(key: string): ConfigValue | undefined {
    return this.config[key];
  }

  number(key: string, fallback?: number): number {
    const value = this.config[key];
    if ((value === undefined || value === null) && fallback !== undefined) return fallback;
    if (typeof value !== 'number' || !Number.isFinite(value)) throw this.fail(`config "${key}" is ${JSON.stringify(value)}; expected a number`);
    return value;
  }

  /** A positive-or-zero integer tuple of `length`, given as one number or a list (Keras accepts both). */
  ints(key: string, length: number, fallback?: number): number[] {
    let value = this.config[key];
    if ((value === undefined || value === null) && fallback !== undefined) value = fallback;
    const list = typeof value === 'number' ? new Array<number>(length).fill(value) : value;
    if (!Array.isArray(list) || list.length !== length || !list.every((v) => typeof v === 'number' && Number.isInteger(v) && v >= 0)) {
      throw this.fail(`config "${key}" is ${JSON.stringify(value)}; expected ${length} whole numbers`);
    }
    return list as number[];
  }

  string(key: string, fallback?: string): string {
    const value = this.config[key];
    if ((value === undefined || value === null) && fallback !== undefined) return fallback;
    if (typeof value !== 'string') throw this.fail(`config "${key}" is ${JSON.stringify(value)}; expected a string`);
    return value;
  }

  choice<T extends string>(key: string, allowed: readonly T[], fallback?: T): T {
    const value = this.string(key, fallback);
    if (!(allowed as readonly string[]).includes(value)) {
      throw this.fail(`${key} "${value}" is not supported; expected one of: ${allowed.join(', ')}`);
    }
    return value as T;
  }

  bool(key: string, fallback: boolean): boolean {
    const value = this.config[key];
    if (value === undefined || value === null) return fallback;
    if (typeof value !== 'boolean') throw this.fail(`config "${key}" is ${JSON.stringify(value)}; expected true or false`);
    return value;
  }
}

// ---------------------------------------------------------------------------------------------
// Layout helpers.

const TO_NCHW = [0, 3, 1, 2];
const TO_NHWC = [0, 2, 3, 1];
/** Where each NHWC axis sits in NCHW. */
const NHWC_AXIS_IN_NCHW = [0, 2, 3, 1];

/** The value as Keras holds it (NHWC for images). */
export function toKerasLayout(ctx: LayerContext, value: GraphValue): GraphValue {
  if (value.layout === 'keras') return value;
  return { name: ctx.graph.node('Transpose', [value.name], ctx.layerName, { perm: TO_NHWC }), shape: value.shape, layout: 'keras' };
}

/** A value in Keras layout made ready for the next layer: images go NCHW. */
export function toGraphLayout(ctx: LayerContext, value: GraphValue): GraphValue {
  if (value.layout === 'nchw' || value.shape.length !== 4) return value;
  return { name: ctx.graph.node('Transpose', [value.name], ctx.layerName, { perm: TO_NCHW }), shape: value.shape, layout: 'nchw' };
}

/** The graph axis of a Keras axis (negative counts from the end). */
export function graphAxis(ctx: LayerContext, value: GraphValue, kerasAxis: number): number {
  const rank = value.shape.length;
  const axis = kerasAxis < 0 ? kerasAxis + rank : kerasAxis;
  if (!Number.isInteger(axis) || axis < 1 || axis >= rank) {
    throw ctx.unsupported(`axis ${kerasAxis} is not supported for an input of rank ${rank}; expected a non-batch axis`);
  }
  return value.layout === 'nchw' ? NHWC_AXIS_IN_NCHW[axis] : axis;
}

function single(ctx: LayerContext): GraphValue {
  if (ctx.inputs.length !== 1) throw ctx.unsupported(`it has ${ctx.inputs.length} inputs; expected 1`);
  return ctx.inputs[0];
}

/** The one input, which must be a rank-4 NHWC image with the layer in channelsLast form. */
function image(ctx: LayerContext): GraphValue {
  const x = single(ctx);
  if (x.shape.length !== 4) throw ctx.unsupported(`its input has shape [${x.shape.join(', ')}]; expected rank 4 [batch, height, width, channels]`);
  if (ctx.config.raw('dataFormat') !== undefined) ctx.config.choice('dataFormat', ['channelsLast'], 'channelsLast');
  return toGraphLayout(ctx, x);
}

function nchwOutput(ctx: LayerContext, name: string): GraphValue {
  return { name, shape: ctx.outputShape, layout: 'nchw' };
}

/**
 * Explicit [top, left, bottom, right] pads. tfjs 'same' is TensorFlow's: out = ceil(in / stride), and
 * an odd total pad puts the extra row or column at the end (bottom, right), which ONNX auto_pad cannot
 * be trusted to match across runtimes, so the pads are computed here.
 */
export function spatialPads(ctx: LayerContext, input: Shape, padding: 'same' | 'valid', kernel: number[], strides: number[], dilations: number[]): number[] {
  if (padding === 'valid') return [0, 0, 0, 0];
  const begin: number[] = [];
  const end: number[] = [];
  for (let axis = 0; axis < 2; axis++) {
    const size = input[axis + 1];
    if (size === null) throw ctx.unsupported(`'same' padding needs a fixed input size, but its input has shape [${input.join(', ')}]`);
    const effectiveKernel = (kernel[axis] - 1) * dilations[axis] + 1;
    const out = Math.ceil(size / strides[axis]);
    const total = Math.max(0, (out - 1) * strides[axis] + effectiveKernel - size);
    begin.push(Math.floor(total / 2));
    end.push(total - Math.floor(total / 2));
  }
  return [...begin, ...end];
}

// ---------------------------------------------------------------------------------------------
// Weight layouts.

/** tfjs conv kernel [kh, kw, in, out] -> ONNX [out, in, kh, kw]. */
function convKernel(kernel: LayerWeight): Float32Array {
  const [kh, kw, cin, cout] = kernel.shape;
  const out = new Float32Array(kernel.values.length);
  for (let h = 0; h < kh; h++)
    for (let w = 0; w < kw; w++)
      for (let i = 0; i < cin; i++)
        for (let o = 0; o < cout; o++) out[((o * cin + i) * kh + h) * kw + w] = kernel.values[((h * kw + w) * cin + i) * cout + o];
  return out;
}

/** tfjs depthwise kernel [kh, kw, channels, multiplier] -> ONNX grouped [channels * multiplier, 1, kh, kw]; output c*m+k as TF orders it. */
function depthwiseKernel(kernel: LayerWeight): Float32Array {
  const [kh, kw, channels, multiplier] = kernel.shape;
  const out = new Float32Array(kernel.values.length);
  for (let h = 0; h < kh; h++)
    for (let w = 0; w < kw; w++)
      for (let c = 0; c < channels; c++)
        for (let m = 0; m < multiplier; m++) out[((c * multiplier + m) * kh + h) * kw + w] = kernel.values[((h * kw + w) * channels + c) * multiplier + m];
  return out;
}

// ---------------------------------------------------------------------------------------------
// Activations: tfjs activation name -> ONNX nodes. `axis` is the graph axis of the channels (softmax).

type ActivationRule = (g: GraphBuilder, x: string, base: string, axis: number) => string;

const unary =
  (opType: string, attributes: Record<string, number | { float: number }> = {}): ActivationRule =>
  (g, x, base) =>
    g.node(opType, [x], base, attributes);

const swish: ActivationRule = (g, x, base) => g.node('Mul', [x, g.node('Sigmoid', [x], base)], base);

export const ACTIVATIONS: Readonly<Record<string, ActivationRule>> = {
  linear: (_g, x) => x,
  relu: unary('Relu'),
  // tfjs: min(6, relu(x))
  relu6: (g, x, base) => g.node('Clip', [x, g.floatScalar(0), g.floatScalar(6)], base),
  // tfjs's elu activation always uses alpha 1
  elu: unary('Elu', { alpha: { float: 1 } }),
  // tfjs-core's SELU constants
  selu: unary('Selu', { alpha: { float: 1.6732632423543772 }, gamma: { float: 1.0507009873554805 } }),
  sigmoid: unary('Sigmoid'),
  // Keras/tfjs: clip(0.2 x + 0.5, 0, 1) (not PyTorch's x/6 + 1/2)
  hardSigmoid: unary('HardSigmoid', { alpha: { float: 0.2 }, beta: { float: 0.5 } }),
  tanh: unary('Tanh'),
  softplus: unary('Softplus'),
  softsign: unary('Softsign'),
  softmax: (g, x, base, axis) => g.node('Softmax', [x], base, { axis }),
  logSoftmax: (g, x, base, axis) => g.node('LogSoftmax', [x], base, { axis }),
  swish,
  // Keras 3 writes swish as "silu"; tfjs-model.ts registers that name with tfjs so such models load.
  silu: swish,
  mish: (g, x, base) => g.node('Mul', [x, g.node('Tanh', [g.node('Softplus', [x], base)], base)], base),
  // x * 0.5 * (1 + erf(x / sqrt 2)), as tfjs computes it
  gelu: (g, x, base) => {
    const erf = g.node('Erf', [g.node('Div', [x, g.floatScalar(Math.SQRT2)], base)], base);
    return g.node('Mul', [x, g.node('Mul', [g.floatScalar(0.5), g.node('Add', [g.floatScalar(1), erf], base)], base)], base);
  },
  // 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
  gelu_new: (g, x, base) => {
    const cube = g.node('Mul', [g.node('Mul', [x, x], base), x], base);
    const inner = g.node('Add', [x, g.node('Mul', [cube, g.floatScalar(0.044715)], base)], base);
    const t = g.node('Tanh', [g.node('Mul', [inner, g.floatScalar(Math.sqrt(2 / Math.PI))], base)], base);
    return g.node('Mul', [g.node('Mul', [x, g.floatScalar(0.5)], base), g.node('Add', [t, g.floatScalar(1)], base)], base);
  },
};

/** Applies a named activation to a value, keeping its layout. */
export function applyActivation(ctx: LayerContext, value: GraphValue, name: string): GraphValue {
  const rule = Object.hasOwn(ACTIVATIONS, name) ? ACTIVATIONS[name] : undefined;
  if (rule === undefined) {
    throw ctx.unsupported(`activation "${name}" is not supported; supported activations: ${Object.keys(ACTIVATIONS).join(', ')}`);
  }
  const out = rule(ctx.graph, value.name, ctx.layerName, graphAxis(ctx, value, -1));
  return { ...value, name: out };
}

function fusedActivation(ctx: LayerContext, value: GraphValue): GraphValue {
  return applyActivation(ctx, value, ctx.config.string('activation', 'linear'));
}

// ---------------------------------------------------------------------------------------------
// Layer rules.

function convolution(ctx: LayerContext, x: GraphValue, kernelName: string, depthwise: boolean, kernel: number[], strides: number[], dilations: number[], padding: 'same' | 'valid', bias: string | undefined, base = ctx.layerName): string {
  const w = ctx.weight(kernelName);
  const [kh, kw, cin, cout] = w.shape;
  const dims = depthwise ? [cin * cout, 1, kh, kw] : [cout, cin, kh, kw];
  const weight = ctx.initializer(kernelName, dims, () => (depthwise ? depthwiseKernel(w) : convKernel(w)));
  const inputs = bias === undefined ? [x.name, weight] : [x.name, weight, bias];
  return ctx.graph.node('Conv', inputs, base, {
    kernel_shape: kernel,
    strides,
    dilations,
    pads: spatialPads(ctx, x.shape, padding, kernel, strides, dilations),
    group: depthwise ? cin : 1,
  });
}

function optionalBias(ctx: LayerContext): string | undefined {
  if (!ctx.config.bool('useBias', true)) return undefined;
  const b = ctx.weight('bias');
  return ctx.initializer('bias', [b.values.length], () => b.values);
}

function convLayer(ctx: LayerContext, depthwise: boolean): GraphValue {
  const x = image(ctx);
  const kernel = ctx.config.ints('kernelSize', 2);
  const strides = ctx.config.ints('strides', 2, 1);
  const dilations = ctx.config.ints('dilationRate', 2, 1);
  const padding = ctx.config.choice('padding', ['same', 'valid'] as const, 'valid');
  const y = convolution(ctx, x, depthwise ? 'depthwise_kernel' : 'kernel', depthwise, kernel, strides, dilations, padding, optionalBias(ctx));
  return fusedActivation(ctx, nchwOutput(ctx, y));
}

function pooling(ctx: LayerContext, opType: 'MaxPool' | 'AveragePool'): GraphValue {
  const x = image(ctx);
  const kernel = ctx.config.ints('poolSize', 2, 2);
  const stridesValue = ctx.config.raw('strides');
  const strides = stridesValue === null || stridesValue === undefined ? kernel : ctx.config.ints('strides', 2);
  const padding = ctx.config.choice('padding', ['same', 'valid'] as const, 'valid');
  const attributes: Record<string, number[] | number> = { kernel_shape: kernel, strides, pads: spatialPads(ctx, x.shape, padding, kernel, strides, [1, 1]) };
  // TF averages over the real pixels only, never the padding.
  if (opType === 'AveragePool') attributes.count_include_pad = 0;
  return nchwOutput(ctx, ctx.graph.node(opType, [x.name], ctx.layerName, attributes));
}

function globalPooling(ctx: LayerContext, opType: 'GlobalAveragePool' | 'GlobalMaxPool'): GraphValue {
  const x = image(ctx);
  if (ctx.config.bool('keepDims', false)) throw ctx.unsupported('keepDims true is not supported; expected false');
  const pooled = ctx.graph.node(opType, [x.name], ctx.layerName);
  return { name: ctx.graph.node('Flatten', [pooled], ctx.layerName, { axis: 1 }), shape: ctx.outputShape, layout: 'keras' };
}

/** The image mirrored left to right: the width axis (NCHW axis 3) gathered in reverse order. */
function horizontalFlip(ctx: LayerContext): GraphValue {
  const x = image(ctx);
  const width = x.shape[2];
  if (typeof width !== 'number') throw ctx.unsupported('its input has no fixed width; expected [batch, height, width, channels] with a known width');
  const reversed = ctx.graph.int64Vector(Array.from({ length: width }, (_, i) => width - 1 - i));
  return nchwOutput(ctx, ctx.graph.node('Gather', [x.name, reversed], ctx.layerName, { axis: 3 }));
}

/**
 * Probabilities rescaled by a temperature T (node-shared/tfjs/temperature-layer.ts): Softmax(Log(Max(p, floor)) / T)
 * over the classes, or for one sigmoid unit Sigmoid((Log(Max(p, floor)) - Log(Max(1 - p, floor))) / T).
 */
function temperature(ctx: LayerContext): GraphValue {
  const x = single(ctx);
  if (x.shape.length !== 2) throw ctx.unsupported(`its input has rank ${x.shape.length}; expected probabilities [batch, classes]`);
  const t = ctx.config.number('temperature');
  if (!(t > 0 && Number.isFinite(t))) throw ctx.unsupported(`temperature ${t} is not a positive number`);
  const { graph, layerName } = ctx;
  const floor = graph.floatScalar(TEMPERATURE_FLOOR);
  const logOf = (value: string): string => graph.node('Log', [graph.node('Max', [value, floor], layerName)], layerName);
  const scale = graph.floatScalar(1 / t);
  if (x.shape[1] === 1) {
    const logit = graph.node('Sub', [logOf(x.name), logOf(graph.node('Sub', [graph.floatScalar(1), x.name], layerName))], layerName);
    return { ...x, name: graph.node('Sigmoid', [graph.node('Mul', [logit, scale], layerName)], layerName) };
  }
  return { ...x, name: graph.node('Softmax', [graph.node('Mul', [logOf(x.name), scale], layerName)], layerName, { axis: 1 }) };
}

/** Inference form: y = gamma (x - mean) / sqrt(variance + epsilon) + beta, with the moving statistics. */
function batchNormalization(ctx: LayerContext): GraphValue {
  const x = single(ctx);
  const axisValue = ctx.config.raw('axis');
  const kerasAxis = Array.isArray(axisValue) && axisValue.length === 1 ? axisValue[0] : axisValue ?? -1;
  if (typeof kerasAxis !== 'number') throw ctx.unsupported(`axis ${JSON.stringify(axisValue)} is not supported; expected one axis`);
  const rank = x.shape.length;
  if ((kerasAxis < 0 ? kerasAxis + rank : kerasAxis) !== rank - 1) {
    throw ctx.unsupported(`axis ${kerasAxis} is not supported; expected the channels axis (-1)`);
  }
  const channels = x.shape[rank - 1];
  if (channels === null) throw ctx.unsupported('its channel count is not fixed');
  const epsilon = ctx.config.number('epsilon', 1e-3);
  const mean = ctx.weight('moving_mean').values;
  const variance = ctx.weight('moving_variance').values;
  const gamma = ctx.config.bool('scale', true) ? ctx.weight('gamma').values : new Float32Array(channels).fill(1);
  const beta = ctx.config.bool('center', true) ? ctx.weight('beta').values : new Float32Array(channels).fill(0);
  const axis = graphAxis(ctx, x, -1);
  if (axis === 1) {
    // ONNX BatchNormalization normalizes axis 1: NCHW images and [batch, features].
    const inputs = [x.name, ctx.initializer('gamma', [channels], () => gamma), ctx.initializer('beta', [channels], () => beta), ctx.initializer('moving_mean', [channels], () => mean), ctx.initializer('moving_variance', [channels], () => variance)];
    return { ...x, name: ctx.graph.node('BatchNormalization', inputs, ctx.layerName, { epsilon: { float: epsilon } }), shape: ctx.outputShape };
  }
  // Channels last on another rank (e.g. [batch, steps, features]): the same affine map, broadcast on the last axis.
  const scale = Float32Array.from(gamma, (g, c) => g / Math.sqrt(variance[c] + epsilon));
  const shift = Float32Array.from(beta, (b, c) => b - mean[c] * scale[c]);
  const scaled = ctx.graph.node('Mul', [x.name, ctx.initializer('scale', [channels], () => scale)], ctx.layerName);
  return { ...x, name: ctx.graph.node('Add', [scaled, ctx.initializer('shift', [channels], () => shift)], ctx.layerName), shape: ctx.outputShape };
}

function dense(ctx: LayerContext): GraphValue {
  const x = toKerasLayout(ctx, single(ctx));
  const kernel = ctx.weight('kernel');
  const w = ctx.initializer('kernel', kernel.shape, () => kernel.values);
  const bias = optionalBias(ctx);
  let y: string;
  if (x.shape.length === 2) {
    y = ctx.graph.node('Gemm', bias === undefined ? [x.name, w] : [x.name, w, bias], ctx.layerName);
  } else {
    // Keras applies Dense to the last axis of any rank.
    y = ctx.graph.node('MatMul', [x.name, w], ctx.layerName);
    if (bias !== undefined) y = ctx.graph.node('Add', [y, bias], ctx.layerName);
  }
  return toGraphLayout(ctx, fusedActivation(ctx, { name: y, shape: ctx.outputShape, layout: 'keras' }));
}

function flatten(ctx: LayerContext): GraphValue {
  if (ctx.config.raw('dataFormat') !== undefined) ctx.config.choice('dataFormat', ['channelsLast'], 'channelsLast');
  // NHWC order, as Keras flattens; flattening the NCHW tensor would scramble the features.
  const x = toKerasLayout(ctx, single(ctx));
  return { name: ctx.graph.node('Flatten', [x.name], ctx.layerName, { axis: 1 }), shape: ctx.outputShape, layout: 'keras' };
}

function reshape(ctx: LayerContext): GraphValue {
  const x = toKerasLayout(ctx, single(ctx));
  const target = ctx.config.raw('targetShape');
  // tfjs stores the one inferred dimension (-1 in Keras) as null.
  const dims = Array.isArray(target) ? target.map((d) => (d === null ? -1 : d)) : [];
  if (!Array.isArray(target) || !dims.every((d) => typeof d === 'number' && Number.isInteger(d) && (d > 0 || d === -1)) || dims.filter((d) => d === -1).length > 1) {
    throw ctx.unsupported(`targetShape ${JSON.stringify(target)} is not supported; expected whole numbers, one of which may be -1`);
  }
  // 0 keeps the batch size as it is.
  const y = ctx.graph.node('Reshape', [x.name, ctx.graph.int64Vector([0, ...(dims as number[])])], ctx.layerName);
  return toGraphLayout(ctx, { name: y, shape: ctx.outputShape, layout: 'keras' });
}

/** Removed at inference: the output is the input. */
function identity(ctx: LayerContext): GraphValue {
  return single(ctx);
}

/** Element-wise merges: every input in the same layout; ONNX broadcasting matches Keras' for equal ranks. */
function merge(opType: 'Add' | 'Mul' | 'Mean' | 'Max' | 'Min', variadic: boolean): LayerRule['convert'] {
  return (ctx) => {
    if (ctx.inputs.length < 2) throw ctx.unsupported(`it has ${ctx.inputs.length} inputs; expected 2 or more`);
    const rank = ctx.inputs[0].shape.length;
    if (ctx.inputs.some((v) => v.shape.length !== rank)) {
      throw ctx.unsupported(`its inputs have different ranks (${ctx.inputs.map((v) => `[${v.shape.join(', ')}]`).join(', ')}); expected equal ranks`);
    }
    const inputs = ctx.inputs.map((v) => toGraphLayout(ctx, v));
    const layout = inputs[0].layout;
    let y: string;
    if (variadic) {
      y = ctx.graph.node(opType, inputs.map((v) => v.name), ctx.layerName);
    } else {
      y = inputs.slice(1).reduce((acc, v) => ctx.graph.node(opType, [acc, v.name], ctx.layerName), inputs[0].name);
    }
    return { name: y, shape: ctx.outputShape, layout };
  };
}

function concatenate(ctx: LayerContext): GraphValue {
  if (ctx.inputs.length < 2) throw ctx.unsupported(`it has ${ctx.inputs.length} inputs; expected 2 or more`);
  const inputs = ctx.inputs.map((v) => toGraphLayout(ctx, v));
  const axis = graphAxis(ctx, inputs[0], ctx.config.number('axis', -1));
  return { name: ctx.graph.node('Concat', inputs.map((v) => v.name), ctx.layerName, { axis }), shape: ctx.outputShape, layout: inputs[0].layout };
}

function zeroPadding(ctx: LayerContext): GraphValue {
  const x = image(ctx);
  const padding = ctx.config.raw('padding');
  const pairs = Array.isArray(padding) && padding.length === 2 && padding.every((p) => Array.isArray(p) && p.length === 2) ? (padding as number[][]) : undefined;
  if (pairs === undefined || !pairs.flat().every((p) => Number.isInteger(p) && p >= 0)) {
    throw ctx.unsupported(`padding ${JSON.stringify(padding)} is not supported; expected [[top, bottom], [left, right]]`);
  }
  const [[top, bottom], [left, right]] = pairs;
  const pads = ctx.graph.int64Vector([0, 0, top, left, 0, 0, bottom, right]);
  return nchwOutput(ctx, ctx.graph.node('Pad', [x.name, pads], ctx.layerName, { mode: 'constant' }));
}

export const LAYER_TABLE: LayerTable = {
  InputLayer: {
    onnx: 'graph input (NHWC), transposed to NCHW when it is an image',
    convert: (ctx) => {
      const dtype = ctx.config.string('dtype', 'float32');
      if (dtype !== 'float32') throw ctx.unsupported(`dtype "${dtype}" is not supported; expected float32`);
      return toGraphLayout(ctx, single(ctx));
    },
  },
  Conv2D: { onnx: 'Conv (+ activation)', convert: (ctx) => convLayer(ctx, false) },
  DepthwiseConv2D: {
    onnx: 'Conv with group = channels (+ activation)',
    convert: (ctx) => {
      // tfjs-layers 4.x computes DepthwiseConv2D without its dilationRate (a TODO in its source), so such a
      // model means one thing in tfjs and another in Keras; refuse rather than pick one silently.
      if (ctx.config.ints('dilationRate', 2, 1).some((d) => d !== 1)) {
        throw ctx.unsupported('dilationRate other than 1 is not supported: tfjs-layers ignores it for DepthwiseConv2D, so the trained model and Keras disagree');
      }
      return convLayer(ctx, true);
    },
  },
  SeparableConv2D: {
    onnx: 'Conv with group = channels, then a 1x1 Conv (+ activation)',
    convert: (ctx) => {
      const x = image(ctx);
      const kernel = ctx.config.ints('kernelSize', 2);
      const strides = ctx.config.ints('strides', 2, 1);
      const dilations = ctx.config.ints('dilationRate', 2, 1);
      const padding = ctx.config.choice('padding', ['same', 'valid'] as const, 'valid');
      // Strides, padding and dilation belong to the depthwise step; the pointwise step is a plain 1x1 convolution.
      const depthwise = convolution(ctx, x, 'depthwise_kernel', true, kernel, strides, dilations, padding, undefined, `${ctx.layerName}/depthwise`);
      const mid: GraphValue = { name: depthwise, shape: [null, null, null, null], layout: 'nchw' };
      const y = convolution(ctx, mid, 'pointwise_kernel', false, [1, 1], [1, 1], [1, 1], 'valid', optionalBias(ctx), `${ctx.layerName}/pointwise`);
      return fusedActivation(ctx, nchwOutput(ctx, y));
    },
  },
  MaxPooling2D: { onnx: 'MaxPool', convert: (ctx) => pooling(ctx, 'MaxPool') },
  AveragePooling2D: { onnx: 'AveragePool (padding not counted)', convert: (ctx) => pooling(ctx, 'AveragePool') },
  GlobalAveragePooling2D: { onnx: 'GlobalAveragePool, Flatten', convert: (ctx) => globalPooling(ctx, 'GlobalAveragePool') },
  GlobalMaxPooling2D: { onnx: 'GlobalMaxPool, Flatten', convert: (ctx) => globalPooling(ctx, 'GlobalMaxPool') },
  HorizontalFlip: { onnx: 'Gather of the width axis in reverse order', convert: horizontalFlip },
  Temperature: { onnx: 'Max, Log, Mul by 1/T, Softmax (for one unit: the logit, Mul, Sigmoid)', convert: temperature },
  BatchNormalization: { onnx: 'BatchNormalization (inference, moving statistics)', convert: batchNormalization },
  Dense: { onnx: 'Gemm, or MatMul + Add above rank 2 (+ activation)', convert: dense },
  Flatten: { onnx: 'Transpose to NHWC, Flatten', convert: flatten },
  Reshape: { onnx: 'Transpose to NHWC, Reshape', convert: reshape },
  Dropout: { onnx: 'nothing (inference)', convert: identity },
  SpatialDropout1D: { onnx: 'nothing (inference)', convert: identity },
  SpatialDropout2D: { onnx: 'nothing (inference)', convert: identity },
  GaussianNoise: { onnx: 'nothing (inference)', convert: identity },
  GaussianDropout: { onnx: 'nothing (inference)', convert: identity },
  AlphaDropout: { onnx: 'nothing (inference)', convert: identity },
  Activation: { onnx: 'the activation', convert: (ctx) => applyActivation(ctx, single(ctx), ctx.config.string('activation')) },
  ReLU: {
    onnx: 'Relu, or Clip(0, maxValue)',
    convert: (ctx) => {
      const x = single(ctx);
      const maxValue = ctx.config.raw('maxValue');
      if (maxValue === null || maxValue === undefined) return { ...x, name: ctx.graph.node('Relu', [x.name], ctx.layerName) };
      return { ...x, name: ctx.graph.node('Clip', [x.name, ctx.graph.floatScalar(0), ctx.graph.floatScalar(ctx.config.number('maxValue'))], ctx.layerName) };
    },
  },
  LeakyReLU: {
    onnx: 'LeakyRelu',
    convert: (ctx) => {
      const x = single(ctx);
      return { ...x, name: ctx.graph.node('LeakyRelu', [x.name], ctx.layerName, { alpha: { float: ctx.config.number('alpha', 0.3) } }) };
    },
  },
  ELU: {
    onnx: 'Elu',
    convert: (ctx) => {
      const x = single(ctx);
      return { ...x, name: ctx.graph.node('Elu', [x.name], ctx.layerName, { alpha: { float: ctx.config.number('alpha', 1) } }) };
    },
  },
  Softmax: {
    onnx: 'Softmax',
    convert: (ctx) => {
      const x = single(ctx);
      const axisValue = ctx.config.raw('axis');
      const axis = Array.isArray(axisValue) && axisValue.length === 1 ? axisValue[0] : axisValue ?? -1;
      if (typeof axis !== 'number') throw ctx.unsupported(`axis ${JSON.stringify(axisValue)} is not supported; expected one axis`);
      return { ...x, name: ctx.graph.node('Softmax', [x.name], ctx.layerName, { axis: graphAxis(ctx, x, axis) }) };
    },
  },
  Add: { onnx: 'Add', convert: merge('Add', false) },
  Multiply: { onnx: 'Mul', convert: merge('Mul', false) },
  Average: { onnx: 'Mean', convert: merge('Mean', true) },
  Maximum: { onnx: 'Max', convert: merge('Max', true) },
  Minimum: { onnx: 'Min', convert: merge('Min', true) },
  Concatenate: { onnx: 'Concat (axis moved to NCHW)', convert: concatenate },
  ZeroPadding2D: { onnx: 'Pad (constant 0)', convert: zeroPadding },
};

/** "Activation, Add, ..." for error messages. */
export function supportedLayerNames(table: LayerTable = LAYER_TABLE): string {
  return Object.keys(table).sort().join(', ');
}

/** One line per supported layer class: what it becomes; then the activations. */
export function describeSupportedLayers(table: LayerTable = LAYER_TABLE): string {
  const layers = Object.entries(table).map(([name, rule]) => `${name.padEnd(24)} ${rule.onnx}`);
  return [...layers, '', `Activations (Activation layer and fused): ${Object.keys(ACTIVATIONS).join(', ')}`].join('\n');
}
