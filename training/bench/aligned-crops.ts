/**
 * npx tsx training/bench/aligned-crops.ts [--limit N] [--data DIR] [--models DIR] [--crop-detector-side N]
 *
 * Whether the shipped models judge a face as well when the server cuts it out as when they get UTKFace's own crop
 * (issue #24 item 3). On the VALIDATION faces of the models' own run (the test split is never read here: this
 * chooses what to train on), each file is decoded as the server decodes an upload, and the models answer for
 * (a) the UTKFace crop as POST /v1/predict?detect=none takes it (the whole image, `preprocessToBytes`) and
 * (b) the crop the server cuts with detection (the served detector through detectFaces, the largest face aligned by
 * alignFace at each model's input size; training/data/aligned-crops.ts). A face the detector misses, or finds but
 * cannot align, has no (b); its count is printed, and (b)'s figures are on the faces found, beside (a)'s on those.
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { classIndex, TASKS, type AgeScheme, type Task } from '../../contract/labels.ts';
import { CROP_DETECTOR_SIDE, DEFAULT_CROP_PASS } from '../../contract/face/photo.ts';
import { isDetectorEntry, type ModelMetadata } from '../../contract/metadata.ts';
import { answerFaces, loadModelSet, MANIFEST_FILE, parseManifest } from '../../contract/model-set.ts';
import type { TaskPrediction } from '../../contract/prediction.ts';
import { preprocessToBytes, scaleBytes } from '../../contract/preprocess.ts';
import { isMain, parsePositiveInt, runCli, UsageError } from '../../node-shared/cli-args.ts';
import { folderModelSource } from '../../node-shared/model-files.ts';
import { nodeRuntime, run } from '../../node-shared/onnxruntime-node.ts';
import { defaultDataSource } from '../../node-shared/paths.ts';
import { decodeAsServed, openAlignedCropper, SERVED_MODELS_DIR, servedDetectorFile } from '../data/aligned-crops.ts';
import { utkFaceSplit, type UtkFaceFile } from '../data/faces.ts';
import { multitaskValidation } from '../fit-multitask.ts';

const USAGE = `Usage: npx tsx training/bench/aligned-crops.ts [--limit N] [--data DIR] [--models DIR] [--crop-detector-side N]

  --limit N      the first N validation faces (a seeded random subset)        (default: all 1,709)
  --data DIR     the UTKFace folder the models were trained on       (default: ../shared/data/utkface)
  --models DIR   a model folder with manifest.json and the three classifiers    (default: models/)
                 (its detector, or models/'s where its manifest lists none, as a run exported
                 with npm run export -- --all --out-dir DIR)
  --crop-detector-side N   the detector's input side for a face crop's one pass, to compare
                 sides (a multiple of 32)                         (default: ${CROP_DETECTOR_SIDE}, as served)`;

/** Faces per model run. */
const BATCH = 64;
/** The ages whose gender issue #24 tracks apart (children's faces carry few gender cues). */
const CHILD_MAX_AGE = 10;

/** What one crop kind scores: hits per task, the age error, and the children's gender hits. */
interface Tally {
  faces: number;
  hits: Record<Task, number>;
  ageAbsError: number;
  children: number;
  childGenderHits: number;
}

const emptyTally = (): Tally => ({ faces: 0, hits: { age: 0, ethnicity: 0, gender: 0 }, ageAbsError: 0, children: 0, childGenderHits: 0 });

function count(tally: Tally, file: UtkFaceFile, answer: Record<Task, TaskPrediction>, ageScheme: AgeScheme): void {
  tally.faces++;
  for (const task of TASKS) if (answer[task].index === classIndex(file.labels, task, ageScheme)) tally.hits[task]++;
  tally.ageAbsError += Math.abs((answer.age.years ?? Number.NaN) - file.labels.age);
  if (file.labels.age <= CHILD_MAX_AGE) {
    tally.children++;
    if (answer.gender.index === file.labels.gender) tally.childGenderHits++;
  }
}

const percent = (hits: number, of: number) => (of === 0 ? '   -  ' : `${((100 * hits) / of).toFixed(1).padStart(5)}%`);

function formatRow(name: string, t: Tally): string {
  const mae = t.faces === 0 ? '  -  ' : (t.ageAbsError / t.faces).toFixed(2).padStart(5);
  return `${name.padEnd(34)} ${String(t.faces).padStart(5)}  ${percent(t.hits.age, t.faces)}  ${mae}  ${percent(t.hits.ethnicity, t.faces)}  ${percent(t.hits.gender, t.faces)}  ${percent(t.childGenderHits, t.children)} (${t.children})`;
}

