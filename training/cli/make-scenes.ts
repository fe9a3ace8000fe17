/**
 * npx tsx training/cli/make-scenes.ts --out .cache/scenes [--count 200] [--seed 1] [--split test|train] [--composition whole|ellipse] [--data DIR]
 *
 * Seeded synthetic photos for measuring face detection: one to four UTKFace faces per scene (test split for the
 * figures we report, train split for choosing thresholds), scaled, rotated and drawn onto procedural backgrounds
 * (gradients, noise, rectangles and blobs: nothing a detector could rightly call a face). By default each face is
 * its whole square crop (hair, neck, shoulders and the crop's own background kept, as a photo of a person keeps
 * them; the models learnt from whole crops), its edge feathered over a few pixels; `--composition ellipse` blends
 * only a soft ellipse around the face instead. Writes scene-NNNN.jpg files and scenes.json with each
 * face's source file, labels, box and eye positions in scene pixels: where the detector puts them on UTKFace's own
 * crops (FACE_TEMPLATE's box and eyes), carried by the transform that placed the crop, so that a detection of the
 * face lands on its ground truth. The scenes are derived from UTKFace: keep them out of the repository.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { applySimilarity, type Similarity } from '../../contract/face/align.ts';
import type { Box, Point } from '../../contract/face/blazeface.ts';
import { FACE_TEMPLATE } from '../../contract/face/template.ts';
import type { FaceLabels } from '../../contract/labels.ts';
import { isMain, parseChoice, parsePositiveInt, runCli, UsageError } from '../../node-shared/cli-args.ts';
import { defaultDataSource } from '../../node-shared/paths.ts';
import { readRgb, utkFaceSplit } from '../data/faces.ts';
import { seededRandom, shuffledIndices } from '../data/split.ts';

const USAGE = `Usage: npx tsx training/cli/make-scenes.ts --out DIR [--count N] [--seed S] [--split test|train] [--composition C] [--data DIR]

  --out DIR     where the scenes and scenes.json go; keep it under .cache/            (required)
  --count N     scenes to make                                                        (default: 200)
  --seed S      the same seed makes the same scenes                                   (default: 1)
  --split S     whose faces: test (the figures we report) or train (choosing thresholds) (default: test)
  --composition C  whole: the whole square crop, edge feathered; ellipse: a soft ellipse of it (default: whole)
  --data DIR    the UTKFace folder                                (default: ../shared/data/utkface)`;

const MIN_WIDTH_PX = 640;
const MAX_WIDTH_PX = 1280;
const MIN_HEIGHT_PX = 480;
const MAX_HEIGHT_PX = 960;
const MAX_FACES = 4;
/** A face's crop side as a fraction of the scene's shorter side. */
const MIN_FACE_FRACTION = 0.2;
const MAX_FACE_FRACTION = 0.55;
const MAX_ROTATION_DEGREES = 12;
const PLACEMENT_TRIES = 100;
const JPEG_QUALITY = 90;
/** Scene pixels over which a whole crop's edge fades into the background, so that the square has no razor edge. */
const EDGE_FEATHER_PX = 3;
/** The ellipse composition's mask: an ellipse of these half-axes (fractions of the crop side) fading over its outer part. */
const MASK_HALF_WIDTH = 0.47;
const MASK_HALF_HEIGHT = 0.5;
const MASK_FADE_FROM = 0.8;
/** Shapes drawn on each background. */
const MAX_RECTANGLES = 12;
const MAX_BLOBS = 10;
const NOISE_AMPLITUDE = 24;

export interface SceneFace {
  source: string;
  labels: FaceLabels;
  /** where a detector's box sits for this face: FACE_TEMPLATE's box, its centre and size carried by the placement */
  box: Box;
  rightEye: Point;
  leftEye: Point;
  /** side of the placed crop, scene pixels */
  size: number;
  rotationDegrees: number;
}

