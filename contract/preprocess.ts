/**
 * Image preprocessing shared by training, the server and the browser: one pure function on a pixel buffer.
 * Decoding is done at the edge (jimp in Node, canvas in the browser); everything after decoding is here,
 * so every runtime feeds a model exactly the same numbers for the same image.
 */

/** Bumped whenever the math below changes the numbers it produces (caches and model metadata key on it). */
export const PREPROCESSING_VERSION = 1;

export type Scaling = 'unit'; // pixel / 255, in [0, 1]

/** What a model takes: written into its metadata at export and read back by every runtime. */
export interface InputSpec {
  height: number;
  width: number;
  /** 1 = grayscale (ITU-R BT.601 luma, as PIL's "L" mode), 3 = RGB */
  channels: 1 | 3;
  scaling: Scaling;
}

/** What makes two input specs the same input: size, channels and scaling. */
export function inputSpecKey(spec: InputSpec): string {
  return `${spec.height}x${spec.width}x${spec.channels}:${spec.scaling}`;
}

/**
 * `items` grouped by their input spec, in the order each spec first appears: a runtime preprocesses each image
 * once per group, and runs each group's models on that one input.
 */
export function groupByInputSpec<T>(items: readonly T[], specOf: (item: T) => InputSpec): { spec: InputSpec; items: T[] }[] {
  const groups = new Map<string, { spec: InputSpec; items: T[] }>();
  for (const item of items) {
    const spec = specOf(item);
    const key = inputSpecKey(spec);
    let group = groups.get(key);
    if (group === undefined) groups.set(key, (group = { spec, items: [] }));
    group.items.push(item);
  }
  return [...groups.values()];
}

/** The coursework's input: 48x48 grayscale scaled to [0, 1], as in the Kaggle `age_gender.csv`. */
export const SEED_INPUT: InputSpec = { height: 48, width: 48, channels: 1, scaling: 'unit' };

/** A decoded image: `data` holds `channels` bytes per pixel, row-major (RGBA from jimp or canvas). */
export interface PixelBuffer {
  width: number;
  height: number;
  channels: 1 | 3 | 4;
  data: Uint8Array | Uint8ClampedArray;
}

/**
 * Centre-crop to a square, convert to the spec's channels, resize with area averaging, and return
 * the spec's bytes (0-255, rounded) in HWC order. This is the form caches store.
 */
export function preprocessToBytes(image: PixelBuffer, spec: InputSpec): Uint8Array {
  validatePixelBuffer(image);
  const side = Math.min(image.width, image.height);
  const left = Math.floor((image.width - side) / 2);
  const top = Math.floor((image.height - side) / 2);
  const converted = convertChannels(image, spec.channels, left, top, side);
  const resized = resizeArea(converted, side, side, spec.channels, spec.width, spec.height);
  const bytes = new Uint8Array(resized.length);
  for (let i = 0; i < resized.length; i++) bytes[i] = Math.min(255, Math.max(0, Math.round(resized[i])));
  return bytes;
}

/** The byte value that the spec's scaling maps to 1: a model input is a byte (or a blend of bytes) divided by it. */
export function byteScale(spec: InputSpec): number {
  if (spec.scaling !== 'unit') throw new Error(`Unsupported scaling "${String(spec.scaling)}"; expected one of: unit`);
  return 255;
}

/** Bytes from `preprocessToBytes` scaled as the spec says, ready to be a model input. */
export function scaleBytes(bytes: Uint8Array, spec: InputSpec, out = new Float32Array(bytes.length)): Float32Array {
  const scale = byteScale(spec);
  for (let i = 0; i < bytes.length; i++) out[i] = bytes[i] / scale;
  return out;
}

/** The model input for one decoded image: HWC float32, scaled. */
export function preprocess(image: PixelBuffer, spec: InputSpec): Float32Array {
  return scaleBytes(preprocessToBytes(image, spec), spec);
}

