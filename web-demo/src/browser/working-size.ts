/**
 * The size the page finds faces at: as the server (imaging/photo-decode.ts), a photo larger than
 * `WORKING_SIDE` a side is shrunk to fit it, and boxes are reported in the photo's own pixels (`scale`).
 * Pure math on a pixel buffer, so Node can test it against the server's decoder.
 */
import type { PixelBuffer } from '../../../contract/preprocess.ts';

/** The server's DEFAULT_WORKING_SIDE (test/web-e2e.test.ts checks they are equal; browser code may not import imaging/). */
export const WORKING_SIDE = 1024;

/** The working size of a `width` x `height` photo: fitted inside `maxSide` square, never enlarged, as sharp's `fit: 'inside'`. */
export function workingSize(width: number, height: number, maxSide = WORKING_SIDE): { width: number; height: number } {
  if (Math.max(width, height) <= maxSide) return { width, height };
  return width >= height
    ? { width: maxSide, height: Math.max(1, Math.round((height * maxSide) / width)) }
    : { width: Math.max(1, Math.round((width * maxSide) / height)), height: maxSide };
}

const LANCZOS_LOBES = 3;
/** Filter positions are rounded to 1/64 of a pixel, as libvips' reduce tables them. */
const PHASES = 64;
/** Filter weights are fixed point with 12 fractional bits, as libvips' for 8-bit images. */
const WEIGHT_BITS = 12;
const WEIGHT_ONE = 1 << WEIGHT_BITS;

/** Lanczos's kernel with 3 lobes. */
function lanczos3(x: number): number {
  if (x === 0) return 1;
  if (x <= -LANCZOS_LOBES || x >= LANCZOS_LOBES) return 0;
  const px = Math.PI * x;
  return (LANCZOS_LOBES * Math.sin(px) * Math.sin(px / LANCZOS_LOBES)) / (px * px);
}

/**
 * For each output index along one axis, shrinking by `shrink`: the input index of each tap (edge pixels
 * repeated outside) and its fixed-point weight. Placed as libvips' reduce places them: output centres at
 * (o + 0.5) * shrink, the pixels an inexact output size leaves over split between both ends, taps 2 * round(3 * shrink) + 1.
 */
function reduceTaps(inSize: number, outSize: number, shrink: number): { index: Int32Array; weight: Int32Array }[] {
  const taps = 2 * Math.round(LANCZOS_LOBES * shrink) + 1;
  const leftOver = outSize * shrink - inSize;
  const offset = (1 + leftOver) / 2 - 1;
  const before = Math.ceil(taps / 2) - 1;
  const result: { index: Int32Array; weight: Int32Array }[] = [];
  for (let o = 0; o < outSize; o++) {
    const position = (o + 0.5) * shrink - 0.5 - offset;
    const first = Math.trunc(position);
    // The position's fraction, rounded to the nearest of PHASES steps (truncated at twice that resolution first).
    const phase = ((Math.trunc(position * PHASES * 2) & (PHASES * 2 - 1)) + 1) >> 1;
    const centre = phase / PHASES + taps / 2 - 1;
    const raw = Array.from({ length: taps }, (_, i) => lanczos3((i - centre) / shrink));
    const sum = raw.reduce((a, b) => a + b, 0);
    result.push({
      index: Int32Array.from(raw, (_, i) => Math.min(inSize - 1, Math.max(0, first + i - before))),
      weight: Int32Array.from(raw, (w) => Math.trunc((w / sum) * WEIGHT_ONE)),
    });
  }
  return result;
}

const toByte = (sum: number): number => Math.max(0, Math.min(255, (sum + WEIGHT_ONE / 2) >> WEIGHT_BITS));

/**
 * `image` shrunk by `shrink` (input pixels per output pixel, the same on both axes) to `width` x `height` with
 * a Lanczos-3 filter, vertically then horizontally, in 8-bit fixed point: the numbers sharp's resize (libvips'
 * reduce, its default kernel) gives for the same pixels, so the page finds the server's faces in a large photo.
 */
export function shrinkLanczos(image: PixelBuffer, width: number, height: number, shrink = image.width / width): PixelBuffer {
  const { channels, data } = image;
  const rows = reduceTaps(image.height, height, shrink);
  const columns = reduceTaps(image.width, width, shrink);
  const inStride = image.width * channels;
  const tall = new Uint8ClampedArray(height * inStride);
  const sums = new Int32Array(inStride);
  for (let oy = 0; oy < height; oy++) {
    const { index, weight } = rows[oy];
    sums.fill(0);
    for (let k = 0; k < weight.length; k++) {
      const w = weight[k];
      const start = index[k] * inStride;
      for (let i = 0; i < inStride; i++) sums[i] += data[start + i] * w;
    }
    const row = oy * inStride;
    for (let i = 0; i < inStride; i++) tall[row + i] = toByte(sums[i]);
  }
  const out = new Uint8ClampedArray(width * height * channels);
  for (let y = 0; y < height; y++) {
    const row = y * inStride;
    for (let ox = 0; ox < width; ox++) {
      const { index, weight } = columns[ox];
      for (let c = 0; c < channels; c++) {
        let sum = 0;
        for (let k = 0; k < weight.length; k++) sum += tall[row + index[k] * channels + c] * weight[k];
        out[(y * width + ox) * channels + c] = toByte(sum);
      }
    }
  }
  return { width, height, channels, data: out };
}

/** A decoded photo at its working size, and its own size: what boxes are reported in. */
export interface WorkingPhoto {
  pixels: PixelBuffer;
  /** the photo's size after EXIF orientation */
  width: number;
  height: number;
  /** photo pixels per working pixel (1 where no shrinking was needed) */
  scale: number;
}

/** The photo at its working size (`shrinkLanczos` where it is larger). */
export function toWorkingSize(image: PixelBuffer, maxSide = WORKING_SIDE): WorkingPhoto {
  const size = workingSize(image.width, image.height, maxSide);
  if (size.width === image.width && size.height === image.height) return { pixels: image, width: image.width, height: image.height, scale: 1 };
  // One factor for both axes, from the longer side, as sharp's `fit: 'inside'`.
  const shrink = Math.max(image.width, image.height) / maxSide;
  return { pixels: shrinkLanczos(image, size.width, size.height, shrink), width: image.width, height: image.height, scale: image.width / size.width };
}