export const SCENE_SPLITS = ['test', 'train'] as const;
export type SceneSplit = (typeof SCENE_SPLITS)[number];

/** How much of each crop goes into the scene: the whole square, or the ellipse the first scenes used. */
export const SCENE_COMPOSITIONS = ['whole', 'ellipse'] as const;
export type SceneComposition = (typeof SCENE_COMPOSITIONS)[number];

export interface Scene {
  file: string;
  width: number;
  height: number;
  faces: SceneFace[];
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      out: { type: 'string' },
      count: { type: 'string' },
      seed: { type: 'string' },
      split: { type: 'string' },
      composition: { type: 'string' },
      data: { type: 'string' },
      help: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help) throw new UsageError('');
  if (values.out === undefined) throw new UsageError('--out is required');
  const data = values.data ?? defaultDataSource();
  if (data === undefined) throw new UsageError('no --data given and ../shared/data/utkface is absent');
  const count = values.count === undefined ? 200 : parsePositiveInt('--count', values.count);
  const seed = values.seed === undefined ? 1 : parsePositiveInt('--seed', values.seed, 0);
  const split = parseChoice('--split', values.split ?? 'test', SCENE_SPLITS);
  const composition = COMPOSITIONS[parseChoice('--composition', values.composition ?? 'whole', SCENE_COMPOSITIONS)];
  const out = resolve(values.out);
  await mkdir(out, { recursive: true });

  const faceFiles = (await utkFaceSplit(resolve(data)))[split];
  const order = shuffledIndices(faceFiles.length, seed);
  const random = seededRandom(seed);
  const between = (low: number, high: number): number => low + (high - low) * random();
  let nextFace = 0;
  const scenes: Scene[] = [];
  for (let s = 0; s < count; s++) {
    const width = Math.round(between(MIN_WIDTH_PX, MAX_WIDTH_PX));
    const height = Math.round(between(MIN_HEIGHT_PX, MAX_HEIGHT_PX));
    const pixels = drawBackground(width, height, random);
    const placements = placeFaces(width, height, 1 + Math.floor(random() * MAX_FACES), between, composition.footprint);
    const faces: SceneFace[] = [];
    for (const placement of placements) {
      const face = faceFiles[order[nextFace++ % order.length]];
      const crop = await readRgb(join(data, face.name));
      const toScene = placementTransform(placement, crop.width);
      blendFace(pixels, width, height, crop, toScene, composition.alpha);
      faces.push(describeFace(face.name, face.labels, placement, toScene, crop.width));
    }
    const file = `scene-${String(s).padStart(4, '0')}.jpg`;
    await sharp(pixels, { raw: { width, height, channels: 3 } }).jpeg({ quality: JPEG_QUALITY }).toFile(join(out, file));
    scenes.push({ file, width, height, faces });
  }
  await writeFile(join(out, 'scenes.json'), `${JSON.stringify({ seed, count, split, composition: composition.name, scenes }, null, 1)}\n`);
  const faceCount = scenes.reduce((sum, scene) => sum + scene.faces.length, 0);
  console.log(`wrote ${count} scenes with ${faceCount} ${split}-split faces (${composition.name} crops) to ${out}`);
}

interface Placement {
  centreX: number;
  centreY: number;
  size: number;
  rotationDegrees: number;
}

/** The scene area a placed face covers, which must stay inside the scene and off every other face. */
interface Footprint {
  /** half the width (and height) of its upright bounding box */
  halfExtent(placement: Placement): number;
  overlaps(a: Placement, b: Placement): boolean;
}

/** The inscribed circle: what the ellipse composition draws on. */
const CIRCLE_FOOTPRINT: Footprint = {
  halfExtent: (p) => p.size / 2,
  overlaps: (a, b) => Math.hypot(a.centreX - b.centreX, a.centreY - b.centreY) < (a.size + b.size) / 2,
};

