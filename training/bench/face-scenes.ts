/**
 * npx tsx training/bench/face-scenes.ts [--scenes .cache/scenes-train] [--min-scores 0.4,0.5,0.6]
 *
 * Face detection on the synthetic scenes of training/cli/make-scenes.ts under each detection strategy
 * (training/bench/face-strategies.ts) and minScore, through detectFaces as the server and page run it: recall,
 * and false faces per 100 scenes, split into duplicates (a second detection on a face already found) and
 * detections on no face; matching as training/data/faces.ts. Choose on scenes made with --split train.
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { isMain, runCli } from '../../node-shared/cli-args.ts';
import type { Scene } from '../cli/make-scenes.ts';
import { loadFaceDetector, readRgb } from '../data/faces.ts';
import { parseMinScores } from './face-detect.ts';
import { describeTally, emptyTally, preparedInputs, rememberingRunner, STRATEGIES, tallyImage, type Tally } from './face-strategies.ts';

const USAGE = 'Usage: npx tsx training/bench/face-scenes.ts [--scenes DIR] [--min-scores LIST]';

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { scenes: { type: 'string' }, 'min-scores': { type: 'string' } }, strict: true });
  const folder = resolve(values.scenes ?? '.cache/scenes-train');
  const minScores = parseMinScores(values['min-scores'] ?? '0.4,0.5,0.6');
  const { scenes, split } = JSON.parse(await readFile(join(folder, 'scenes.json'), 'utf8')) as { scenes: Scene[]; split?: string };
  const detector = await loadFaceDetector();
  const runner = rememberingRunner(detector.run);
  const tallies = new Map<string, Tally>();
  try {
    for (const scene of scenes) {
      const image = await readRgb(join(folder, scene.file));
      runner.forget();
      const prepare = preparedInputs(image);
      for (const strategy of STRATEGIES.filter((s) => s.padding === 1)) {
        for (const minScore of minScores) {
          const key = `${strategy.name}, minScore ${minScore}`;
          if (!tallies.has(key)) tallies.set(key, emptyTally());
          await tallyImage(tallies.get(key)!, image, prepare, scene.faces, strategy, runner.run, minScore);
        }
      }
    }
  } finally {
    await detector.release();
  }
  console.log(`${scenes.length} scenes (${split ?? 'test'}-split faces) from ${folder}, ${runner.runs()} model runs`);
  for (const [key, tally] of tallies) console.log(`${key}: ${describeTally(tally)}`);
}

if (isMain(import.meta.url)) runCli(USAGE, main);
