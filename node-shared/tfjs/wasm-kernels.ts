/**
 * Training kernels for the tfjs `wasm` backend.
 *
 * The stock wasm backend (tfjs-backend-wasm 4.22) trains conv nets slowly or not at all: it has no
 * `Conv2DBackpropFilter`; its `Conv2DBackpropInput` is a scalar loop; its `MaxPoolGrad` is a scalar loop
 * that is also wrong for windows whose values are all <= 0 (its search starts at FLT_MIN and never moves)
 * and gives ties to the last maximum where the cpu backend gives them to the first; its `BatchMatMul`
 * uses XNNPACK only without transposes, which a dense layer's gradients need; its broadcasting `Add`,
 * `Sub` and `Multiply` (biases, BatchNormalization) are 2-30x slower than ops on equal shapes; its `Sum`
 * and `Mean` over leading axes transpose first; its `Tile` costs ~50 ns an element; and `Identity`, which
 * tfjs emits dozens of times a step, copies.
 *
 * Convolution gradients, by what the layer's channel counts allow:
 *
 * - 8k output channels (dW) or 8k input channels (dx): SIMD loops over rows of pixels in place on the
 *   heap (./wasm-simd-kernels.wat), a filter tap at a time: dW[kh,kw] += x[row]ᵀ·dy[row] and
 *   dx[row] += dy[row]·w[kh,kw]ᵀ. Strides skip pixels instead of multiplying zeros, padding is never
 *   materialised, and nothing is transposed or packed; they run at or above XNNPACK's forward speed.
 * - otherwise dW[kh,kw,ci,co] = sum over n,oh,ow of x[n, oh*sh+kh-pt, ow*sw+kw-pl, ci] * dy[n,oh,ow,co]
 *   is Conv2D(x as [Ci,H,W,N], dy as a filter [OH,OW,N,Co], dilation = stride, pad top/left = pt/pl),
 *   an output [Ci,KH,KW,Co] (XNNPACK). Neighbouring columns of dy are folded into the filter's output
 *   channels (see `widthFold`) so that XNNPACK does not pad 2 or 4 channels to 8.
 * - otherwise dx is Conv2D(dy, the filter flipped in space with its in/out channels swapped, pad
 *   top/left = K-1-pt / K-1-pl) for stride 1, and for larger strides one matrix product of dy with the
 *   filter followed by a col2im pass (no zeros between dy's pixels to multiply).
 *
 * Per-channel work (Add, Sub, Multiply with a [C] vector, Sum and Mean over leading axes, FusedBatchNorm)
 * are single SIMD passes where C is a multiple of 4; `Tile` copies blocks; `Identity` and same-dtype
 * `Cast` share the input's buffer; `MaxPoolGrad` is one JavaScript pass with the cpu backend's semantics
 * (each window's first strictly greatest value, in row-major order, takes its gradient); transposed matrix
 * products transpose one operand first and take the XNNPACK path.
 *
 * Two gradients are replaced too, on the wasm backend only (gradients are global; every other backend
 * keeps tfjs-core's): Mean's, whose ones tensor is built in JavaScript, and BatchNormalization's, which
 * makes ~14 passes over x-sized tensors where 3 do. Same formulas, float32 rounding aside.
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
  CastAttrs,
  Conv2DAttrs,
  Conv2DBackpropFilterAttrs,
  Conv2DBackpropInputAttrs,
  KernelConfig,
  KernelFunc,
  FusedBatchNormAttrs,
  MaxPoolGradAttrs,
  MeanAttrs,
  SumAttrs,
  NamedAttrMap,
  NamedTensorInfoMap,
  TensorInfo,
  TileAttrs,
} from '@tensorflow/tfjs';
import { heapAddress, SIMD_FLOATS, simdKernels, type SimdKernels } from './wasm-simd.ts';

const BACKEND = 'wasm';

/** Which kernels `registerWasmTrainingKernels` installs. */
export type WasmKernelSet =
  /** The kernels described above (the default). */
  | 'fast'
  /**
   * The stock wasm kernels and tfjs-core's gradients, plus the one kernel training cannot do without:
   * Conv2DBackpropFilter as a depth-1 view of the stock Conv3DBackpropFilterV2 (slow; stride 1 only, as
   * that kernel is wrong for larger strides). For before/after comparisons, such as
   * `npm run bench:train -- --wasm-kernels reference`.
   */
  | 'reference';

