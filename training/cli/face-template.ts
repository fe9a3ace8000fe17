/**
 * npx tsx training/cli/face-template.ts [--data DIR] [--limit N] [--padding P] [--out FILE]
 *
 * Where the face detector puts the eyes, nose tip and mouth in UTKFace's own aligned crops: the mean over a seeded
 * subset of the training split, in the crops' 200x200 pixels. Alignment maps detected faces onto these points, so
 * that a face cut out of a photo is framed as the faces the models were trained on.
 */
import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { isMain, parsePositiveInt, runCli, UsageError } from '../../node-shared/cli-args.ts';
import { defaultDataSource } from '../../node-shared/paths.ts';
import { CROP_PADDING } from '../../contract/face/blazeface.ts';
import { shuffledIndices } from '../data/split.ts';
import { loadFaceDetector, readRgb, TRAINING_SEED, utkFaceSplit } from '../data/faces.ts';

const USAGE = `Usage: npx tsx training/cli/face-template.ts [--data DIR] [--limit N] [--padding P] [--out FILE]

Runs the BlazeFace detector over training-split UTKFace crops and prints the mean position of the eyes, nose tip,
mouth and box in the crops' pixels, as the TypeScript constant of contract/face/template.ts.

  --data DIR     the UTKFace folder                                      (default: ../shared/data/utkface)
  --limit N      a seeded random subset of N training faces                                (default: 2000)
  --padding P    the detector's padding, a multiple of the crop's side                     (default: ${CROP_PADDING})
  --out FILE     also write the constant to FILE (e.g. contract/face/template.ts)`;

const DEFAULT_LIMIT = 2000;
/** Detections below this score are left out of the mean. */
const MIN_SCORE = 0.5;
const POINTS = ['rightEye', 'leftEye', 'nose', 'mouth'] as const;
const BOX_KEYS = ['x', 'y', 'width', 'height'] as const;

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: { data: { type: 'string' }, limit: { type: 'string' }, padding: { type: 'string' }, out: { type: 'string' }, help: { type: 'boolean' } },
    strict: true,
  });
  if (values.help) throw new UsageError('');
  const data = values.data ?? defaultDataSource();
  if (data === undefined) throw new UsageError('no --data given and ../shared/data/utkface is absent');
  const limit = values.limit === undefined ? DEFAULT_LIMIT : parsePositiveInt('--limit', values.limit);
  const padding = values.padding === undefined ? CROP_PADDING : Number(values.padding);
  if (!(padding >= 1)) throw new UsageError(`--padding "${values.padding}" is invalid; expected a number of at least 1`);

  const { train } = await utkFaceSplit(resolve(data));
  const order = shuffledIndices(train.length, TRAINING_SEED);
  const chosen = Array.from(order.subarray(0, Math.min(limit, train.length)), (i) => train[i]);
  const detector = await loadFaceDetector();
  const sums = Object.fromEntries(POINTS.map((name) => [name, [0, 0]])) as Record<(typeof POINTS)[number], number[]>;
  const boxSums = { x: 0, y: 0, width: 0, height: 0 };
  let used = 0;
  let size = 0;
  try {
    for (const face of chosen) {
      const image = await readRgb(join(data, face.name));
      size = image.width;
      const [best] = await detector.detect(image, { padding, minScore: MIN_SCORE, maxFaces: 1 });
      if (best === undefined) continue;
      used++;
      for (const name of POINTS) {
        sums[name][0] += best.landmarks[name][0];
        sums[name][1] += best.landmarks[name][1];
      }
      for (const key of BOX_KEYS) boxSums[key] += best.box[key];
    }
  } finally {
    await detector.release();
  }
  if (used === 0) throw new Error(`no face was found in the ${chosen.length} crops tried`);
  const round = (v: number): number => Math.round((v / used) * 10) / 10;
  const lines = POINTS.map((name) => `  ${name}: [${round(sums[name][0])}, ${round(sums[name][1])}],`);
  const box = BOX_KEYS.map((key) => `${key}: ${round(boxSums[key])}`).join(', ');
  const source = `/**
 * Where the detector's keypoints and box sit in UTKFace's own aligned crops: the mean over ${used} of ${chosen.length}
 * training-split crops (the others had no face scoring ${MIN_SCORE}), in the crops' ${size}x${size} pixels. Written by
 * \`npx tsx training/cli/face-template.ts --limit ${limit} --padding ${padding} --out contract/face/template.ts\`.
 */
import type { Box } from './blazeface.ts';

export const FACE_TEMPLATE = {
  size: ${size},
${lines.join('\n')}
  box: { ${box} },
} as const satisfies { size: number; box: Box } & Record<'rightEye' | 'leftEye' | 'nose' | 'mouth', readonly [number, number]>;
`;
  process.stdout.write(source);
  if (values.out !== undefined) await writeFile(values.out, source);
}

if (isMain(import.meta.url)) runCli(USAGE, main);
