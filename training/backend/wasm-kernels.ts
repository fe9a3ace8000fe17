/**
 * Training kernels for the tfjs `wasm` backend.
 *
 * The stock wasm backend (tfjs-backend-wasm 4.22) trains conv nets slowly or not at all: it has no
 * `Conv2DBackpropFilter`; its `Conv2DBackpropInput` is a scalar loop; its `MaxPoolGrad` is a scalar loop
 * that is also wrong for windows whose values are all <= 0 (its search starts at FLT_MIN and never moves)
 * and gives ties to the last maximum where the cpu backend gives them to the first; its `BatchMatMul`
 * uses XNNPACK only without transposes, which a dense layer's gradients need; and its broadcasting `Add`
 * (a layer's bias) is ~30x slower than an add of equal shapes.
 *
 * Both convolution gradients are convolutions themselves, so they run on the forward `Conv2D` kernel
 * (XNNPACK), an order of magnitude faster than scalar loops:
 *
 * - dW[kh,kw,ci,co] = sum over n,oh,ow of x[n, oh*sh+kh-pt, ow*sw+kw-pl, ci] * dy[n,oh,ow,co]
 *   is Conv2D(x as [Ci,H,W,N], dy as a filter [OH,OW,N,Co], dilation = stride, pad top/left = pt/pl),
 *   an output [Ci,KH,KW,Co]. Neighbouring columns of dy are folded into the filter's output channels
 *   (see `widthFold`) so that XNNPACK does not pad 2 or 4 channels to 8.
 * - dx is Conv2D(dy with (stride-1) zeros between its pixels, the filter flipped in space with its
 *   in/out channels swapped, pad top/left = K-1-pt / K-1-pl), stride 1.
 *
 * `MaxPoolGrad` and the bias `Add` are single JavaScript passes over the wasm heap; `MaxPoolGrad` has the
 * cpu backend's semantics (each window's first strictly greatest value, in row-major order, takes its
 * gradient). Transposed matrix products transpose one operand first and take the XNNPACK path.
 *
 * Kernels call other wasm kernels' functions directly with the backend, as tfjs-backend-wasm's own
 * kernels do, and free every intermediate with `backend.disposeData`. Cases a kernel does not handle go
 * to the stock kernel it replaces.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type {
  BatchMatMulAttrs,
  Conv2DAttrs,
  Conv2DBackpropFilterAttrs,
  Conv2DBackpropInputAttrs,
  KernelConfig,
  KernelFunc,
  MaxPoolGradAttrs,
  NamedAttrMap,
  NamedTensorInfoMap,
  TensorInfo,
} from '@tensorflow/tfjs';

const BACKEND = 'wasm';

/** Which kernels `registerWasmTrainingKernels` installs. */
export type WasmKernelSet =
  /** The kernels described above (the default). */
  | 'fast'
  /**
   * The stock wasm kernels, plus the one kernel training cannot do without: Conv2DBackpropFilter as a
   * depth-1 view of the stock Conv3DBackpropFilterV2 (slow; stride 1 only, as that kernel is wrong for
   * larger strides). For before/after comparisons, such as `npm run bench:train -- --wasm-kernels reference`.
   */
  | 'reference';

/** The kernels this module replaces or adds. */
export const WASM_TRAINING_KERNEL_NAMES = ['Conv2DBackpropFilter', 'Conv2DBackpropInput', 'MaxPoolGrad', 'BatchMatMul', 'Add'] as const;
type TrainingKernelName = (typeof WASM_TRAINING_KERNEL_NAMES)[number];

/** The stock wasm kernels we replace, captured the first time we register: our fallbacks. */
let stockKernels: Partial<Record<TrainingKernelName, KernelConfig>> | undefined;
let installedSet: WasmKernelSet | undefined;

/**
 * Installs training kernels on the `wasm` backend (see `WasmKernelSet`). Idempotent: registering the set
 * that is already installed does nothing. Works before or after `tf.setBackend('wasm')`.
 */
