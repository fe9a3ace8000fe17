/**
 * npx tsx training/bench/crop-side.ts [--limit N] [--sides 160,128] [--trusted 0.6,0.7] [--fractions 1,0.75,0.5,0.3] [--data DIR]
 *
 * How a crop-sized photo's detector pass at a smaller input side (CropPass.cropInputSize, the detector resized by
 * contract/face/detector-resize.ts) finds and places faces, against the full 256 side, through detectFaces as the
 * server and page run it. Each training-split UTKFace crop is shrunk to a fraction of a 200x200 photo and placed at
 * a seeded random spot on another crop blurred beyond recognition, so that a photo no larger than a crop may still
 * hold a small face. For each side and trusted fraction (the small side's faces are kept when one fills that much
 * of the shorter side; else the photo is searched again at 256), it prints faces found, false faces, the eye-centre
 * error in eye distances, and how often the 256 pass ran. Choose on the train split; the test split is never read.
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import sharp, { type Sharp } from 'sharp';
import { BLAZEFACE_INPUT_SIZE } from '../../contract/face/blazeface.ts';
import { DEFAULT_CROP_PASS, DEFAULT_MAX_FACES, DEFAULT_MIN_SCORE, detectFaces, type RunDetector } from '../../contract/face/photo.ts';
import type { PixelBuffer } from '../../contract/preprocess.ts';
import { isMain, parsePositiveInt, runCli, UsageError } from '../../node-shared/cli-args.ts';
import { openDetectorSessions } from '../../node-shared/detector-sessions.ts';
import { defaultDataSource } from '../../node-shared/paths.ts';
import { seededRandom } from '../../node-shared/random.ts';
import { BLAZEFACE_BACK_MODEL, cropTruth, eyeCentreError, matchDetections, TRAINING_SEED, utkFaceSplit, type TrueFace } from '../data/faces.ts';
import { shuffledIndices } from '../data/split.ts';

const USAGE = `Usage: npx tsx training/bench/crop-side.ts [--limit N] [--sides LIST] [--trusted LIST] [--fractions LIST] [--data DIR]

  --limit N        training-split crops per fraction                          (default: 300)
  --sides LIST     smaller detector input sides to try, multiples of 32     (default: 160,128)
  --trusted LIST   trusted fractions of the shorter side to try              (default: 0.6,0.7,0.8)
  --fractions LIST the face's side as a fraction of the 200x200 photo         (default: 1,0.85,0.75,0.6,0.5,0.3)
  --data DIR       the UTKFace folder                              (default: ../shared/data/utkface)`;

const PHOTO_SIDE = 200;
/** Blur (sigma, pixels) that leaves no face in the background crop. */
const BACKGROUND_BLUR = 12;
const PLACEMENT_SEED = 7;
/** Past the crops face-detect.ts and face-template.ts draw first, so that these are others. */
const FIRST_CROP = 1000;

interface Config {
  name: string;
  side: number;
  trusted: number;
}

interface Tally {
  faces: number;
  found: number;
  falses: number;
  eyeError: number;
  fullSidePasses: number;
}

function parseList(flag: string, text: string, valid: (n: number) => boolean): number[] {
  const values = text.split(',').map(Number);
  if (values.length === 0 || !values.every(valid)) throw new UsageError(`${flag} "${text}" is invalid; expected a comma-separated list`);
  return values;
}

