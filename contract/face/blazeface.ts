/**
 * MediaPipe BlazeFace (the "back" 256x256 model, also the "front" 128x128 one) as pure math, so the server and
 * the browser turn the same pixels into the same faces. Running the model is the caller's job.
 *
 *   const { input, transform } = blazefaceInput(image);          // Float32Array [1, 256, 256, 3], NHWC RGB in [-1, 1]
 *   const outputs = ...run the model on `input`...                // four tensors: scores and regressors
 *   const faces = decodeDetections(Object.values(outputs), transform, { minScore: 0.5 });
 *
 * - `blazefaceInput(image, { inputSize, padding })`: the image, kept whole and centred in a black square
 *   `padding` times its longer side (1 for photos; `CROP_PADDING` for a face filling the frame), area-averaged
 *   to the model input; with the transform back to image pixels.
 * - `padDetectorInput(input, transform, padding)`: that input shrunk into a larger black square, for a second
 *   pass on a face filling the frame without going over the image's pixels again.
 * - `decodeDetections(outputs, transform, options)`: scores, boxes and six keypoints per anchor, weighted
 *   non-maximum suppression, in original image pixels. Outputs are recognised by shape, not by name.
 * - `BLAZEFACE_ANCHORS`, `weightedNonMaxSuppression` and `boxIou` are exported for tests and measurement.
 *
 * Keypoints are named for the subject: `rightEye` is the person's right eye, on the image's left in a
 * photo that is not mirrored.
 */

import type { PixelBuffer } from '../preprocess.ts';

export type Point = [x: number, y: number];