export function registerWasmTrainingKernels(set: WasmKernelSet = 'fast'): void {
  if (set !== 'fast' && set !== 'reference') {
    throw new Error(`Unsupported wasm kernel set "${String(set)}"; expected one of: fast, reference`);
  }
  if (installedSet === set) return;
  if (stockKernels === undefined) {
    stockKernels = {};
    for (const name of WASM_TRAINING_KERNEL_NAMES) {
      const config = findKernel(name);
      if (config !== undefined) stockKernels[name] = config;
    }
  }
  const stock = stockKernels;
  const configs: KernelConfig[] =
    set === 'fast'
      ? [
          { kernelName: 'Conv2DBackpropFilter', backendName: BACKEND, kernelFunc: conv2DBackpropFilterFast },
          replacing('Conv2DBackpropInput', conv2DBackpropInputFast),
          replacing('MaxPoolGrad', maxPoolGradFast),
          replacing('BatchMatMul', batchMatMulFast),
          replacing('Add', addFast),
        ]
      : [
          { kernelName: 'Conv2DBackpropFilter', backendName: BACKEND, kernelFunc: conv2DBackpropFilterReference },
          ...(['Conv2DBackpropInput', 'MaxPoolGrad', 'BatchMatMul', 'Add'] as const).flatMap((name) => {
            const config = stock[name];
            return config === undefined ? [] : [config];
          }),
        ];
  for (const config of configs) {
    // unregister first: registerKernel over an existing key warns on every call
    if (findKernel(config.kernelName) !== undefined) tf.unregisterKernel(config.kernelName, BACKEND);
    tf.registerKernel(config);
  }
  installedSet = set;
}

/** Our kernel under the stock kernel's name, keeping its setup (the C function it binds) for fallbacks. */
function replacing(name: TrainingKernelName, kernelFunc: KernelFunc): KernelConfig {
  const stock = stockKernels?.[name];
  return { kernelName: name, backendName: BACKEND, kernelFunc, setupFunc: stock?.setupFunc, disposeFunc: stock?.disposeFunc };
}

function findKernel(name: string): KernelConfig | undefined {
  // getKernel is typed as always returning a config but returns undefined for unknown kernels
  return tf.getKernel(name, BACKEND) as KernelConfig | undefined;
}

// ---------------------------------------------------------------------------------------------------
// Helpers: run a wasm kernel on TensorInfos; every TensorInfo they return must be released with `free`.

interface KernelArgs {
  inputs: NamedTensorInfoMap;
  backend: {};
  attrs?: NamedAttrMap;
}

function wasmBackend(args: KernelArgs): BackendWasm {
  return args.backend as BackendWasm;
}

/** The engine passes each kernel the attributes of its op, typed as the generic NamedAttrMap. */
function attrsOf<T>(args: KernelArgs): T {
  return args.attrs as unknown as T;
}

function runKernel(backend: BackendWasm, name: string, inputs: NamedTensorInfoMap, attrs: object): TensorInfo {
  const config = findKernel(name);
  if (config === undefined) throw new Error(`Kernel "${name}" is not registered for the wasm backend`);
  // kernel attributes are plain objects of the kernel's Attrs interface; NamedAttrMap is their index-signature form
  const out = config.kernelFunc({ inputs, backend, attrs: attrs as NamedAttrMap });
  if (Array.isArray(out)) throw new Error(`Kernel "${name}" returned ${out.length} outputs; expected one`);
  return out;
}

function free(backend: BackendWasm, ...infos: TensorInfo[]): void {
  for (const info of infos) backend.disposeData(info.dataId);
}

function transpose(backend: BackendWasm, x: TensorInfo, perm: number[]): TensorInfo {
  return runKernel(backend, 'Transpose', { x }, { perm });
}

/** A reshaped view: shares x's data (the wasm Reshape kernel only adds a reference). */
function reshape(backend: BackendWasm, x: TensorInfo, shape: number[]): TensorInfo {
  return runKernel(backend, 'Reshape', { x }, { shape });
}

function conv2d(
  backend: BackendWasm,
  x: TensorInfo,
  filter: TensorInfo,
  dilations: [number, number],
  pad: [number, number, number, number],
): TensorInfo {
  const [top, bottom, left, right] = pad;
  const attrs: Conv2DAttrs = {
    strides: 1,
    pad: [[0, 0], [top, bottom], [left, right], [0, 0]],
    dataFormat: 'NHWC',
    dilations,
  };
  return runKernel(backend, 'Conv2D', { x, filter }, attrs);
}

function asPair(value: number | [number, number]): [number, number] {
  return typeof value === 'number' ? [value, value] : value;
}