/** The kernels this module replaces or adds. */
export const WASM_TRAINING_KERNEL_NAMES = [
  'Conv2DBackpropFilter',
  'Conv2DBackpropInput',
  'MaxPoolGrad',
  'BatchMatMul',
  'Add',
  'Tile',
  'Identity',
  'Cast',
  'Sum',
  'Mean',
  'Sub',
  'Multiply',
  'FusedBatchNorm',
] as const;
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
          replacing('Add', channelBinary('Add')),
          replacing('Sub', channelBinary('Sub')),
          replacing('Multiply', channelBinary('Multiply')),
          replacing('Sum', reduceRows('Sum')),
          replacing('Mean', reduceRows('Mean')),
          replacing('FusedBatchNorm', fusedBatchNormFast),
          replacing('Tile', tileFast),
          replacing('Identity', identityShared),
          replacing('Cast', castShared),
        ]
      : [
          { kernelName: 'Conv2DBackpropFilter', backendName: BACKEND, kernelFunc: conv2DBackpropFilterReference },
          ...WASM_TRAINING_KERNEL_NAMES.filter((name) => name !== 'Conv2DBackpropFilter').flatMap((name) => {
            const config = stock[name];
            return config === undefined ? [] : [config];
          }),
        ];
  for (const config of configs) {
    // unregister first: registerKernel over an existing key warns on every call
    if (findKernel(config.kernelName) !== undefined) tf.unregisterKernel(config.kernelName, BACKEND);
    tf.registerKernel(config);
  }
  stockGradients ??= { Mean: tf.getGradient('Mean'), FusedBatchNorm: tf.getGradient('FusedBatchNorm') };
  if (set === 'fast') {
    tf.registerGradient(meanGradientOnWasm(stockGradients.Mean));
    tf.registerGradient(batchNormGradientOnWasm(stockGradients.FusedBatchNorm));
  } else {
    tf.registerGradient(stockGradients.Mean);
    tf.registerGradient(stockGradients.FusedBatchNorm);
  }
  installedSet = set;
}

/** tfjs-core's gradients that we replace on wasm, captured the first time we register: used on every other backend. */
let stockGradients: { Mean: tf.GradConfig; FusedBatchNorm: tf.GradConfig } | undefined;

/**
 * Gradients are global, not per backend, so this one keeps tfjs-core's on every backend but wasm. There,
 * tfjs-core's dx = (dy reshaped * ones(x.shape)) / n builds its ones tensor in JavaScript: a fresh typed
 * array filled in a loop and copied to the heap, ~20 ms for 64x48x48x16 and 40% of a residual net's step
 * (GlobalAveragePooling and each BatchNormalization's two means). dx = broadcast(dy reshaped / n) is the
 * same values, bit for bit, through the Tile kernel.
 */
function meanGradientOnWasm(stock: tf.GradConfig): tf.GradConfig {
  return {
    kernelName: 'Mean',
    inputsToSave: ['x'],
    gradFunc: (dy, saved, attrs) => {
      const [x] = saved;
      if (tf.getBackend() !== BACKEND || Array.isArray(dy) || dy.dtype !== 'float32') return stock.gradFunc(dy, saved, attrs);
      const axes = tf.util.parseAxisParam((attrs as unknown as MeanAttrs).axis, x.shape);
      const reduceSize = axes.reduce((n, axis) => n * x.shape[axis], 1);
      const keptShape = x.shape.map((d, axis) => (axes.includes(axis) ? 1 : d));
      return { x: () => tf.broadcastTo(tf.div(tf.reshape(dy, keptShape), reduceSize), x.shape) };
    },
  };
}

/**
 * tfjs-core's BatchNormalization gradient makes ~14 passes over x-sized tensors per layer (a Tile of
 * 1/sqrt(variance) to x's shape, and each of the five gradients multiplies its own x-sized products before
 * summing them). The same formulas need three x-sized passes: dx = dy * (scale / sqrt(variance + eps)),
 * Σdy and Σdy·(x - mean) per channel (the wasm Sum, Sub and Multiply kernels here are single SIMD passes);
 * the rest is arithmetic on [C] vectors. Only for per-channel statistics, as tf.layers trains with.
 */