export interface Box {
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface FaceLandmarks {
  rightEye: Point;
  leftEye: Point;
  nose: Point;
  mouth: Point;
  rightEar: Point;
  leftEar: Point;
}

export interface DetectedFace {
  box: Box;
  /** sigmoid of the model's logit, 0 to 1 */
  score: number;
  landmarks: FaceLandmarks;
}

/** Maps model-input pixels back to image pixels: `imageX = inputX * scale + offsetX`. */
export interface InputTransform {
  inputSize: number;
  scale: number;
  offsetX: number;
  offsetY: number;
}

/** A model output as onnxruntime returns it. */
export interface OutputTensor {
  dims: readonly number[];
  data: Float32Array | ArrayLike<number>;
}

export interface DecodeOptions {
  /** faces scoring below this are dropped before suppression */
  minScore?: number;
  /** at most this many faces, best first */
  maxFaces?: number;
  /** boxes overlapping the kept one by more than this IoU are merged into it */
  iouThreshold?: number;
}

/** The back model's side; the front model's is 128, with the same anchors. */
export const BLAZEFACE_INPUT_SIZE = 256;
/** Chosen on synthetic scenes (training/bench/face-scenes.ts): lower finds few more faces and more false ones. */
export const DEFAULT_MIN_SCORE = 0.5;
export const DEFAULT_MAX_FACES = 20;
/** MediaPipe's face detection graphs merge boxes overlapping more than this (WEIGHTED non-maximum suppression). */
export const DEFAULT_IOU_THRESHOLD = 0.3;
/**
 * The square the image is centred in, as a multiple of its longer side: 1 suits photos, where faces are small
 * (training/bench/face-scenes.ts); `CROP_PADDING` suits a face filling the frame (training/bench/face-detect.ts).
 */
export const DEFAULT_PADDING = 1;
/**
 * For an image that is one face filling the frame, as UTKFace's crops (unpadded, the model misses many of them):
 * the padding FACE_TEMPLATE was measured at. detectFaces' second pass (contract/face/photo.ts) chose its own.
 */
export const CROP_PADDING = 1.5;

/** MediaPipe clips logits to this before the sigmoid. */
const SCORE_CLIP = 100;
const COORDS_PER_ANCHOR = 16;
const KEYPOINT_OFFSET = 4;
const KEYPOINT_NAMES = ['rightEye', 'leftEye', 'nose', 'mouth', 'rightEar', 'leftEar'] as const;
/**
 * Feature maps in output order: anchors per cell, and the grid's side as a fraction of the first map's. At the
 * back model's 256 input the grids are 16x16 and 8x8 (strides 16 and 32); the front model's 128 input has the
 * same; a smaller input (contract/face/detector-resize.ts) has smaller grids, read from the outputs' row counts.
 */
const ANCHOR_LAYERS: readonly { perCell: number; gridFraction: number }[] = [
  { perCell: 2, gridFraction: 1 },
  { perCell: 6, gridFraction: 0.5 },
];
const FULL_GRID = 16;

export interface Anchor {
  /** centre, as a fraction of the input side */
  x: number;
  y: number;
}

/** The anchor centres in output-row order: grid x grid cells with 2 anchors each, then (grid/2)^2 cells with 6. */
export function blazefaceAnchors(grid = FULL_GRID): Anchor[] {
  const anchors: Anchor[] = [];
  for (const { gridFraction, perCell } of ANCHOR_LAYERS) {
    const side = grid * gridFraction;
    for (let row = 0; row < side; row++) {
      for (let col = 0; col < side; col++) {
        for (let k = 0; k < perCell; k++) anchors.push({ x: (col + 0.5) / side, y: (row + 0.5) / side });
      }
    }
  }
  return anchors;
}

/** The anchors of each first-map grid side met so far. */
const anchorsByGrid = new Map<number, readonly Anchor[]>();

function anchorsFor(grid: number): readonly Anchor[] {
  let anchors = anchorsByGrid.get(grid);
  if (anchors === undefined) {
    anchors = blazefaceAnchors(grid);
    anchorsByGrid.set(grid, anchors);
  }
  return anchors;
}

/** The 896 anchors of the 256 input. */
export const BLAZEFACE_ANCHORS: readonly Anchor[] = anchorsFor(FULL_GRID);

export interface BlazefaceInputOptions {
  /** model input side: 256 for the back model, 128 for the front one */
  inputSize?: number;
  /** side of the black square the image is centred in, as a multiple of its longer side (at least 1) */
  padding?: number;
}

/**
 * The model input for an image: the image centred in a black square of `padding` times its longer side,
 * area-averaged to `inputSize` square, RGB scaled to [-1, 1], NHWC. Pixels that are not opaque are composited
 * over white, as `preprocessToBytes` does.
 */
export function blazefaceInput(image: PixelBuffer, options: BlazefaceInputOptions = {}): { input: Float32Array; transform: InputTransform } {
  const inputSize = options.inputSize ?? BLAZEFACE_INPUT_SIZE;
  const padding = options.padding ?? DEFAULT_PADDING;
  if (!(Number.isInteger(inputSize) && inputSize > 0)) throw new RangeError(`inputSize ${inputSize} is invalid; expected a positive whole number`);
  if (!(padding >= 1)) throw new RangeError(`padding ${padding} is invalid; expected a number of at least 1`);
  const { width, height } = image;
  if (image.data.length !== width * height * image.channels || width < 1 || height < 1) {
    throw new RangeError(`Pixel buffer holds ${image.data.length} bytes; expected ${width}x${height}x${image.channels}`);
  }
  const side = Math.max(width, height) * padding;
  const scale = side / inputSize;
  const transform: InputTransform = { inputSize, scale, offsetX: -(side - width) / 2, offsetY: -(side - height) / 2 };
  const xs = coverage(inputSize, scale, transform.offsetX, width);
  const ys = coverage(inputSize, scale, transform.offsetY, height);
  // Bytes already RGB are read as they are: toRgb would copy them unchanged into floats.
  const rgb = image.channels === 3 ? image.data : toRgb(image);

  // Horizontal pass over the image rows, for the input columns that see the image; then vertical. The input's
  // padding is black: -1, as the sums over its empty footprints give.
  const columns = coveredRange(xs.weights);
  const rowLength = (columns.end - columns.start) * 3;
  const rows = new Float32Array(height * rowLength);
  const taps = flatTaps(xs, columns);
  for (let y = 0, d = 0; y < height; y++) {
    const rowStart = y * width * 3;
    for (let column = 0; column < taps.count; column++, d += 3) {
      let r = 0;
      let g = 0;
      let b = 0;
      let s = rowStart + taps.offsets[column];
      for (let k = taps.first[column], end = taps.first[column + 1]; k < end; k++, s += 3) {
        const w = taps.weights[k];
        r += rgb[s] * w;
        g += rgb[s + 1] * w;
        b += rgb[s + 2] * w;
      }
      rows[d] = r;
      rows[d + 1] = g;
      rows[d + 2] = b;
    }
  }
  const input = new Float32Array(inputSize * inputSize * 3).fill(-1);
  const stride = inputSize * 3;
  const covered = coveredRange(ys.weights);
  // Row by row, each value's sum still taken over k in order, in doubles.
  const sums = new Float64Array(rowLength);
  for (let oy = covered.start; oy < covered.end; oy++) {
    const w = ys.weights[oy];
    sums.fill(0);
    for (let k = 0, s = ys.start[oy] * rowLength; k < w.length; k++) {
      const weight = w[k];
      for (let i = 0; i < rowLength; i++, s++) sums[i] += rows[s] * weight;
    }
    const d = oy * stride + columns.start * 3;
    for (let i = 0; i < rowLength; i++) input[d + i] = sums[i] / 127.5 - 1;
  }
  return { input, transform };
}

/**
 * The input `blazefaceInput(image, { padding: padding × theirs })` would give, made from an input already prepared:
 * that input shrunk into the middle of a black square `padding` times its side. A second detector pass at a
 * larger padding costs this (well under a millisecond) instead of another pass over the photo's pixels.
 */
export function padDetectorInput(input: Float32Array, transform: InputTransform, padding: number): { input: Float32Array; transform: InputTransform } {
  const size = transform.inputSize;
  if (!(padding >= 1)) throw new RangeError(`padding ${padding} is invalid; expected a number of at least 1`);
  if (input.length !== size * size * 3) throw new RangeError(`Detector input holds ${input.length} values; expected ${size}x${size}x3`);
  const offset = -((padding - 1) * size) / 2;
  const xs = coverage(size, padding, offset, size);
  const rows = new Float32Array(size * size * 3);
  // Shifted by one so that black is 0 and the footprint left over outside the old input counts as black.
  for (let y = 0; y < size; y++) {
    for (let ox = 0; ox < size; ox++) {
      const w = xs.weights[ox];
      for (let c = 0; c < 3; c++) {
        let acc = 0;
        for (let k = 0; k < w.length; k++) acc += (input[(y * size + xs.start[ox] + k) * 3 + c] + 1) * w[k];
        rows[(y * size + ox) * 3 + c] = acc;
      }
    }
  }
  const out = new Float32Array(size * size * 3);
  const stride = size * 3;
  for (let oy = 0; oy < size; oy++) {
    const w = xs.weights[oy];
    for (let i = 0; i < stride; i++) {
      let acc = 0;
      for (let k = 0; k < w.length; k++) acc += rows[(xs.start[oy] + k) * stride + i] * w[k];
      out[oy * stride + i] = acc - 1;
    }
  }
  const scale = transform.scale * padding;
  return { input: out, transform: { inputSize: size, scale, offsetX: transform.offsetX + offset * transform.scale, offsetY: transform.offsetY + offset * transform.scale } };
}

/** For each output index, the image pixels its footprint covers and the fraction of the footprint each takes. */
function coverage(outSize: number, scale: number, offset: number, inSize: number): { start: Int32Array; weights: Float32Array[] } {
  const start = new Int32Array(outSize);
  const weights: Float32Array[] = [];
  for (let o = 0; o < outSize; o++) {
    const from = Math.max(0, o * scale + offset);
    const to = Math.min(inSize, (o + 1) * scale + offset);
    if (!(to > from)) {
      weights.push(new Float32Array(0));
      continue;
    }
    const first = Math.floor(from);
    const last = Math.ceil(to) - 1;
    const w = new Float32Array(last - first + 1);
    for (let i = first; i <= last; i++) w[i - first] = (Math.min(to, i + 1) - Math.max(from, i)) / scale;
    start[o] = first;
    weights.push(w);
  }
  return { start, weights };
}

/** The outputs from the first to the last whose footprint covers any of the image: `[start, end)`. */
function coveredRange(weights: readonly Float32Array[]): { start: number; end: number } {
  let start = 0;
  while (start < weights.length && weights[start].length === 0) start++;
  let end = weights.length;
  while (end > start && weights[end - 1].length === 0) end--;
  return { start, end };
}

/** `coverage` for the outputs in `range`, its weights in one array: output i's are `weights[first[i]]` to `weights[first[i + 1] - 1]`, read from the RGB value `offsets[i]` of an image row. */
function flatTaps(cover: { start: Int32Array; weights: Float32Array[] }, range: { start: number; end: number }): { count: number; offsets: Int32Array; first: Int32Array; weights: Float64Array } {
  const count = range.end - range.start;
  const offsets = new Int32Array(count);
  const first = new Int32Array(count + 1);
  for (let i = 0; i < count; i++) {
    offsets[i] = cover.start[range.start + i] * 3;
    first[i + 1] = first[i] + cover.weights[range.start + i].length;
  }
  const weights = new Float64Array(first[count]);
  for (let i = 0; i < count; i++) weights.set(cover.weights[range.start + i], first[i]);
  return { count, offsets, first, weights };
}

/** Three floats per pixel, 0-255; grey repeated, alpha composited over white. */
function toRgb(image: PixelBuffer): Float32Array {
  const { data, channels } = image;
  const count = image.width * image.height;
  const out = new Float32Array(count * 3);
  for (let p = 0, s = 0, d = 0; p < count; p++, s += channels, d += 3) {
    if (channels === 1) {
      out[d] = out[d + 1] = out[d + 2] = data[s];
      continue;
    }
    const alpha = channels === 4 ? data[s + 3] : 255;
    const white = 255 * (255 - alpha);
    for (let c = 0; c < 3; c++) out[d + c] = alpha === 255 ? data[s + c] : (data[s + c] * alpha + white) / 255;
  }
  return out;
}

/**
 * Faces from the model's four outputs (in any order: the score tensors are [1, rows, 1], the regressors
 * [1, rows, 16], with 512 rows for the 16x16 map and 384 for the 8x8 one), in image pixels, best first.
 */
export function decodeDetections(outputs: readonly OutputTensor[], transform: InputTransform, options: DecodeOptions = {}): DetectedFace[] {
  const minScore = options.minScore ?? DEFAULT_MIN_SCORE;
  const maxFaces = options.maxFaces ?? DEFAULT_MAX_FACES;
  const iouThreshold = options.iouThreshold ?? DEFAULT_IOU_THRESHOLD;
  const { scores, regressors, anchors } = arrangeOutputs(outputs);
  const size = transform.inputSize;
  const toImageX = (u: number): number => u * transform.scale + transform.offsetX;
  const toImageY = (v: number): number => v * transform.scale + transform.offsetY;
  const candidates: DetectedFace[] = [];
  anchors.forEach((anchor, i) => {
    const logit = Math.min(SCORE_CLIP, Math.max(-SCORE_CLIP, scores[i]));
    const score = 1 / (1 + Math.exp(-logit));
    if (!(score >= minScore)) return;
    const r = i * COORDS_PER_ANCHOR;
    const cx = anchor.x * size + regressors[r];
    const cy = anchor.y * size + regressors[r + 1];
    const w = regressors[r + 2];
    const h = regressors[r + 3];
    const landmarks = {} as FaceLandmarks;
    KEYPOINT_NAMES.forEach((name, k) => {
      const at = r + KEYPOINT_OFFSET + 2 * k;
      landmarks[name] = [toImageX(anchor.x * size + regressors[at]), toImageY(anchor.y * size + regressors[at + 1])];
    });
    const box = { x: toImageX(cx - w / 2), y: toImageY(cy - h / 2), width: w * transform.scale, height: h * transform.scale };
    candidates.push({ box, score, landmarks });
  });
  return weightedNonMaxSuppression(candidates, iouThreshold).slice(0, maxFaces);
}

/**
 * Scores and regressors (x 16) in anchor order, from outputs recognised by their shapes, and the anchors: the
 * larger score tensor is the first map's, 2 anchors a cell, so its rows give the grid (16 at 256: 512 and 384 rows).
 */
function arrangeOutputs(outputs: readonly OutputTensor[]): { scores: Float32Array; regressors: Float32Array; anchors: readonly Anchor[] } {
  const shapes = (): string => outputs.map((t) => `[${t.dims.join(', ')}]`).join(', ') || '(none)';
  const rowsOf = (cols: number): number[] => outputs.filter((t) => t.dims.length === 3 && t.dims[0] === 1 && t.dims[2] === cols).map((t) => t.dims[1]);
  const scoreRows = rowsOf(1).sort((a, b) => b - a);
  const grid = Math.sqrt((scoreRows[0] ?? 0) / ANCHOR_LAYERS[0].perCell);
  const rowCounts = ANCHOR_LAYERS.map(({ perCell, gridFraction }) => (grid * gridFraction) ** 2 * perCell);
  if (!(Number.isInteger(grid * ANCHOR_LAYERS[1].gridFraction) && grid > 0) || scoreRows.length !== 2 || scoreRows[1] !== rowCounts[1]) {
    throw new Error(`Expected BlazeFace's four outputs, [1, 2g², 1], [1, 1.5g², 1], [1, 2g², 16] and [1, 1.5g², 16] for an even grid g (16 at 256x256); got outputs of shapes ${shapes()}`);
  }
  const find = (rows: number, cols: number): OutputTensor => {
    const found = outputs.filter((t) => t.dims.length === 3 && t.dims[0] === 1 && t.dims[1] === rows && t.dims[2] === cols);
    if (found.length !== 1) throw new Error(`Expected one BlazeFace output of shape [1, ${rows}, ${cols}]; got outputs of shapes ${shapes()}`);
    return found[0];
  };
  const anchors = anchorsFor(grid);
  const scores = new Float32Array(anchors.length);
  const regressors = new Float32Array(anchors.length * COORDS_PER_ANCHOR);
  let row = 0;
  for (const rows of rowCounts) {
    scores.set(find(rows, 1).data as ArrayLike<number>, row);
    regressors.set(find(rows, COORDS_PER_ANCHOR).data as ArrayLike<number>, row * COORDS_PER_ANCHOR);
    row += rows;
  }
  return { scores, regressors, anchors };
}

/** Intersection over union of two boxes; 0 when either is empty. */
export function boxIou(a: Box, b: Box): number {
  const w = Math.min(a.x + a.width, b.x + b.width) - Math.max(a.x, b.x);
  const h = Math.min(a.y + a.height, b.y + b.height) - Math.max(a.y, b.y);
  if (w <= 0 || h <= 0) return 0;
  const inter = w * h;
  const union = a.width * a.height + b.width * b.height - inter;
  return union > 0 ? inter / union : 0;
}

/**
 * MediaPipe's WEIGHTED non-maximum suppression: take the best remaining face, gather every remaining face whose
 * box overlaps it by more than `iouThreshold` (itself included), and keep one face whose box and keypoints are
 * the score-weighted mean of the group and whose score is the best one's. Best first.
 */
export function weightedNonMaxSuppression(faces: readonly DetectedFace[], iouThreshold: number): DetectedFace[] {
  let remaining = [...faces].sort((a, b) => b.score - a.score);
  const kept: DetectedFace[] = [];
  while (remaining.length > 0) {
    const best = remaining[0];
    const group = remaining.filter((face) => boxIou(best.box, face.box) > iouThreshold || face === best);
    remaining = remaining.filter((face) => !group.includes(face));
    if (group.length === 1) {
      kept.push(best);
      continue;
    }
    const total = group.reduce((sum, face) => sum + face.score, 0);
    const mean = (value: (face: DetectedFace) => number): number => group.reduce((sum, face) => sum + value(face) * face.score, 0) / total;
    const landmarks = {} as FaceLandmarks;
    for (const name of KEYPOINT_NAMES) landmarks[name] = [mean((f) => f.landmarks[name][0]), mean((f) => f.landmarks[name][1])];
    const box = { x: mean((f) => f.box.x), y: mean((f) => f.box.y), width: mean((f) => f.box.width), height: mean((f) => f.box.height) };
    kept.push({ box, score: best.score, landmarks });
  }
  return kept;
}