/** The whole rotated square. */
const SQUARE_FOOTPRINT: Footprint = {
  halfExtent: (p) => {
    const angle = (p.rotationDegrees * Math.PI) / 180;
    return (p.size / 2) * (Math.abs(Math.cos(angle)) + Math.abs(Math.sin(angle)));
  },
  overlaps: (a, b) => {
    const [cornersA, cornersB] = [squareCorners(a), squareCorners(b)];
    // Separating axes: two convex polygons are apart when their projections on some edge's normal are.
    return [a, b].every((p) => {
      const angle = (p.rotationDegrees * Math.PI) / 180;
      return [[Math.cos(angle), Math.sin(angle)], [-Math.sin(angle), Math.cos(angle)]].every(([nx, ny]) => {
        const along = (corners: Point[]): number[] => corners.map(([x, y]) => x * nx + y * ny);
        const [onA, onB] = [along(cornersA), along(cornersB)];
        return Math.max(...onA) > Math.min(...onB) && Math.max(...onB) > Math.min(...onA);
      });
    });
  },
};

function squareCorners(p: Placement): Point[] {
  const angle = (p.rotationDegrees * Math.PI) / 180;
  const [cos, sin] = [Math.cos(angle), Math.sin(angle)];
  const half = p.size / 2;
  return [[-1, -1], [1, -1], [1, 1], [-1, 1]].map(([sx, sy]): Point => [p.centreX + half * (sx * cos - sy * sin), p.centreY + half * (sx * sin + sy * cos)]);
}

/** Up to `wanted` faces whose footprints neither overlap nor leave the scene. */
function placeFaces(width: number, height: number, wanted: number, between: (low: number, high: number) => number, footprint: Footprint): Placement[] {
  const short = Math.min(width, height);
  const placed: Placement[] = [];
  for (let tries = 0; placed.length < wanted && tries < PLACEMENT_TRIES; tries++) {
    const size = short * between(MIN_FACE_FRACTION, MAX_FACE_FRACTION);
    // Drawn in this order so that the ellipse composition places its faces as the first (ellipse-only) scenes did.
    const across = between(0, 1);
    const down = between(0, 1);
    const rotationDegrees = between(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES);
    const reach = footprint.halfExtent({ centreX: 0, centreY: 0, size, rotationDegrees });
    const along = (low: number, high: number, t: number): number => low + (high - low) * t;
    const candidate = { centreX: along(reach, width - reach, across), centreY: along(reach, height - reach, down), size, rotationDegrees };
    if (placed.every((p) => !footprint.overlaps(p, candidate))) placed.push(candidate);
  }
  return placed;
}

/** Crop pixels to scene pixels: the crop's centre to the placement's, scaled to its size and rotated. */
function placementTransform(placement: Placement, cropSide: number): Similarity {
  const scale = placement.size / cropSide;
  const angle = (placement.rotationDegrees * Math.PI) / 180;
  const a = scale * Math.cos(angle);
  const b = scale * Math.sin(angle);
  const half = cropSide / 2;
  return { a, b, tx: placement.centreX - (a * half - b * half), ty: placement.centreY - (b * half + a * half) };
}

function describeFace(source: string, labels: FaceLabels, placement: Placement, toScene: Similarity, cropSide: number): SceneFace {
  const inCrop = cropSide / FACE_TEMPLATE.size;
  const eye = (name: 'rightEye' | 'leftEye'): Point => applySimilarity(toScene, [FACE_TEMPLATE[name][0] * inCrop, FACE_TEMPLATE[name][1] * inCrop]);
  // The detector's boxes stay upright and face-sized as a face turns a little: the template box's centre moves, its size scales.
  const { x, y, width, height } = FACE_TEMPLATE.box;
  const [centreX, centreY] = applySimilarity(toScene, [(x + width / 2) * inCrop, (y + height / 2) * inCrop]);
  const scale = Math.hypot(toScene.a, toScene.b) * inCrop;
  const box = { x: centreX - (width * scale) / 2, y: centreY - (height * scale) / 2, width: width * scale, height: height * scale };
  return { source, labels, box, rightEye: eye('rightEye'), leftEye: eye('leftEye'), size: placement.size, rotationDegrees: placement.rotationDegrees };
}