function batchNormGradientOnWasm(stock: tf.GradConfig): tf.GradConfig {
  return {
    kernelName: 'FusedBatchNorm',
    inputsToSave: ['x', 'mean', 'variance', 'scale'],
    gradFunc: (dy, saved, attrs) => {
      const [x, mean, variance, scale] = saved;
      const perChannel = [mean, variance, scale].every((t) => t === undefined || t === null || (t.rank === 1 && t.dtype === 'float32'));
      if (tf.getBackend() !== BACKEND || Array.isArray(dy) || dy.dtype !== 'float32' || x.dtype !== 'float32' || !perChannel) {
        return stock.gradFunc(dy, saved, attrs);
      }
      const { varianceEpsilon } = attrs as unknown as FusedBatchNormAttrs;
      const scaleValue = scale ?? tf.scalar(1);
      const axes = x.shape.slice(0, -1).map((_, axis) => axis);
      const oneOverSqrtVariance = tf.rsqrt(tf.add(variance, tf.scalar(varianceEpsilon)));
      const minusHalfRCube = tf.mul(tf.mul(tf.mul(oneOverSqrtVariance, oneOverSqrtVariance), oneOverSqrtVariance), tf.scalar(-0.5));
      const sumDy = tf.sum(dy, axes);
      const sumDyTimesCentred = tf.sum(tf.mul(dy, tf.sub(x, mean)), axes);
      return {
        x: () => tf.reshape(tf.mul(dy, tf.mul(oneOverSqrtVariance, scaleValue)), x.shape),
        mean: () => tf.reshape(tf.mul(tf.mul(tf.neg(oneOverSqrtVariance), scaleValue), sumDy), mean.shape),
        variance: () => tf.reshape(tf.mul(tf.mul(minusHalfRCube, scaleValue), sumDyTimesCentred), mean.shape),
        scale: () => tf.reshape(tf.mul(oneOverSqrtVariance, sumDyTimesCentred), mean.shape),
        offset: () => tf.reshape(sumDy, mean.shape),
      };
    },
  };
}

/** Our kernel under the stock kernel's name, keeping its setup (the C function it binds) for fallbacks. */
function replacing(name: TrainingKernelName, kernelFunc: KernelFunc): KernelConfig {
  const stock = stockKernels?.[name];
  return { kernelName: name, backendName: BACKEND, kernelFunc, setupFunc: stock?.setupFunc, disposeFunc: stock?.disposeFunc };
}

function stockKernelFunc(name: TrainingKernelName): KernelFunc {
  const stock = stockKernels?.[name];
  if (stock === undefined) throw new Error(`The stock wasm ${name} kernel is missing`);
  return stock.kernelFunc;
}

function sizeOf(shape: readonly number[]): number {
  return shape.reduce((n, d) => n * d, 1);
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
  const simd = simdKernels(backend);
  const dw =
    simd !== undefined && info.outChannels % SIMD_OUT_CHANNELS === 0
      ? conv2DBackpropFilterByRows(backend, simd, x, dy, info)
      : conv2DBackpropFilterByConv(backend, x, dy, info);
  free(backend, ...owned);
  return dw;
}

/** Output channels that the SIMD row loops handle at a time: they need a multiple of them. */
const SIMD_OUT_CHANNELS = 8;

/**
 * dW as sums of outer products over rows of pixels, in place on the heap (wasm-simd-kernels.wat): for each
 * image row, filter tap and the run of output columns whose input pixels are inside the image,
 * dW[kh,kw] += x[row pixels]ᵀ · dy[row pixels]. No transposes, no packing of a large operand, and no
 * work on padding or, for strides above 1, on skipped pixels.
 */