// ---------------------------------------------------------------------------------------------------
// Conv2DBackpropFilter

function conv2DBackpropFilterFast(args: KernelArgs): TensorInfo {
  const backend = wasmBackend(args);
  const attrs = attrsOf<Conv2DBackpropFilterAttrs>(args);
  let { x, dy } = args.inputs as { x: TensorInfo; dy: TensorInfo };
  const channelsFirst = attrs.dataFormat === 'NCHW';
  const owned: TensorInfo[] = [];
  if (channelsFirst) {
    x = transpose(backend, x, [0, 2, 3, 1]);
    dy = transpose(backend, dy, [0, 2, 3, 1]);
    owned.push(x, dy);
  }
  const info = tf.backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number],
    attrs.filterShape,
    attrs.strides,
    1,
    channelsFirst ? toChannelsLastPad(attrs.pad) : attrs.pad,
    attrs.dimRoundingMode,
  );
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, outChannels } = info;
  const { filterHeight, filterWidth, strideHeight, strideWidth } = info;
  const padTop = info.padInfo.top;
  const padLeft = info.padInfo.left;
  const fold = widthFold(outWidth, outChannels, filterWidth, strideWidth);
  // Output columns q = kw + j*sw for j < fold (see `widthFold`); pad bottom/right so the output covers
  // them, any excess (as in 'valid' with a stride that does not divide the input) is ignored below.
  const needHeight = filterHeight;
  const needWidth = filterWidth + (fold - 1) * strideWidth;
  const dilatedFilterWidth = (outWidth / fold - 1) * fold * strideWidth + 1;
  const padBottom = Math.max(0, needHeight + (outHeight - 1) * strideHeight - inHeight - padTop);
  const padRight = Math.max(0, needWidth + dilatedFilterWidth - 1 - inWidth - padLeft);

  const xT = transpose(backend, x, [3, 1, 2, 0]); // [Ci, H, W, N]
  const dyFolded = reshape(backend, dy, [batchSize, outHeight, outWidth / fold, fold * outChannels]);
  const dyT = transpose(backend, dyFolded, [1, 2, 0, 3]); // a filter [OH, OW/fold, N, fold*Co]
  const conv = conv2d(backend, xT, dyT, [strideHeight, fold * strideWidth], [padTop, padBottom, padLeft, padRight]);
  free(backend, xT, dyFolded, dyT, ...owned);

  // dW[kh, kw, ci, co] = sum over j of conv[ci, kh, kw + j*sw, j*Co + co]: a few hundred numbers
  const dw = backend.makeOutput([filterHeight, filterWidth, inChannels, outChannels], 'float32');
  const convValues = backend.typedArrayFromHeap(conv) as Float32Array;
  const dwValues = backend.typedArrayFromHeap(dw) as Float32Array;
  const [, convHeight, convWidth, convChannels] = conv.shape;
  for (let kh = 0; kh < filterHeight; kh++) {
    for (let kw = 0; kw < filterWidth; kw++) {
      for (let ci = 0; ci < inChannels; ci++) {
        for (let co = 0; co < outChannels; co++) {
          let sum = 0;
          for (let j = 0; j < fold; j++) {
            sum += convValues[((ci * convHeight + kh) * convWidth + kw + j * strideWidth) * convChannels + j * outChannels + co];
          }
          dwValues[((kh * filterWidth + kw) * inChannels + ci) * outChannels + co] = sum;
        }
      }
    }
  }
  free(backend, conv);
  return dw;
}

/** Output channels per XNNPACK f32 GEMM tile on wasm SIMD: narrower outputs are padded to this. */
const GEMM_TILE_CHANNELS = 8;

/**
 * How many neighbouring dy columns to fold into the channels of the filter that dW's convolution uses.
 * With few output channels (2 and 4 in the seed model) XNNPACK pads each filter tap to 8 channels; folding
 * `fold` columns j of dy into channel j*Co+co fills the tile and divides the filter's taps by `fold`, at
 * the price of (fold-1)*stride extra output columns. Picks the divisor of OW with the least work.
 */
