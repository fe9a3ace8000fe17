/**
 * Aligns a detected face to the framing the attribute models were trained on (UTKFace's aligned crops), as
 * pure math on a pixel buffer, so the server and the browser cut the same face out of the same photo.
 *
 *   const problem = alignmentProblem(face.landmarks, image);     // a reason to skip the face, or null
 *   const bytes = alignFace(image, face.landmarks, spec);        // spec: { width, height, channels: 1 | 3 }
 *
 * `bytes` are what `preprocessToBytes(crop, spec)` gives for a UTKFace crop: HWC, 0-255, RGB or BT.601 luma,
 * so `scaleBytes(bytes, spec)` makes the model input. The crop is found by a least-squares similarity
 * (scale, rotation, translation) from the eyes, nose tip and mouth to `FACE_TEMPLATE` (the ears are too
 * unreliable), and sampled in one pass, bilinear, averaging several samples per output pixel when it shrinks,
 * with the image's edge pixels repeated outside it (black fill costs the models accuracy).
 *
 * `fitSimilarity`, `applySimilarity` and `warpToCrop` are exported for tests and for other point sets.
 */
import type { InputSpec, PixelBuffer } from '../preprocess.ts';
import type { FaceLandmarks, Point } from './blazeface.ts';
import { FACE_TEMPLATE } from './template.ts';

/** x' = a x - b y + tx, y' = b x + a y + ty: a rotation by atan2(b, a) and a scale of hypot(a, b). */
export interface Similarity {
  a: number;
  b: number;
  tx: number;
  ty: number;
}

/** The output's size and channels; an `InputSpec` fits. */
export type CropSpec = Pick<InputSpec, 'width' | 'height' | 'channels'>;

/** Faces whose eyes are closer than this (image pixels) are too small to tell much about. */
export const MIN_EYE_DISTANCE_PX = 12;
/** Faces whose aligned crop lies more than this fraction outside the image are too cut off. */
export const MAX_OUTSIDE_FRACTION = 0.3;

const ALIGNED_POINTS = ['rightEye', 'leftEye', 'nose', 'mouth'] as const;
/** Points per side of the grid that estimates how much of the crop is outside the image. */
const OUTSIDE_GRID = 20;

/** The least-squares similarity taking `from[i]` to `to[i]` (closed form, as Umeyama's without reflection). */
export function fitSimilarity(from: readonly Point[], to: readonly Point[]): Similarity {
  if (from.length !== to.length || from.length < 2) {
    throw new RangeError(`fitSimilarity needs two lists of the same length, at least 2; got ${from.length} and ${to.length}`);
  }
  const n = from.length;
  const mean = (points: readonly Point[], axis: 0 | 1): number => points.reduce((sum, p) => sum + p[axis], 0) / n;
  const [fx, fy, tx, ty] = [mean(from, 0), mean(from, 1), mean(to, 0), mean(to, 1)];
  let dot = 0;
  let cross = 0;
  let norm = 0;
  for (let i = 0; i < n; i++) {
    const px = from[i][0] - fx;
    const py = from[i][1] - fy;
    const qx = to[i][0] - tx;
    const qy = to[i][1] - ty;
    dot += px * qx + py * qy;
    cross += px * qy - py * qx;
    norm += px * px + py * py;
  }
  if (!(norm > 0)) throw new RangeError('fitSimilarity: the points to fit from all coincide');
  const a = dot / norm;
  const b = cross / norm;
  return { a, b, tx: tx - (a * fx - b * fy), ty: ty - (b * fx + a * fy) };
}

export function applySimilarity(t: Similarity, [x, y]: Point): Point {
  return [t.a * x - t.b * y + t.tx, t.b * x + t.a * y + t.ty];
}

function invertSimilarity(t: Similarity): Similarity {
  const norm = t.a * t.a + t.b * t.b;
  const a = t.a / norm;
  const b = -t.b / norm;
  return { a, b, tx: -(a * t.tx - b * t.ty), ty: -(b * t.tx + a * t.ty) };
}

