/**
 * Training-time augmentation on one preprocessed face: horizontal flip, a small random affine warp (scale,
 * rotation, shift; bilinear, borders replicated) and brightness/contrast jitter. It writes the model input
 * (scaled as the spec says, to [0, 1]) directly, so an augmented batch costs one pass over the pixels.
 */
import { byteScale, type InputSpec } from '../../contract/preprocess.ts';

export interface AugmentOptions {
  /** probability of a horizontal flip */
  flip: number;
  /** largest relative scale change, e.g. 0.1 for 0.9x to 1.1x */
  scale: number;
  /** largest rotation, degrees either way */
  rotationDegrees: number;
  /** largest shift, as a fraction of the image side */
  shift: number;
  /** largest brightness change, added in [0, 1] units */
  brightness: number;
  /** largest relative contrast change around the face's mean, e.g. 0.2 for 0.8x to 1.2x */
  contrast: number;
}

export const NO_AUGMENTATION: AugmentOptions = { flip: 0, scale: 0, rotationDegrees: 0, shift: 0, brightness: 0, contrast: 0 };

/** One face's transform, drawn from `random`. */
export interface FaceTransform {
  flip: boolean;
  scale: number;
  rotation: number;
  shiftX: number;
  shiftY: number;
  brightness: number;
  contrast: number;
}

export function drawTransform(options: AugmentOptions, random: () => number): FaceTransform {
  const spread = (limit: number) => (2 * random() - 1) * limit;
  return {
    flip: random() < options.flip,
    scale: 1 + spread(options.scale),
    rotation: (spread(options.rotationDegrees) * Math.PI) / 180,
    shiftX: spread(options.shift),
    shiftY: spread(options.shift),
    brightness: spread(options.brightness),
    contrast: 1 + spread(options.contrast),
  };
}

/**
 * Writes `face` (preprocessed bytes, HWC) transformed by `t` into `out`, scaled as `spec` says (to [0, 1]).
 * Each output pixel samples the source at the inverse-transformed position.
 */
export function augmentFace(face: Uint8Array, spec: InputSpec, t: FaceTransform, out: Float32Array): void {
  const { height: h, width: w, channels: c } = spec;
  const cx = (w - 1) / 2;
  const cy = (h - 1) / 2;
  const cos = Math.cos(t.rotation) / t.scale;
  const sin = Math.sin(t.rotation) / t.scale;
  const dx = t.shiftX * w;
  const dy = t.shiftY * h;
  const scale = byteScale(spec);
  let mean = 0;
  for (let i = 0; i < face.length; i++) mean += face[i];
  mean /= face.length * scale;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const ox = (t.flip ? w - 1 - x : x) - cx - dx;
      const oy = y - cy - dy;
      const sx = Math.min(w - 1, Math.max(0, cos * ox + sin * oy + cx));
      const sy = Math.min(h - 1, Math.max(0, -sin * ox + cos * oy + cy));
      const x0 = Math.floor(sx);
      const y0 = Math.floor(sy);
      const x1 = Math.min(w - 1, x0 + 1);
      const y1 = Math.min(h - 1, y0 + 1);
      const fx = sx - x0;
      const fy = sy - y0;
      for (let k = 0; k < c; k++) {
        const top = face[(y0 * w + x0) * c + k] * (1 - fx) + face[(y0 * w + x1) * c + k] * fx;
        const bottom = face[(y1 * w + x0) * c + k] * (1 - fx) + face[(y1 * w + x1) * c + k] * fx;
        const v = (top * (1 - fy) + bottom * fy) / scale;
        out[(y * w + x) * c + k] = Math.min(1, Math.max(0, (v - mean) * t.contrast + mean + t.brightness));
      }
    }
  }
}