function widthFold(outWidth: number, outChannels: number, filterWidth: number, strideWidth: number): number {
  let best = 1;
  let bestCost = Infinity;
  for (let fold = 1; fold <= GEMM_TILE_CHANNELS; fold++) {
    if (outWidth % fold !== 0) continue;
    const channels = Math.ceil((fold * outChannels) / GEMM_TILE_CHANNELS) * GEMM_TILE_CHANNELS;
    const cost = ((filterWidth + (fold - 1) * strideWidth) / fold) * channels;
    if (cost < bestCost) {
      best = fold;
      bestCost = cost;
    }
  }
  return best;
}

/** The same explicit padding written for NHWC, so it applies to our transposed inputs. */
function toChannelsLastPad(pad: Conv2DBackpropFilterAttrs['pad']): Conv2DBackpropFilterAttrs['pad'] {
  if (typeof pad !== 'object') return pad;
  return [pad[0], pad[2], pad[3], pad[1]];
}

/** Conv2DBackpropFilter as the stock Conv3DBackpropFilterV2 on depth-1 views: correct, slow. */
function conv2DBackpropFilterReference(args: KernelArgs): TensorInfo {
  const backend = wasmBackend(args);
  const attrs = attrsOf<Conv2DBackpropFilterAttrs>(args);
  const { x, dy } = args.inputs as { x: TensorInfo; dy: TensorInfo };
  const [sh, sw] = asPair(attrs.strides);
  // the stock Conv3DBackpropFilterV2 (tfjs-backend-wasm 4.22) gives wrong results for strides above 1
  if (attrs.dataFormat === 'NCHW' || typeof attrs.pad === 'object' || attrs.dimRoundingMode !== undefined || sh !== 1 || sw !== 1) {
    throw new Error('The reference wasm Conv2DBackpropFilter supports only NHWC, stride 1 and pad "same", "valid" or a number');
  }
  const x5 = reshape(backend, x, [x.shape[0], 1, ...x.shape.slice(1)]);
  const dy5 = reshape(backend, dy, [dy.shape[0], 1, ...dy.shape.slice(1)]);
  const dw5 = runKernel(backend, 'Conv3DBackpropFilterV2', { x: x5, dy: dy5 }, {
    strides: [1, 1, 1],
    pad: attrs.pad,
    filterShape: [1, ...attrs.filterShape],
  });
  const dw = reshape(backend, dw5, attrs.filterShape);
  free(backend, x5, dy5, dw5);
  return dw;
}

// ---------------------------------------------------------------------------------------------------
// Conv2DBackpropInput

function conv2DBackpropInputFast(args: KernelArgs): TensorInfo {
  const backend = wasmBackend(args);
  const attrs = attrsOf<Conv2DBackpropInputAttrs>(args);
  const { dy, filter } = args.inputs as { dy: TensorInfo; filter: TensorInfo };
  const stock = stockKernels?.Conv2DBackpropInput;
  const fallback = (): TensorInfo => {
    if (stock === undefined) throw new Error('The stock wasm Conv2DBackpropInput kernel is missing');
    return stock.kernelFunc(args) as TensorInfo;
  };
  if (attrs.dataFormat === 'NCHW' || dy.dtype !== 'float32' || filter.dtype !== 'float32') return fallback();

  const info = tf.backend_util.computeConv2DInfo(
    attrs.inputShape,
    filter.shape as [number, number, number, number],
    attrs.strides,
    1,
    attrs.pad,
    attrs.dimRoundingMode,
  );
  const { inHeight, inWidth, outHeight, outWidth, filterHeight, filterWidth, strideHeight, strideWidth } = info;
  // dy with (stride - 1) zeros between pixels is (OH - 1) * stride + 1 high
  const dilatedHeight = (outHeight - 1) * strideHeight + 1;
  const dilatedWidth = (outWidth - 1) * strideWidth + 1;
  const padTop = filterHeight - 1 - info.padInfo.top;
  const padLeft = filterWidth - 1 - info.padInfo.left;
  const padBottom = inHeight - dilatedHeight + info.padInfo.top;
  const padRight = inWidth - dilatedWidth + info.padInfo.left;
  // explicit paddings wider than the filter would need cropping: rare, leave them to the stock kernel
  if (Math.min(padTop, padLeft, padBottom, padRight) < 0) return fallback();

  const flipped = runKernel(backend, 'Reverse', { x: filter }, { dims: [0, 1] });
  const filterT = transpose(backend, flipped, [0, 1, 3, 2]); // [KH, KW, Co, Ci]
  free(backend, flipped);
  let source = dy;
  let ownsSource = false;
  if (strideHeight > 1 || strideWidth > 1) {
    source = dilate(backend, dy, strideHeight, strideWidth, dilatedHeight, dilatedWidth);
    ownsSource = true;
  }
  const dx = conv2d(backend, source, filterT, [1, 1], [padTop, padBottom, padLeft, padRight]);
  free(backend, filterT);
  if (ownsSource) free(backend, source);
  return dx;
}