/** The faces that chose the shipped models' epoch: their run's split (read from their metadata), then its validation carve. */
async function validationFaces(data: string, metadata: ModelMetadata): Promise<{ faces: UtkFaceFile[]; seed: number }> {
  const split = metadata.metrics?.split as { seed?: number; limit?: number | null; datasetCount?: number } | undefined;
  if (split?.seed === undefined || split.datasetCount === undefined) throw new UsageError(`the ${metadata.task} model's metadata records no split (metrics.split): cannot tell its validation faces`);
  if (split.limit !== null && split.limit !== undefined) throw new UsageError(`the models were trained with --limit ${split.limit}; this bench takes models trained on the whole folder`);
  const { train, test } = await utkFaceSplit(data, split.seed);
  if (train.length + test.length !== split.datasetCount) {
    throw new UsageError(`${data} holds ${train.length + test.length} well-named faces; the models were trained on ${split.datasetCount}: not the same folder`);
  }
  // multitaskValidation carves positions of `train`, whatever they index
  const { validation } = multitaskValidation(Int32Array.from(train, (_, i) => i), split.seed);
  return { faces: Array.from(validation, (i) => train[i]), seed: split.seed };
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { data: { type: 'string' }, limit: { type: 'string' }, models: { type: 'string' }, 'crop-detector-side': { type: 'string' } }, strict: true });
  const data = values.data ?? defaultDataSource();
  if (data === undefined) throw new UsageError('no --data given and ../shared/data/utkface is absent');
  const limit = values.limit === undefined ? undefined : parsePositiveInt('--limit', values.limit);
  const modelsDir = resolve(values.models ?? SERVED_MODELS_DIR);
  const manifestPath = join(modelsDir, MANIFEST_FILE);
  const entries = parseManifest(await readFile(manifestPath, 'utf8'), manifestPath).models;
  const log = { info: () => {}, warn: (line: string) => console.error(line) };
  const set = await loadModelSet(folderModelSource(modelsDir), entries, nodeRuntime({ provider: 'cpu', threads: 1 }), { merge: true, log });
  const detector = await servedDetectorFile(entries.some(isDetectorEntry) ? modelsDir : SERVED_MODELS_DIR);
  const cropSide = values['crop-detector-side'] === undefined ? CROP_DETECTOR_SIDE : parsePositiveInt('--crop-detector-side', values['crop-detector-side']);
  const cropper = await openAlignedCropper(detector, 1, { ...DEFAULT_CROP_PASS, cropInputSize: cropSide });
  const age = set.classifiers.find((model) => model.task === 'age');
  if (age === undefined || set.classifiers.length !== TASKS.length) throw new UsageError(`${manifestPath} must list the three classifiers (${TASKS.join(', ')})`);
  const ageScheme = age.metadata.ageScheme ?? 'coursework';
  const { faces: validation, seed } = await validationFaces(resolve(data), age.metadata);
  const faces = validation.slice(0, limit ?? validation.length);
  console.log(`${faces.length} of ${validation.length} validation faces (split seed ${seed}), models ${modelsDir}, detector ${detector.entry.name} (sha256 ${detector.sha256.slice(0, 12)}), a crop's pass at ${cropSide}x${cropSide}`);

  const whole = emptyTally();
  const aligned = emptyTally();
  const wholeWhereFound = emptyTally();
  const missed = new Map<string, number>();
  const started = performance.now();
  for (let start = 0; start < faces.length; start += BATCH) {
    const batch = faces.slice(start, start + BATCH);
    const wholeInputs: Float32Array[][] = [];
    const alignedInputs: Float32Array[][] = [];
    const found: UtkFaceFile[] = [];
    for (const file of batch) {
      const pixels = await decodeAsServed(new Uint8Array(await readFile(join(data, file.name))));
      wholeInputs.push(set.specs.map((spec) => scaleBytes(preprocessToBytes(pixels, spec), spec)));
      const crops = await cropper.crop(pixels, set.specs);
      if (!crops.aligned) {
        missed.set(crops.reason, (missed.get(crops.reason) ?? 0) + 1);
        continue;
      }
      alignedInputs.push(crops.bytes.map((bytes, i) => scaleBytes(bytes, set.specs[i])));
      found.push(file);
    }
    const wholeAnswers = await answerFaces(set, run, wholeInputs);
    batch.forEach((file, k) => count(whole, file, wholeAnswers[k], ageScheme));
    if (found.length > 0) {
      const alignedAnswers = await answerFaces(set, run, alignedInputs);
      found.forEach((file, k) => count(aligned, file, alignedAnswers[k], ageScheme));
      const foundNames = new Set(found.map((f) => f.name));
      batch.forEach((file, k) => foundNames.has(file.name) && count(wholeWhereFound, file, wholeAnswers[k], ageScheme));
    }
    if (process.stderr.isTTY) process.stderr.write(`\r${Math.min(start + BATCH, faces.length)}/${faces.length} faces`);
  }
  if (process.stderr.isTTY) process.stderr.write('\n');
  await cropper.release();
  await set.release();

  const notFound = faces.length - aligned.faces;
  console.log(`${((performance.now() - started) / 1000).toFixed(0)} s; no aligned crop for ${notFound} of ${faces.length} faces (${percent(notFound, faces.length).trim()})${[...missed].map(([reason, n]) => `, ${n} ${reason}`).join('')}`);
  console.log(`${'crop'.padEnd(34)} faces  age grp   MAE    ethnic.  gender   gender 1-${CHILD_MAX_AGE} (faces)`);
  console.log(formatRow('UTKFace crop (detect=none)', whole));
  console.log(formatRow('UTKFace crop, faces found only', wholeWhereFound));
  console.log(formatRow('aligned crop (detection), found', aligned));
  const gap = (task: Task) => (100 * (aligned.hits[task] / aligned.faces - wholeWhereFound.hits[task] / wholeWhereFound.faces)).toFixed(1);
  const maeGap = (aligned.ageAbsError / aligned.faces - wholeWhereFound.ageAbsError / wholeWhereFound.faces).toFixed(2);
  console.log(`gap, aligned minus UTKFace on the faces found: age group ${gap('age')} points, MAE ${maeGap} years, ethnicity ${gap('ethnicity')}, gender ${gap('gender')}`);
}

if (isMain(import.meta.url)) runCli(USAGE, main);