function conv2DBackpropFilterByRows(backend: BackendWasm, simd: SimdKernels, x: TensorInfo, dy: TensorInfo, info: tf.backend_util.Conv2DInfo): TensorInfo {
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, outChannels } = info;
  const { filterHeight, filterWidth, strideHeight, strideWidth } = info;
  const padTop = info.padInfo.top;
  const padLeft = info.padInfo.left;
  const dw = backend.makeOutput([filterHeight, filterWidth, inChannels, outChannels], 'float32');
  (backend.typedArrayFromHeap(dw) as Float32Array).fill(0);
  const xAt = heapAddress(backend, x);
  const dyAt = heapAddress(backend, dy);
  const dwAt = heapAddress(backend, dw);
  const xPixelBytes = inChannels * 4;
  const dyPixelBytes = outChannels * 4;
  const tapBytes = inChannels * outChannels * 4;
  const { first: firstColumn, count: columnCount } = visibleColumns(info);
  for (let b = 0; b < batchSize; b++) {
    for (let oh = 0; oh < outHeight; oh++) {
      const dyRowAt = dyAt + (b * outHeight + oh) * outWidth * dyPixelBytes;
      for (let kh = 0; kh < filterHeight; kh++) {
        const ih = oh * strideHeight + kh - padTop;
        if (ih < 0 || ih >= inHeight) continue;
        const xRowAt = xAt + (b * inHeight + ih) * inWidth * xPixelBytes;
        for (let kw = 0; kw < filterWidth; kw++) {
          const first = firstColumn[kw];
          simd.filterGradientRow(
            xRowAt + (first * strideWidth + kw - padLeft) * xPixelBytes,
            strideWidth * xPixelBytes,
            dyRowAt + first * dyPixelBytes,
            columnCount[kw],
            inChannels,
            outChannels,
            dwAt + (kh * filterWidth + kw) * tapBytes,
          );
        }
      }
    }
  }
  return dw;
}

/** dW as one XNNPACK convolution (see the top of this file); for output channels SIMD rows do not fit. */
function conv2DBackpropFilterByConv(backend: BackendWasm, x: TensorInfo, dy: TensorInfo, info: tf.backend_util.Conv2DInfo): TensorInfo {
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
  free(backend, xT, dyFolded, dyT);

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
  const simd = simdKernels(backend);
  if (simd !== undefined && info.inChannels % SIMD_OUT_CHANNELS === 0) return conv2DBackpropInputByRows(backend, simd, dy, filter, info);
  // A strided dx through the flipped filter would run over dy with (stride - 1) zeros between its pixels:
  // 75% of that convolution's work is on zeros at stride 2.
  if (info.strideHeight > 1 || info.strideWidth > 1) return conv2DBackpropInputByColumns(backend, dy, filter, info);
  return conv2DBackpropInputByFlippedConv(backend, dy, filter, info) ?? conv2DBackpropInputByColumns(backend, dy, filter, info);
}

/**
 * dx by rows, in place on the heap (wasm-simd-kernels.wat): for each dy row, filter tap and the run of
 * its pixels whose input pixels are inside the image, dx[those pixels] += dy[row pixels] · w[kh,kw]ᵀ.
 * Strided convolutions skip nothing and compute no zeros; no padding or dilation is materialised.
 */
function conv2DBackpropInputByRows(backend: BackendWasm, simd: SimdKernels, dy: TensorInfo, filter: TensorInfo, info: tf.backend_util.Conv2DInfo): TensorInfo {
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, outChannels } = info;
  const { filterHeight, filterWidth, strideHeight, strideWidth } = info;
  const padTop = info.padInfo.top;
  const padLeft = info.padInfo.left;
  const filterT = transpose(backend, filter, [0, 1, 3, 2]); // [KH, KW, Co, Ci]: each tap's [Co, Ci]
  const dx = backend.makeOutput([batchSize, inHeight, inWidth, inChannels], 'float32');
  (backend.typedArrayFromHeap(dx) as Float32Array).fill(0);
  const dyAt = heapAddress(backend, dy);
  const dxAt = heapAddress(backend, dx);
  const filterAt = heapAddress(backend, filterT);
  const dxPixelBytes = inChannels * 4;
  const dyPixelBytes = outChannels * 4;
  const tapBytes = inChannels * outChannels * 4;
  const { first, count } = visibleColumns(info);
  for (let b = 0; b < batchSize; b++) {
    for (let oh = 0; oh < outHeight; oh++) {
      const dyRowAt = dyAt + (b * outHeight + oh) * outWidth * dyPixelBytes;
      for (let kh = 0; kh < filterHeight; kh++) {
        const ih = oh * strideHeight + kh - padTop;
        if (ih < 0 || ih >= inHeight) continue;
        const dxRowAt = dxAt + (b * inHeight + ih) * inWidth * dxPixelBytes;
        for (let kw = 0; kw < filterWidth; kw++) {
          simd.addRowProduct(
            dyRowAt + first[kw] * dyPixelBytes,
            dyPixelBytes,
            dxRowAt + (first[kw] * strideWidth + kw - padLeft) * dxPixelBytes,
            strideWidth * dxPixelBytes,
            count[kw],
            outChannels,
            inChannels,
            filterAt + (kh * filterWidth + kw) * tapBytes,
          );
        }
      }
    }
  }
  free(backend, filterT);
  return dx;
}