/** [N,OH,OW,C] -> [N,(OH-1)*sh+1,(OW-1)*sw+1,C] with (stride - 1) zeros between pixels. */
function dilate(backend: BackendWasm, dy: TensorInfo, sh: number, sw: number, height: number, width: number): TensorInfo {
  const [n, oh, ow, c] = dy.shape;
  const view = reshape(backend, dy, [n, oh, 1, ow, 1, c]);
  const spaced = runKernel(backend, 'PadV2', { x: view }, {
    paddings: [[0, 0], [0, 0], [0, sh - 1], [0, 0], [0, sw - 1], [0, 0]],
    constantValue: 0,
  });
  free(backend, view);
  const flat = reshape(backend, spaced, [n, oh * sh, ow * sw, c]);
  free(backend, spaced);
  if (height === oh * sh && width === ow * sw) return flat;
  const cropped = runKernel(backend, 'Slice', { x: flat }, { begin: [0, 0, 0, 0], size: [n, height, width, c] });
  free(backend, flat);
  return cropped;
}

// ---------------------------------------------------------------------------------------------------
// MaxPoolGrad

function maxPoolGradFast(args: KernelArgs): TensorInfo {
  const backend = wasmBackend(args);
  const attrs = attrsOf<MaxPoolGradAttrs>(args);
  const { dy, input } = args.inputs as { dy: TensorInfo; input: TensorInfo };
  if (dy.dtype !== 'float32' || input.dtype !== 'float32') {
    const stock = stockKernels?.MaxPoolGrad;
    if (stock === undefined) throw new Error('The stock wasm MaxPoolGrad kernel is missing');
    return stock.kernelFunc(args) as TensorInfo;
  }
  const info = tf.backend_util.computePool2DInfo(
    input.shape as [number, number, number, number],
    attrs.filterSize,
    attrs.strides,
    1,
    attrs.pad,
    attrs.dimRoundingMode,
  );
  const dx = backend.makeOutput(input.shape, 'float32');
  // views are taken after makeOutput, which may grow (and so detach) the wasm heap
  const xs = backend.typedArrayFromHeap(input) as Float32Array;
  const dys = backend.typedArrayFromHeap(dy) as Float32Array;
  const dxs = backend.typedArrayFromHeap(dx) as Float32Array;
  dxs.fill(0);
  maxPoolGradInto(xs, dys, dxs, info);
  return dx;
}

/**
 * Adds each dy to the input position of its window's first strictly greatest value (row-major order,
 * padding excluded), as the cpu backend does; a window with no value above -Infinity gets nothing.
 */