/** The similarity from template-crop pixels (0 to `FACE_TEMPLATE.size`) to image pixels for a face. */
export function cropToImage(landmarks: FaceLandmarks): Similarity {
  const imagePoints = ALIGNED_POINTS.map((name) => landmarks[name]);
  const templatePoints = ALIGNED_POINTS.map((name): Point => [FACE_TEMPLATE[name][0], FACE_TEMPLATE[name][1]]);
  return invertSimilarity(fitSimilarity(imagePoints, templatePoints));
}

/** The face cut out as a UTKFace crop would be and sized to `spec`: HWC bytes, as `preprocessToBytes` gives. */
export function alignFace(image: PixelBuffer, landmarks: FaceLandmarks, spec: CropSpec): Uint8Array {
  return warpToCrop(image, cropToImage(landmarks), FACE_TEMPLATE.size, spec);
}

/**
 * Samples the square crop `[0, cropSize)²` (mapped into the image by `toImage`) at `spec`'s size. Each output
 * pixel is the mean of n x n bilinear samples spread over its footprint, n the footprint's side in image pixels
 * rounded up; image pixels have their centres at +0.5, and coordinates outside the image take the nearest edge pixel.
 */
export function warpToCrop(image: PixelBuffer, toImage: Similarity, cropSize: number, spec: CropSpec): Uint8Array {
  const { width, height, channels: inC, data } = image;
  if (data.length !== width * height * inC || width < 1 || height < 1) {
    throw new RangeError(`Pixel buffer holds ${data.length} bytes; expected ${width}x${height}x${inC}`);
  }
  const outC = spec.channels;
  const out = new Uint8Array(spec.width * spec.height * outC);
  const stepX = cropSize / spec.width;
  const stepY = cropSize / spec.height;
  const scale = Math.hypot(toImage.a, toImage.b);
  const nx = Math.max(1, Math.ceil(stepX * scale - 1e-9));
  const ny = Math.max(1, Math.ceil(stepY * scale - 1e-9));
  const samples = nx * ny;
  // Each sample is at (a u - b v + tx, b u + a v + ty) - 0.5, summed in that order; the products are made once per column and row.
  const { a, b, tx: originX, ty: originY } = toImage;
  const au = new Float64Array(spec.width * nx);
  const bu = new Float64Array(spec.width * nx);
  for (let ox = 0, i = 0; ox < spec.width; ox++) {
    for (let sx = 0; sx < nx; sx++, i++) {
      const u = (ox + (sx + 0.5) / nx) * stepX;
      au[i] = a * u;
      bu[i] = b * u;
    }
  }
  const av = new Float64Array(ny);
  const bv = new Float64Array(ny);
  const rowStride = width * inC;
  const composited = new Float64Array(3);
  for (let oy = 0; oy < spec.height; oy++) {
    for (let sy = 0; sy < ny; sy++) {
      const v = (oy + (sy + 0.5) / ny) * stepY;
      av[sy] = a * v;
      bv[sy] = b * v;
    }
    for (let ox = 0; ox < spec.width; ox++) {
      // Sums in double precision, tap by tap, in the same order for every channel count.
      let red = 0;
      let green = 0;
      let blue = 0;
      if (inC !== 3) composited.fill(0);
      for (let sy = 0; sy < ny; sy++) {
        const bvRow = bv[sy];
        const avRow = av[sy];
        for (let i = ox * nx, end = i + nx; i < end; i++) {
          const fx = au[i] - bvRow + originX - 0.5;
          const fy = bu[i] + avRow + originY - 0.5;
          const x0 = Math.floor(fx);
          const y0 = Math.floor(fy);
          const tx = fx - x0;
          const ty = fy - y0;
          const left = clamp(x0, width) * inC;
          const right = clamp(x0 + 1, width) * inC;
          const top = clamp(y0, height) * rowStride;
          const bottom = clamp(y0 + 1, height) * rowStride;
          const topLeft = (1 - tx) * (1 - ty);
          const topRight = tx * (1 - ty);
          const bottomLeft = (1 - tx) * ty;
          const bottomRight = tx * ty;
          if (inC === 3) {
            let s = top + left;
            red += data[s] * topLeft;
            green += data[s + 1] * topLeft;
            blue += data[s + 2] * topLeft;
            s = top + right;
            red += data[s] * topRight;
            green += data[s + 1] * topRight;
            blue += data[s + 2] * topRight;
            s = bottom + left;
            red += data[s] * bottomLeft;
            green += data[s + 1] * bottomLeft;
            blue += data[s + 2] * bottomLeft;
            s = bottom + right;
            red += data[s] * bottomRight;
            green += data[s + 1] * bottomRight;
            blue += data[s + 2] * bottomRight;
          } else {
            addCompositedTap(data, inC, top + left, topLeft, composited);
            addCompositedTap(data, inC, top + right, topRight, composited);
            addCompositedTap(data, inC, bottom + left, bottomLeft, composited);
            addCompositedTap(data, inC, bottom + right, bottomRight, composited);
          }
        }
      }
      if (inC !== 3) {
        red = composited[0];
        green = composited[1];
        blue = composited[2];
      }
      const d = (oy * spec.width + ox) * outC;
      if (outC === 1) {
        // ITU-R BT.601 luma, as preprocessToBytes.
        out[d] = toByte((red * 299 + green * 587 + blue * 114) / 1000 / samples);
      } else {
        out[d] = toByte(red / samples);
        out[d + 1] = toByte(green / samples);
        out[d + 2] = toByte(blue / samples);
      }
    }
  }
  return out;
}