/** For each filter column kw, the output columns whose input column ow * sw + kw - pl is inside the image. */
function visibleColumns(info: tf.backend_util.Conv2DInfo): { first: number[]; count: number[] } {
  const { inWidth, outWidth, filterWidth, strideWidth } = info;
  const padLeft = info.padInfo.left;
  const first: number[] = [];
  const count: number[] = [];
  for (let kw = 0; kw < filterWidth; kw++) {
    const from = Math.max(0, Math.ceil((padLeft - kw) / strideWidth));
    const to = Math.min(outWidth - 1, Math.floor((inWidth - 1 + padLeft - kw) / strideWidth));
    first.push(from);
    count.push(Math.max(0, to - from + 1));
  }
  return { first, count };
}

/** dx as the stride-1 Conv2D of dy with the filter flipped in space; undefined where that would need cropping. */
function conv2DBackpropInputByFlippedConv(backend: BackendWasm, dy: TensorInfo, filter: TensorInfo, info: tf.backend_util.Conv2DInfo): TensorInfo | undefined {
  const { inHeight, inWidth, outHeight, outWidth, filterHeight, filterWidth } = info;
  const padTop = filterHeight - 1 - info.padInfo.top;
  const padLeft = filterWidth - 1 - info.padInfo.left;
  const padBottom = inHeight - outHeight + info.padInfo.top;
  const padRight = inWidth - outWidth + info.padInfo.left;
  // explicit paddings wider than the filter would need cropping: rare, and the column path handles them
  if (Math.min(padTop, padLeft, padBottom, padRight) < 0) return undefined;
  const flipped = runKernel(backend, 'Reverse', { x: filter }, { dims: [0, 1] });
  const filterT = transpose(backend, flipped, [0, 1, 3, 2]); // [KH, KW, Co, Ci]
  free(backend, flipped);
  const dx = conv2d(backend, dy, filterT, [1, 1], [padTop, padBottom, padLeft, padRight]);
  free(backend, filterT);
  return dx;
}

/**
 * dx of a strided convolution without the zeros: one matrix product gives every dy pixel's contribution
 * to each of its window's taps, cols[n,oh,ow, kh,kw,ci] = sum over co of dy[n,oh,ow,co] * w[kh,kw,ci,co]
 * (XNNPACK: a long [N*OH*OW, Co] times a small [Co, KH*KW*Ci]), and a pass over the heap adds each tap into
 * the input pixel it came from (col2im). Any padding works: taps that fall outside the input are skipped.
 */