/** How opaque the crop is at (u, v), its position as fractions of the crop side, when placed `sidePx` scene pixels wide. */
type CropAlpha = (u: number, v: number, sidePx: number) => number;

/** The whole square, fading to the background over its outer EDGE_FEATHER_PX scene pixels. */
const featheredSquareAlpha: CropAlpha = (u, v, sidePx) => {
  const inside = Math.min(u, 1 - u, v, 1 - v) * sidePx;
  return inside <= 0 ? 0 : inside >= EDGE_FEATHER_PX ? 1 : smoothFade(inside / EDGE_FEATHER_PX);
};

/** A soft ellipse around the face: the crop's corners, much of its hair and its neck left out. */
const ellipseAlpha: CropAlpha = (u, v) => {
  const r = Math.hypot((u - 0.5) / MASK_HALF_WIDTH, (v - 0.5) / MASK_HALF_HEIGHT);
  return r >= 1 ? 0 : r <= MASK_FADE_FROM ? 1 : smoothFade((1 - r) / (1 - MASK_FADE_FROM));
};

const COMPOSITIONS: Record<SceneComposition, { name: SceneComposition; alpha: CropAlpha; footprint: Footprint }> = {
  whole: { name: 'whole', alpha: featheredSquareAlpha, footprint: SQUARE_FOOTPRINT },
  ellipse: { name: 'ellipse', alpha: ellipseAlpha, footprint: CIRCLE_FOOTPRINT },
};

/**
 * Draws the crop into the scene through `toScene`, weighted by `alpha`: each scene pixel is the mean of bilinear
 * samples on a grid fine enough that a shrunk crop is averaged, not aliased (as warpToCrop does the other way).
 */
function blendFace(scene: Uint8Array, width: number, height: number, crop: RgbImage, toScene: Similarity, alpha: CropAlpha): void {
  const side = crop.width;
  const norm = toScene.a * toScene.a + toScene.b * toScene.b;
  const scale = Math.sqrt(norm);
  const inverse = { a: toScene.a / norm, b: -toScene.b / norm };
  const samples = Math.max(1, Math.ceil(1 / scale - 1e-9));
  const reach = scale * side * Math.SQRT1_2;
  const centre = applySimilarity(toScene, [side / 2, side / 2]);
  const x0 = Math.max(0, Math.floor(centre[0] - reach));
  const x1 = Math.min(width - 1, Math.ceil(centre[0] + reach));
  const y0 = Math.max(0, Math.floor(centre[1] - reach));
  const y1 = Math.min(height - 1, Math.ceil(centre[1] + reach));
  // Scene position back to crop coordinates.
  const toCrop = (x: number, y: number): Point => {
    const dx = x - toScene.tx;
    const dy = y - toScene.ty;
    return [inverse.a * dx - inverse.b * dy, inverse.b * dx + inverse.a * dy];
  };
  const rgb = [0, 0, 0];
  const mean = [0, 0, 0];
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      const [u, v] = toCrop(x + 0.5, y + 0.5);
      const weight = alpha(u / side, v / side, scale * side);
      if (weight <= 0) continue;
      mean[0] = mean[1] = mean[2] = 0;
      for (let sy = 0; sy < samples; sy++) {
        for (let sx = 0; sx < samples; sx++) {
          const [su, sv] = toCrop(x + (sx + 0.5) / samples, y + (sy + 0.5) / samples);
          sampleBilinear(crop, su, sv, rgb);
          for (let c = 0; c < 3; c++) mean[c] += rgb[c] / (samples * samples);
        }
      }
      const d = (y * width + x) * 3;
      for (let c = 0; c < 3; c++) scene[d + c] = Math.round(scene[d + c] * (1 - weight) + mean[c] * weight);
    }
  }
}

