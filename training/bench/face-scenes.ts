/**
 * npx tsx training/bench/face-scenes.ts [--scenes .cache/scenes] [--model back|front] [--padding P]
 *
 * Face detection on the synthetic scenes of training/cli/make-scenes.ts: for each minScore, the recall (a face
 * counts as found when a detection's box overlaps its box by IoU 0.5 or more, or the detection's eye centre is
 * within a quarter of its eye distance of the true one) and the false faces (detections matching no face) per
 * 100 scenes.
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { boxIou, DEFAULT_PADDING, type DetectedFace } from '../../contract/face/blazeface.ts';
import { isMain, parseChoice, runCli } from '../../node-shared/cli-args.ts';
import type { Scene, SceneFace } from '../cli/make-scenes.ts';
import { BLAZEFACE_BACK_MODEL, BLAZEFACE_FRONT_MODEL, loadFaceDetector, readRgb } from '../data/faces.ts';

const USAGE = 'Usage: npx tsx training/bench/face-scenes.ts [--scenes DIR] [--model back|front] [--padding P]';
const MIN_SCORES = [0.3, 0.4, 0.5, 0.6, 0.7];
const MODELS = { back: BLAZEFACE_BACK_MODEL, front: BLAZEFACE_FRONT_MODEL } as const;
const MATCH_IOU = 0.5;
const MATCH_EYE_FRACTION = 0.25;

function matches(detection: DetectedFace, face: SceneFace): boolean {
  if (boxIou(detection.box, face.box) >= MATCH_IOU) return true;
  const eyeDistance = Math.hypot(face.leftEye[0] - face.rightEye[0], face.leftEye[1] - face.rightEye[1]);
  const found = [(detection.landmarks.rightEye[0] + detection.landmarks.leftEye[0]) / 2, (detection.landmarks.rightEye[1] + detection.landmarks.leftEye[1]) / 2];
  const truth = [(face.rightEye[0] + face.leftEye[0]) / 2, (face.rightEye[1] + face.leftEye[1]) / 2];
  return Math.hypot(found[0] - truth[0], found[1] - truth[1]) <= MATCH_EYE_FRACTION * eyeDistance;
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { scenes: { type: 'string' }, model: { type: 'string' }, padding: { type: 'string' } } });
  const folder = resolve(values.scenes ?? '.cache/scenes');
  const model = parseChoice('--model', values.model ?? 'back', ['back', 'front'] as const);
  const padding = values.padding === undefined ? DEFAULT_PADDING : Number(values.padding);
  const { scenes } = JSON.parse(await readFile(join(folder, 'scenes.json'), 'utf8')) as { scenes: Scene[] };
  const detector = await loadFaceDetector(MODELS[model], 1);
  const found = new Array<number>(MIN_SCORES.length).fill(0);
  const falseFaces = new Array<number>(MIN_SCORES.length).fill(0);
  const missedSizes: number[] = [];
  let faceCount = 0;
  for (const scene of scenes) {
    const image = await readRgb(join(folder, scene.file));
    faceCount += scene.faces.length;
    for (const [k, minScore] of MIN_SCORES.entries()) {
      const detections = await detector.detect(image, { minScore, padding });
      for (const face of scene.faces) {
        if (detections.some((d) => matches(d, face))) found[k]++;
        else if (minScore === 0.5) missedSizes.push(Math.round(face.size));
      }
      falseFaces[k] += detections.filter((d) => !scene.faces.some((face) => matches(d, face))).length;
    }
  }
  await detector.release();
  console.log(`${model} model, padding ${padding}, ${scenes.length} scenes, ${faceCount} faces`);
  MIN_SCORES.forEach((minScore, k) => {
    const recall = (100 * found[k]) / faceCount;
    console.log(`minScore ${minScore.toFixed(2)}: recall ${recall.toFixed(1)}% (${found[k]}/${faceCount}), false faces per 100 scenes ${((100 * falseFaces[k]) / scenes.length).toFixed(1)}`);
  });
  console.log(`sizes (px) of faces missed at minScore 0.5: ${missedSizes.sort((a, b) => a - b).join(', ') || 'none'}`);
}

if (isMain(import.meta.url)) runCli(USAGE, main);