function conv2DBackpropInputByColumns(backend: BackendWasm, dy: TensorInfo, filter: TensorInfo, info: tf.backend_util.Conv2DInfo): TensorInfo {
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, outChannels } = info;
  const { filterHeight, filterWidth, strideHeight, strideWidth } = info;
  const pixels = batchSize * outHeight * outWidth;
  const tapsPerPixel = filterHeight * filterWidth * inChannels;
  const dyRows = reshape(backend, dy, [1, pixels, outChannels]);
  const filterRows = reshape(backend, filter, [1, tapsPerPixel, outChannels]);
  const batchMatMulAttrs: BatchMatMulAttrs = { transposeA: false, transposeB: true };
  const cols = runKernel(backend, 'BatchMatMul', { a: dyRows, b: filterRows }, batchMatMulAttrs);
  free(backend, dyRows, filterRows);

  const dx = backend.makeOutput([batchSize, inHeight, inWidth, inChannels], 'float32');
  // views are taken after makeOutput, which may grow (and so detach) the wasm heap
  const colValues = backend.typedArrayFromHeap(cols) as Float32Array;
  const dxValues = backend.typedArrayFromHeap(dx) as Float32Array;
  dxValues.fill(0);
  const padTop = info.padInfo.top;
  const padLeft = info.padInfo.left;
  const tapRow = filterWidth * inChannels;
  let colAt = 0;
  for (let b = 0; b < batchSize; b++) {
    for (let oh = 0; oh < outHeight; oh++) {
      for (let ow = 0; ow < outWidth; ow++) {
        for (let kh = 0; kh < filterHeight; kh++, colAt += tapRow) {
          const ih = oh * strideHeight + kh - padTop;
          if (ih < 0 || ih >= inHeight) continue;
          const rowAt = (b * inHeight + ih) * inWidth;
          for (let kw = 0; kw < filterWidth; kw++) {
            const iw = ow * strideWidth + kw - padLeft;
            if (iw < 0 || iw >= inWidth) continue;
            const dxAt = (rowAt + iw) * inChannels;
            const tapAt = colAt + kw * inChannels;
            for (let ci = 0; ci < inChannels; ci++) dxValues[dxAt + ci] += colValues[tapAt + ci];
          }
        }
      }
    }
  }
  free(backend, cols);
  return dx;
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
// Add, Sub and Multiply with a channel vector

type ChannelBinaryName = 'Add' | 'Sub' | 'Multiply';

/**
 * [..., C] op [C] (a bias, BatchNormalization's mean and scale and their gradients), either way round.
 * The stock kernels' XNNPACK broadcast path takes 2-4x as long as an op on two equal shapes (~30x for the
 * seed model's 2 channels); here one SIMD pass over the heap computes (x - shift) * scale + offset with
 * per-channel vectors, which with the identities 0 and 1 gives the plain op's bits. Channel counts that are
 * not a multiple of 4 take a JavaScript pass (Add) or the stock kernel; other shapes the stock kernel.
 */
function channelBinary(name: ChannelBinaryName): KernelFunc {
  return (args) => {
    const backend = wasmBackend(args);
    const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
    const vector = isChannelVectorOf(b, a) ? b : isChannelVectorOf(a, b) ? a : undefined;
    if (vector === undefined) return stockKernelFunc(name)(args);
    const values = vector === b ? a : b;
    const channels = values.shape[values.shape.length - 1];
    const simd = simdKernels(backend);
    if (simd === undefined || channels % SIMD_FLOATS !== 0) {
      return name === 'Add' ? addChannelVectorInJs(backend, values, vector) : stockKernelFunc(name)(args);
    }
    // the map's shift, scale and offset, one after the other in one heap buffer
    const params = backend.makeOutput([3, channels], 'float32');
    const out = backend.makeOutput(values.shape, 'float32');
    // views are taken after makeOutput, which may grow (and so detach) the wasm heap
    const paramValues = backend.typedArrayFromHeap(params) as Float32Array;
    const vectorValues = backend.typedArrayFromHeap(vector) as Float32Array;
    const [shift, scale, offset] = [0, 1, 2].map((i) => paramValues.subarray(i * channels, (i + 1) * channels));
    shift.fill(0);
    scale.fill(1);
    offset.fill(0);
    if (name === 'Add') offset.set(vectorValues);
    else if (name === 'Multiply') scale.set(vectorValues);
    else if (vector === b) shift.set(vectorValues); // x - v
    else {
      shift.set(vectorValues); // v - x = -(x - v), bit for bit: rounding to nearest is symmetric
      scale.fill(-1);
    }
    const paramsAt = heapAddress(backend, params);
    const rowBytes = channels * 4;
    simd.channelAffine(heapAddress(backend, values), sizeOf(values.shape) / channels, rowBytes, paramsAt, paramsAt + rowBytes, paramsAt + 2 * rowBytes, heapAddress(backend, out));
    free(backend, params);
    return out;
  };
}

