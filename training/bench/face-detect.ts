/**
 * npx tsx training/bench/face-detect.ts [--split train|test] [--limit N] [--min-scores 0.4,0.5,0.6] [--data DIR]
 *
 * How often BlazeFace finds the face in whole UTKFace crops (a face filling the frame) under each detection strategy
 * (training/bench/face-strategies.ts) and minScore, through detectFaces as the server and page run it. The crop's
 * face is FACE_TEMPLATE's box and eyes; a detection matches it by the rule of training/data/faces.ts. Choose on the
 * train split; the test split is for the figures reported.
 */
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { isMain, parseChoice, parsePositiveInt, runCli, UsageError } from '../../node-shared/cli-args.ts';
import { defaultDataSource } from '../../node-shared/paths.ts';
import { cropTruth, loadFaceDetector, readRgb, TRAINING_SEED, utkFaceSplit } from '../data/faces.ts';
import { shuffledIndices } from '../data/split.ts';
import { describeTally, emptyTally, preparedInputs, rememberingRunner, STRATEGIES, tallyImage, type Tally } from './face-strategies.ts';

const USAGE = `Usage: npx tsx training/bench/face-detect.ts [--split train|test] [--limit N] [--min-scores LIST] [--data DIR]`;
const DEFAULT_MIN_SCORES = '0.4,0.5,0.6';

export function parseMinScores(text: string): number[] {
  const scores = text.split(',').map(Number);
  if (scores.some((s) => !(s >= 0 && s <= 1))) throw new UsageError(`--min-scores "${text}" is invalid; expected numbers from 0 to 1, comma-separated`);
  return scores;
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { data: { type: 'string' }, limit: { type: 'string' }, split: { type: 'string' }, 'min-scores': { type: 'string' } }, strict: true });
  const data = values.data ?? defaultDataSource();
  if (data === undefined) throw new UsageError('no --data given and ../shared/data/utkface is absent');
  const limit = values.limit === undefined ? 1000 : parsePositiveInt('--limit', values.limit);
  const split = parseChoice('--split', values.split ?? 'train', ['train', 'test'] as const);
  const minScores = parseMinScores(values['min-scores'] ?? DEFAULT_MIN_SCORES);
  const files = (await utkFaceSplit(resolve(data)))[split];
  // Another seed than face-template.ts's, so that the crops chosen on are not the ones the template was measured on.
  const chosen = Array.from(shuffledIndices(files.length, TRAINING_SEED + 1).subarray(0, limit), (i) => files[i]);
  const detector = await loadFaceDetector();
  const runner = rememberingRunner(detector.run);
  const tallies = new Map<string, Tally>();
  const started = performance.now();
  try {
    for (const file of chosen) {
      const image = await readRgb(join(data, file.name));
      const truth = [cropTruth(image.width)];
      runner.forget();
      const prepare = preparedInputs(image);
      for (const strategy of STRATEGIES) {
        for (const minScore of minScores) {
          const key = `${strategy.name}, minScore ${minScore}`;
          if (!tallies.has(key)) tallies.set(key, emptyTally());
          await tallyImage(tallies.get(key)!, image, prepare, truth, strategy, runner.run, minScore);
        }
      }
    }
  } finally {
    await detector.release();
  }
  console.log(`${chosen.length} ${split}-split crops, ${runner.runs()} model runs in ${((performance.now() - started) / 1000).toFixed(0)} s`);
  for (const [key, tally] of tallies) console.log(`${key}: ${describeTally(tally)}`);
}

if (isMain(import.meta.url)) runCli(USAGE, main);