function smoothFade(t: number): number {
  return t * t * (3 - 2 * t);
}

type RgbImage = { width: number; height: number; data: Uint8Array };

/** The crop's colour at (u, v) in its pixels, edges clamped, into `rgb`. */
function sampleBilinear(image: RgbImage, u: number, v: number, rgb: number[]): void {
  const fx = Math.min(image.width - 1, Math.max(0, u - 0.5));
  const fy = Math.min(image.height - 1, Math.max(0, v - 0.5));
  const xa = Math.floor(fx);
  const ya = Math.floor(fy);
  const xb = Math.min(image.width - 1, xa + 1);
  const yb = Math.min(image.height - 1, ya + 1);
  const tx = fx - xa;
  const ty = fy - ya;
  for (let c = 0; c < 3; c++) {
    const at = (x: number, y: number): number => image.data[(y * image.width + x) * 3 + c];
    rgb[c] = (at(xa, ya) * (1 - tx) + at(xb, ya) * tx) * (1 - ty) + (at(xa, yb) * (1 - tx) + at(xb, yb) * tx) * ty;
  }
}

/** A gradient between two random colours, then rectangles, blurred-edged blobs and per-pixel noise. */
function drawBackground(width: number, height: number, random: () => number): Uint8Array {
  const colour = (): number[] => [random() * 255, random() * 255, random() * 255];
  const [from, to] = [colour(), colour()];
  const angle = random() * 2 * Math.PI;
  const [cos, sin] = [Math.cos(angle), Math.sin(angle)];
  const span = Math.abs(cos) * width + Math.abs(sin) * height;
  const pixels = new Float32Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const t = Math.min(1, Math.max(0, ((x - width / 2) * cos + (y - height / 2) * sin) / span + 0.5));
      for (let c = 0; c < 3; c++) pixels[(y * width + x) * 3 + c] = from[c] + (to[c] - from[c]) * t;
    }
  }
  const rectangles = Math.floor(random() * (MAX_RECTANGLES + 1));
  for (let k = 0; k < rectangles; k++) {
    const fill = colour();
    const w = random() * width * 0.5;
    const h = random() * height * 0.5;
    const left = Math.floor(random() * (width - w));
    const top = Math.floor(random() * (height - h));
    for (let y = top; y < top + h; y++) for (let x = left; x < left + w; x++) for (let c = 0; c < 3; c++) pixels[(y * width + x) * 3 + c] = fill[c];
  }
  const blobs = Math.floor(random() * (MAX_BLOBS + 1));
  for (let k = 0; k < blobs; k++) {
    const fill = colour();
    const cx = random() * width;
    const cy = random() * height;
    const rx = 10 + random() * width * 0.2;
    const ry = 10 + random() * height * 0.2;
    for (let y = Math.max(0, Math.floor(cy - ry)); y < Math.min(height, cy + ry); y++) {
      for (let x = Math.max(0, Math.floor(cx - rx)); x < Math.min(width, cx + rx); x++) {
        const r = Math.hypot((x - cx) / rx, (y - cy) / ry);
        if (r >= 1) continue;
        const alpha = Math.min(1, (1 - r) * 4);
        for (let c = 0; c < 3; c++) pixels[(y * width + x) * 3 + c] += (fill[c] - pixels[(y * width + x) * 3 + c]) * alpha;
      }
    }
  }
  const bytes = new Uint8Array(pixels.length);
  for (let i = 0; i < pixels.length; i++) bytes[i] = Math.min(255, Math.max(0, Math.round(pixels[i] + (random() - 0.5) * NOISE_AMPLITUDE)));
  return bytes;
}

if (isMain(import.meta.url)) runCli(USAGE, main);