function validatePixelBuffer(image: PixelBuffer): void {
  const { width, height, channels, data } = image;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`Image size ${width}x${height} is invalid; expected positive whole numbers`);
  }
  if (data.length !== width * height * channels) {
    throw new RangeError(`Pixel buffer holds ${data.length} bytes; expected ${width}x${height}x${channels} = ${width * height * channels}`);
  }
}

/**
 * The square crop in the target channel count, as floats (0-255). Pixels that are not opaque (RGBA input)
 * are composited over white: a browser canvas keeps no colour under a transparent pixel (it reads back as
 * black) while jimp keeps whatever the file stored, so the colour there cannot be used if the page and the
 * server are to agree. Opaque pixels, every training face among them, are unchanged.
 */
function convertChannels(image: PixelBuffer, channels: 1 | 3, left: number, top: number, side: number): Float32Array {
  const out = new Float32Array(side * side * channels);
  const src = image.data;
  const inC = image.channels;
  for (let y = 0; y < side; y++) {
    let s = ((top + y) * image.width + left) * inC;
    let d = y * side * channels;
    for (let x = 0; x < side; x++, s += inC) {
      if (inC === 1) {
        for (let c = 0; c < channels; c++) out[d++] = src[s];
        continue;
      }
      let r = src[s];
      let g = src[s + 1];
      let b = src[s + 2];
      if (inC === 4 && src[s + 3] !== 255) {
        const alpha = src[s + 3];
        const white = 255 * (255 - alpha);
        r = (r * alpha + white) / 255;
        g = (g * alpha + white) / 255;
        b = (b * alpha + white) / 255;
      }
      if (channels === 1) {
        // ITU-R BT.601 luma, the weights PIL's convert("L") uses.
        out[d++] = (r * 299 + g * 587 + b * 114) / 1000;
      } else {
        out[d++] = r;
        out[d++] = g;
        out[d++] = b;
      }
    }
  }
  return out;
}

/** For each output index along one axis, the source indices it covers and their weights (summing to 1). */
function areaWeights(inSize: number, outSize: number): { start: Int32Array; count: Int32Array; weights: Float32Array[] } {
  const scale = inSize / outSize;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights: Float32Array[] = [];
  for (let o = 0; o < outSize; o++) {
    const from = o * scale;
    const to = from + scale;
    const first = Math.floor(from);
    const last = Math.min(inSize - 1, Math.ceil(to) - 1);
    const w = new Float32Array(last - first + 1);
    for (let i = first; i <= last; i++) {
      w[i - first] = (Math.min(to, i + 1) - Math.max(from, i)) / scale;
    }
    start[o] = first;
    count[o] = w.length;
    weights.push(w);
  }
  return { start, count, weights };
}

/**
 * Area-averaging resize (each output pixel is the mean of the source area it covers, as OpenCV's
 * INTER_AREA when shrinking); when enlarging it degrades gracefully to nearest-neighbour blocks.
 */
function resizeArea(src: Float32Array, inW: number, inH: number, channels: number, outW: number, outH: number): Float32Array {
  const xs = areaWeights(inW, outW);
  const ys = areaWeights(inH, outH);
  // Horizontal pass: inH rows of outW pixels.
  const rows = new Float32Array(inH * outW * channels);
  for (let y = 0; y < inH; y++) {
    for (let ox = 0; ox < outW; ox++) {
      const w = xs.weights[ox];
      for (let c = 0; c < channels; c++) {
        let acc = 0;
        let s = (y * inW + xs.start[ox]) * channels + c;
        for (let k = 0; k < w.length; k++, s += channels) acc += src[s] * w[k];
        rows[(y * outW + ox) * channels + c] = acc;
      }
    }
  }
  // Vertical pass.
  const out = new Float32Array(outH * outW * channels);
  const rowStride = outW * channels;
  for (let oy = 0; oy < outH; oy++) {
    const w = ys.weights[oy];
    const base = ys.start[oy] * rowStride;
    for (let i = 0; i < rowStride; i++) {
      let acc = 0;
      for (let k = 0; k < w.length; k++) acc += rows[base + k * rowStride + i] * w[k];
      out[oy * rowStride + i] = acc;
    }
  }
  return out;
}