/** [..., C] + [C] in one JavaScript pass: for channel counts the SIMD loop does not take (the seed model's 2). */
function addChannelVectorInJs(backend: BackendWasm, values: TensorInfo, bias: TensorInfo): TensorInfo {
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

// ---------------------------------------------------------------------------------------------------
// Tile

/**
 * BatchNormalization's gradient tiles a [1,1,1,C] vector over [N,H,W,1]; the stock kernel computes each
 * output element's source index with divisions (~50 ns an element, 130 ms for 64x48x48x16). Here each
 * copy of x along a dimension is one `copyWithin` of the block already written (doubling), so the cost
 * is that of a memcpy of the output.
 */
function tileFast(args: KernelArgs): TensorInfo {
  const backend = wasmBackend(args);
  const { reps } = attrsOf<TileAttrs>(args);
  const { x } = args.inputs as { x: TensorInfo };
  if (x.dtype === 'string' || x.dtype === 'complex64') return stockKernelFunc('Tile')(args) as TensorInfo;
  const outShape = x.shape.map((d, i) => d * reps[i]);
  const out = backend.makeOutput(outShape, x.dtype);
  if (sizeOf(outShape) === 0) return out;
  // views are taken after makeOutput, which may grow (and so detach) the wasm heap
  const xs = backend.typedArrayFromHeap(x);
  const outs = backend.typedArrayFromHeap(out);
  const outStrides = outShape.map((_, i) => sizeOf(outShape.slice(i + 1)));
  const xStrides = x.shape.map((_, i) => sizeOf(x.shape.slice(i + 1)));
  // One copy of x along `dim` is a contiguous block of x.shape[dim] * outStrides[dim] elements: write the
  // first (recursively), then repeat it reps[dim] - 1 times.
  const tileDim = (dim: number, xAt: number, outAt: number): void => {
    const count = x.shape[dim];
    if (dim === x.shape.length - 1) {
      outs.set(xs.subarray(xAt, xAt + count), outAt);
    } else {
      for (let i = 0; i < count; i++) tileDim(dim + 1, xAt + i * xStrides[dim], outAt + i * outStrides[dim]);
    }
    const block = count * outStrides[dim];
    const total = block * reps[dim];
    for (let filled = block; filled < total; filled += Math.min(filled, total - filled)) {
      outs.copyWithin(outAt + filled, outAt, outAt + Math.min(filled, total - filled));
    }
  };
  tileDim(0, 0, 0);
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Identity and Cast

/**
 * The stock Identity copies its input, and tfjs emits it dozens of times a training step (gradient
 * bookkeeping, `clone`); tensors are immutable, so, as the cpu backend does, the output shares the input's
 * buffer and adds a reference (as the wasm Reshape kernel does).
 */
function identityShared(args: KernelArgs): TensorInfo {
  const backend = wasmBackend(args);
  const { x } = args.inputs as { x: TensorInfo };
  if (x.dtype === 'string') return stockKernelFunc('Identity')(args) as TensorInfo;
  backend.incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
}

/** A cast to the dtype the tensor already has (tf.moments casts to float32) shares the buffer too. */
function castShared(args: KernelArgs): TensorInfo {
  const { dtype } = attrsOf<CastAttrs>(args);
  const { x } = args.inputs as { x: TensorInfo };
  if (x.dtype !== dtype) return stockKernelFunc('Cast')(args) as TensorInfo;
  return identityShared(args);
}

// ---------------------------------------------------------------------------------------------------
// Sum and Mean over leading axes

/** Rows summed in float32 before their sum joins the float64 total: bounds float32 rounding. */
const ROWS_PER_PARTIAL_SUM = 256;

/**
 * Sums and means over a run of axes that leaves the last one, such as a BatchNormalization's statistics
 * and gradients ([N,H,W,C] -> [C]) or global average pooling ([N,H,W,C] -> [N,C]). The stock kernels
 * transpose the reduced axes to the end first; here x is read once, in order, as [outer, rows, inner] and
 * the SIMD loop adds rows of `inner` values. Partial sums of 256 rows are float32, their total float64.
 */
function reduceRows(name: 'Sum' | 'Mean'): KernelFunc {
  return (args) => {
    const backend = wasmBackend(args);
    const { x } = args.inputs as { x: TensorInfo };
    const { axis, keepDims } = attrsOf<SumAttrs | MeanAttrs>(args);
    const simd = simdKernels(backend);
    const rank = x.shape.length;
    const axes = tf.util.parseAxisParam(axis, x.shape).sort((p, q) => p - q);
    const first = axes[0];
    const last = axes[axes.length - 1];
    const inner = sizeOf(x.shape.slice(last + 1));
    const contiguous = axes.length > 0 && last - first === axes.length - 1 && last < rank - 1;
    if (simd === undefined || x.dtype !== 'float32' || !contiguous || inner % SIMD_FLOATS !== 0 || sizeOf(x.shape) === 0) {
      return stockKernelFunc(name)(args);
    }
    const outer = sizeOf(x.shape.slice(0, first));
    const rows = sizeOf(x.shape.slice(first, last + 1));
    const outShape = keepDims ? x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !axes.includes(i));
    const out = backend.makeOutput(outShape, 'float32');
    const partial = backend.makeOutput([inner], 'float32');
    // views are taken after makeOutput, which may grow (and so detach) the wasm heap
    const outValues = backend.typedArrayFromHeap(out) as Float32Array;
    const partialValues = backend.typedArrayFromHeap(partial) as Float32Array;
    const xAt = heapAddress(backend, x);
    const partialAt = heapAddress(backend, partial);
    const rowBytes = inner * 4;
    const total = new Float64Array(inner);
    for (let o = 0; o < outer; o++) {
      total.fill(0);
      for (let r = 0; r < rows; r += ROWS_PER_PARTIAL_SUM) {
        partialValues.fill(0);
        simd.addColumnSums(xAt + (o * rows + r) * rowBytes, Math.min(ROWS_PER_PARTIAL_SUM, rows - r), rowBytes, partialAt);
        for (let i = 0; i < inner; i++) total[i] += partialValues[i];
      }
      const divisor = name === 'Mean' ? rows : 1;
      for (let i = 0; i < inner; i++) outValues[o * inner + i] = total[i] / divisor;
    }
    free(backend, partial);
    return out;
  };
}

// ---------------------------------------------------------------------------------------------------
// FusedBatchNorm

/**
 * (x - mean) * scale / sqrt(variance + epsilon) + offset with per-channel [C] statistics: the stock kernel
 * takes ~10 ms for 64x48x48x16, one SIMD pass ~1 ms. The per-channel factor is computed in float64.
 */
function fusedBatchNormFast(args: KernelArgs): TensorInfo {
  const backend = wasmBackend(args);
  const { varianceEpsilon } = attrsOf<FusedBatchNormAttrs>(args);
  const { x, mean, variance, offset, scale } = args.inputs as Record<'x' | 'mean' | 'variance', TensorInfo> & Partial<Record<'offset' | 'scale', TensorInfo>>;
  const channels = x.shape[x.shape.length - 1];
  const simd = simdKernels(backend);
  const isChannelVector = (t: TensorInfo | undefined): boolean => t === undefined || (t.dtype === 'float32' && sizeOf(t.shape) === channels);
  const vectors = [mean, variance, offset, scale].every(isChannelVector);
  if (simd === undefined || x.dtype !== 'float32' || !vectors || channels % SIMD_FLOATS !== 0 || sizeOf(x.shape) === 0) {
    return stockKernelFunc('FusedBatchNorm')(args) as TensorInfo;
  }
  const params = backend.makeOutput([2, channels], 'float32');
  const out = backend.makeOutput(x.shape, 'float32');
  // views are taken after makeOutput, which may grow (and so detach) the wasm heap
  const paramValues = backend.typedArrayFromHeap(params) as Float32Array;
  const varianceValues = backend.typedArrayFromHeap(variance) as Float32Array;
  const scaleValues = scale === undefined ? undefined : (backend.typedArrayFromHeap(scale) as Float32Array);
  const offsetValues = offset === undefined ? undefined : (backend.typedArrayFromHeap(offset) as Float32Array);
  for (let c = 0; c < channels; c++) {
    paramValues[c] = (scaleValues?.[c] ?? 1) / Math.sqrt(varianceValues[c] + varianceEpsilon);
    paramValues[channels + c] = offsetValues?.[c] ?? 0;
  }
  const paramsAt = heapAddress(backend, params);
  const rowBytes = channels * 4;
  simd.channelAffine(heapAddress(backend, x), sizeOf(x.shape) / channels, rowBytes, heapAddress(backend, mean), paramsAt, paramsAt + rowBytes, heapAddress(backend, out));
  free(backend, params);
  return out;
}