async function rawPixels(image: Sharp): Promise<PixelBuffer> {
  const { data, info } = await image.removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, channels: 3, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { data: { type: 'string' }, limit: { type: 'string' }, sides: { type: 'string' }, trusted: { type: 'string' }, fractions: { type: 'string' } }, strict: true });
  const data = values.data ?? defaultDataSource();
  if (data === undefined) throw new UsageError('no --data given and ../shared/data/utkface is absent');
  const limit = values.limit === undefined ? 300 : parsePositiveInt('--limit', values.limit);
  const sides = parseList('--sides', values.sides ?? '160,128', (n) => Number.isInteger(n) && n > 0 && n % 32 === 0 && n < BLAZEFACE_INPUT_SIZE);
  const trusted = parseList('--trusted', values.trusted ?? '0.6,0.7,0.8', (n) => n > 0 && n <= 1);
  const fractions = parseList('--fractions', values.fractions ?? '1,0.85,0.75,0.6,0.5,0.3', (n) => n > 0 && n <= 1);
  const { train } = await utkFaceSplit(resolve(data));
  const order = shuffledIndices(train.length, TRAINING_SEED + 1);
  const faces = Array.from(order.subarray(FIRST_CROP, FIRST_CROP + limit), (i) => train[i]);
  const backgrounds = Array.from(order.subarray(FIRST_CROP + limit, FIRST_CROP + 2 * limit), (i) => train[i]);

  const bytes = new Uint8Array(await readFile(BLAZEFACE_BACK_MODEL));
  const detectors = new Map(await Promise.all(sides.map(async (side) => [side, await openDetectorSessions(bytes, 1, { ...DEFAULT_CROP_PASS, cropInputSize: side })] as const)));
  const configs: Config[] = [{ name: `${BLAZEFACE_INPUT_SIZE} only`, side: BLAZEFACE_INPUT_SIZE, trusted: 0 }, ...sides.flatMap((side) => trusted.map((t) => ({ name: `${side}, ${BLAZEFACE_INPUT_SIZE} unless a face >= ${t}`, side, trusted: t })))];
  try {
    for (const fraction of fractions) {
      const tallies = configs.map((): Tally => ({ faces: 0, found: 0, falses: 0, eyeError: 0, fullSidePasses: 0 }));
      const random = seededRandom(PLACEMENT_SEED);
      for (const [k, file] of faces.entries()) {
        const side = Math.round(PHOTO_SIDE * fraction);
        const x = Math.floor(random() * (PHOTO_SIDE - side + 1));
        const y = Math.floor(random() * (PHOTO_SIDE - side + 1));
        const background = await sharp(join(data, backgrounds[k].name)).resize(PHOTO_SIDE, PHOTO_SIDE).blur(BACKGROUND_BLUR).toBuffer();
        const face = await sharp(join(data, file.name)).resize(side, side, { kernel: 'lanczos3' }).toBuffer();
        const pixels = await rawPixels(sharp(background).composite([{ input: face, left: x, top: y }]));
        const placed = cropTruth(side);
        const shift = (p: readonly [number, number]): [number, number] => [p[0] + x, p[1] + y];
        const truth: TrueFace[] = [{ box: { ...placed.box, x: placed.box.x + x, y: placed.box.y + y }, rightEye: shift(placed.rightEye), leftEye: shift(placed.leftEye) }];
        for (const [i, config] of configs.entries()) {
          const tally = tallies[i];
          // Every detector holds a 256 session; the 256-only row runs the first one's.
          const sessions = detectors.get(config.side) ?? detectors.get(sides[0])!;
          const run: RunDetector = (input, inputSize) => {
            if (inputSize === BLAZEFACE_INPUT_SIZE && config.side !== BLAZEFACE_INPUT_SIZE) tally.fullSidePasses++;
            return sessions.run(input, inputSize);
          };
          const cropPass = { ...DEFAULT_CROP_PASS, cropInputSize: config.side, cropTrustedFraction: config.trusted };
          const found = await detectFaces(pixels, run, { minScore: DEFAULT_MIN_SCORE, maxFaces: DEFAULT_MAX_FACES }, undefined, BLAZEFACE_INPUT_SIZE, cropPass);
          const matches = matchDetections(found, truth);
          tally.faces += truth.length;
          tally.falses += matches.duplicates + matches.elsewhere;
          matches.detectionOf.forEach((d, f) => {
            if (d < 0) return;
            tally.found++;
            tally.eyeError += eyeCentreError(found[d], truth[f]);
          });
        }
      }
      for (const [i, config] of configs.entries()) {
        const t = tallies[i];
        const fullSide = config.side === BLAZEFACE_INPUT_SIZE ? '' : `, the ${BLAZEFACE_INPUT_SIZE} pass on ${((100 * t.fullSidePasses) / faces.length).toFixed(1)}% of photos`;
        console.log(`face ${fraction} of the photo, ${config.name.padEnd(28)} found ${((100 * t.found) / t.faces).toFixed(1).padStart(5)}%, false faces per 100 photos ${((100 * t.falses) / faces.length).toFixed(1)}, eye error ${(t.eyeError / Math.max(1, t.found)).toFixed(3)}${fullSide}`);
      }
    }
  } finally {
    for (const sessions of detectors.values()) await sessions.release();
  }
}

if (isMain(import.meta.url)) runCli(USAGE, main);
