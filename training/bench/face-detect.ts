/**
 * npx tsx training/bench/face-detect.ts [--data DIR] [--limit N] [--model back|front] [--min-score S]
 *
 * How often BlazeFace finds the face in test-split UTKFace crops at each padding, and how long detection takes in
 * onnxruntime-node on one thread. A crop counts as found when the best face's eye centre is within a quarter of
 * the template's eye distance of the template's.
 */
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { DEFAULT_MIN_SCORE } from '../../contract/face/blazeface.ts';
import { FACE_TEMPLATE } from '../../contract/face/template.ts';
import { isMain, parseChoice, parsePositiveInt, runCli, UsageError } from '../../node-shared/cli-args.ts';
import { defaultDataSource } from '../../node-shared/paths.ts';
import { BLAZEFACE_BACK_MODEL, BLAZEFACE_FRONT_MODEL, loadFaceDetector, readRgb, TRAINING_SEED, utkFaceSplit } from '../data/faces.ts';
import { shuffledIndices } from '../data/split.ts';

const USAGE = `Usage: npx tsx training/bench/face-detect.ts [--data DIR] [--limit N] [--model back|front] [--min-score S]`;
const PADDINGS = [1, 1.25, 1.5, 2];
const MODELS = { back: BLAZEFACE_BACK_MODEL, front: BLAZEFACE_FRONT_MODEL } as const;

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { data: { type: 'string' }, limit: { type: 'string' }, model: { type: 'string' }, 'min-score': { type: 'string' } } });
  const data = values.data ?? defaultDataSource();
  if (data === undefined) throw new UsageError('no --data given and ../shared/data/utkface is absent');
  const limit = values.limit === undefined ? 300 : parsePositiveInt('--limit', values.limit);
  const model = parseChoice('--model', values.model ?? 'back', ['back', 'front'] as const);
  const minScore = values['min-score'] === undefined ? DEFAULT_MIN_SCORE : Number(values['min-score']);
  const { test } = await utkFaceSplit(resolve(data));
  const chosen = Array.from(shuffledIndices(test.length, TRAINING_SEED).subarray(0, limit), (i) => test[i]);
  const images = await Promise.all(chosen.map((face) => readRgb(join(data, face.name))));
  const detector = await loadFaceDetector(MODELS[model], 1);
  const eyeCentre = [(FACE_TEMPLATE.rightEye[0] + FACE_TEMPLATE.leftEye[0]) / 2, (FACE_TEMPLATE.rightEye[1] + FACE_TEMPLATE.leftEye[1]) / 2];
  const tolerance = 0.25 * (FACE_TEMPLATE.leftEye[0] - FACE_TEMPLATE.rightEye[0]);
  console.log(`${model} model, ${images.length} test-split crops, minScore ${minScore}`);
  for (const padding of PADDINGS) {
    let found = 0;
    let extra = 0;
    const started = performance.now();
    for (const image of images) {
      const faces = await detector.detect(image, { padding, minScore });
      const hit = faces.findIndex((f) => Math.hypot((f.landmarks.rightEye[0] + f.landmarks.leftEye[0]) / 2 - eyeCentre[0], (f.landmarks.rightEye[1] + f.landmarks.leftEye[1]) / 2 - eyeCentre[1]) < tolerance);
      if (hit >= 0) found++;
      extra += faces.length - (hit >= 0 ? 1 : 0);
    }
    const msPerImage = (performance.now() - started) / images.length;
    console.log(`padding ${padding}: found ${found}/${images.length} (${((100 * found) / images.length).toFixed(1)}%), other faces ${extra}, ${msPerImage.toFixed(1)} ms per image (input, model, decode; 1 thread)`);
  }
  await detector.release();
}

if (isMain(import.meta.url)) runCli(USAGE, main);