function maxPoolGradInto(xs: Float32Array, dys: Float32Array, dxs: Float32Array, info: tf.backend_util.Conv2DInfo): void {
  const { batchSize, inHeight, inWidth, inChannels: channels, outHeight, outWidth } = info;
  const { strideHeight, strideWidth, filterHeight, filterWidth } = info;
  const padTop = info.padInfo.top;
  const padLeft = info.padInfo.left;
  const rowStep = inWidth * channels;
  let dyAt = 0;
  for (let b = 0; b < batchSize; b++) {
    const batchAt = b * inHeight * rowStep;
    for (let oh = 0; oh < outHeight; oh++) {
      const rowStart = oh * strideHeight - padTop;
      const rowFrom = Math.max(0, rowStart);
      const rowTo = Math.min(inHeight, rowStart + filterHeight);
      for (let ow = 0; ow < outWidth; ow++) {
        const colStart = ow * strideWidth - padLeft;
        const colFrom = Math.max(0, colStart);
        const colTo = Math.min(inWidth, colStart + filterWidth);
        for (let c = 0; c < channels; c++, dyAt++) {
          let best = -Infinity;
          let bestAt = -1;
          for (let r = rowFrom; r < rowTo; r++) {
            const rowAt = batchAt + r * rowStep + c;
            for (let col = colFrom; col < colTo; col++) {
              const at = rowAt + col * channels;
              const value = xs[at];
              if (value > best) {
                best = value;
                bestAt = at;
              }
            }
          }
          if (bestAt >= 0) dxs[bestAt] += dys[dyAt];
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// BatchMatMul

/**
 * The stock kernel runs XNNPACK only for a single untransposed product and a scalar triple loop
 * otherwise, which is what a dense layer's gradients (dy·Wᵀ and xᵀ·dy) ask for. Transposing the operand
 * first (a copy of a weight-sized matrix) and running the XNNPACK path is several times faster.
 */
function batchMatMulFast(args: KernelArgs): TensorInfo {
  const backend = wasmBackend(args);
  const { transposeA, transposeB } = attrsOf<BatchMatMulAttrs>(args);
  const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
  const stock = stockKernels?.BatchMatMul;
  if (stock === undefined) throw new Error('The stock wasm BatchMatMul kernel is missing');
  const isSingle = (t: TensorInfo): boolean => t.shape.slice(0, -2).every((d) => d === 1);
  if ((!transposeA && !transposeB) || !isSingle(a) || !isSingle(b) || a.dtype !== 'float32' || b.dtype !== 'float32') {
    return stock.kernelFunc(args) as TensorInfo;
  }
  const a2 = transposeA ? transposeLastTwo(backend, a) : a;
  const b2 = transposeB ? transposeLastTwo(backend, b) : b;
  const attrs: BatchMatMulAttrs = { transposeA: false, transposeB: false };
  const out = stock.kernelFunc({ inputs: { a: a2, b: b2 }, backend, attrs: attrs as unknown as NamedAttrMap }) as TensorInfo;
  if (transposeA) free(backend, a2);
  if (transposeB) free(backend, b2);
  return out;
}

/** [1.., R, C] -> [1.., C, R] */
function transposeLastTwo(backend: BackendWasm, x: TensorInfo): TensorInfo {
  const rank = x.shape.length;
  const [rows, cols] = x.shape.slice(-2);
  const flat = reshape(backend, x, [rows, cols]);
  const flipped = transpose(backend, flat, [1, 0]);
  free(backend, flat);
  const out = reshape(backend, flipped, [...x.shape.slice(0, rank - 2), cols, rows]);
  free(backend, flipped);
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Add

/**
 * A layer's bias add, [..., C] + [C]: the stock kernel's XNNPACK broadcast path takes ~30x as long as an
 * add of two equal shapes (3 ms for the seed model's first conv output), while one JavaScript pass over
 * the heap takes a fraction of it. Everything else goes to the stock kernel.
 */
function addFast(args: KernelArgs): TensorInfo {
  const backend = wasmBackend(args);
  const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
  const stock = stockKernels?.Add;
  if (stock === undefined) throw new Error('The stock wasm Add kernel is missing');
  const bias = isChannelVectorOf(b, a) ? b : isChannelVectorOf(a, b) ? a : undefined;
  if (bias === undefined) return stock.kernelFunc(args) as TensorInfo;
  const values = bias === b ? a : b;
  const out = backend.makeOutput(values.shape, 'float32');
  // views are taken after makeOutput, which may grow (and so detach) the wasm heap
  const outValues = backend.typedArrayFromHeap(out) as Float32Array;
  const biasValues = backend.typedArrayFromHeap(bias) as Float32Array;
  outValues.set(backend.typedArrayFromHeap(values) as Float32Array);
  const channels = biasValues.length;
  for (let c = 0; c < channels; c++) {
    const add = biasValues[c];
    for (let i = c; i < outValues.length; i += channels) outValues[i] += add;
  }
  return out;
}

/** Whether `vector` is float32 [C] (or [1, ..., 1, C]) and `values` a larger float32 [..., C]. */
function isChannelVectorOf(vector: TensorInfo, values: TensorInfo): boolean {
  if (vector.dtype !== 'float32' || values.dtype !== 'float32') return false;
  const channels = values.shape[values.shape.length - 1];
  const size = vector.shape.reduce((n, d) => n * d, 1);
  return (
    values.shape.length >= 2 &&
    vector.shape.length >= 1 &&
    vector.shape.length <= values.shape.length &&
    vector.shape[vector.shape.length - 1] === channels &&
    size === channels &&
    values.shape.reduce((n, d) => n * d, 1) > channels
  );
}