/** `i` moved into `[0, size)`: coordinates outside the image take its nearest edge pixel. */
function clamp(i: number, size: number): number {
  return i < 0 ? 0 : i >= size ? size - 1 : i;
}

/** Adds a grey or RGBA pixel's RGB times `weight` to `sum`: grey repeated, alpha composited over white as preprocessToBytes does. */
function addCompositedTap(data: Uint8Array | Uint8ClampedArray, channels: number, s: number, weight: number, sum: Float64Array): void {
  if (channels === 1) {
    const grey = data[s] * weight;
    sum[0] += grey;
    sum[1] += grey;
    sum[2] += grey;
    return;
  }
  const alpha = data[s + 3];
  if (alpha === 255) {
    for (let c = 0; c < 3; c++) sum[c] += data[s + c] * weight;
    return;
  }
  const white = 255 * (255 - alpha);
  for (let c = 0; c < 3; c++) sum[c] += ((data[s + c] * alpha + white) / 255) * weight;
}

function toByte(value: number): number {
  return Math.min(255, Math.max(0, Math.round(value)));
}

/**
 * Why a face should not be aligned and passed to the models, or null: its eyes are under
 * `MIN_EYE_DISTANCE_PX` apart, or more than `MAX_OUTSIDE_FRACTION` of its aligned crop is outside the image.
 */
export function alignmentProblem(landmarks: FaceLandmarks, image: { width: number; height: number }, scale = 1): string | null {
  const eyeDistance = Math.hypot(landmarks.leftEye[0] - landmarks.rightEye[0], landmarks.leftEye[1] - landmarks.rightEye[1]);
  // Judged on the pixels the face is cut from; said in the photo's pixels (`scale` of them to one), as boxes are.
  if (eyeDistance < MIN_EYE_DISTANCE_PX) {
    const shrunk = scale > 1 ? ` (${MIN_EYE_DISTANCE_PX} once the photo is shrunk to ${Math.max(image.width, image.height)} px a side to cut faces from it)` : '';
    return `face too small: eyes ${(eyeDistance * scale).toFixed(1)} px apart, under ${Number((MIN_EYE_DISTANCE_PX * scale).toFixed(1))}${shrunk}`;
  }
  const toImage = cropToImage(landmarks);
  let outside = 0;
  for (let j = 0; j < OUTSIDE_GRID; j++) {
    for (let i = 0; i < OUTSIDE_GRID; i++) {
      const step = FACE_TEMPLATE.size / OUTSIDE_GRID;
      const [x, y] = applySimilarity(toImage, [(i + 0.5) * step, (j + 0.5) * step]);
      if (x < 0 || y < 0 || x > image.width || y > image.height) outside++;
    }
  }
  const fraction = outside / (OUTSIDE_GRID * OUTSIDE_GRID);
  if (fraction > MAX_OUTSIDE_FRACTION) {
    return `face too cut off: ${Math.round(fraction * 100)}% of its crop is outside the image, over ${Math.round(MAX_OUTSIDE_FRACTION * 100)}%`;
  }
  return null;
}
