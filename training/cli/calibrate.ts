/**
 * npm run calibrate -- --run <run folder> [--data <folder>]
 *
 * Rescales the ethnicity and gender probabilities of a multitask run trained before training did it itself: fits
 * each model's temperature on the run's own validation split (recovered from its seeds), saves the model with it
 * in place, and records the fit in metrics.json with the test split's cross-entropy under it (its accuracy cannot
 * change). Export the run again afterwards.
 */
import { existsSync } from 'node:fs';
import { readdir, readFile, rename, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import type { Task } from '../../contract/labels.ts';
import type { InputSpec } from '../../contract/preprocess.ts';
import { readTrainingInfo } from '../../export/export-model.ts';
import { writeFileAtomic } from '../../node-shared/files.ts';
import { selectBackend } from '../../node-shared/tfjs/select.ts';
import { CALIBRATED_TASKS, formatTemperatureFit } from '../calibrate.ts';
import type { Dataset } from '../data/dataset.ts';
import { loadDataset, missingDataMessage } from '../data/load.ts';
import { trainTestSplit } from '../data/split.ts';
import { evaluate, taskTargets } from '../evaluate.ts';
import { multitaskValidation } from '../fit-multitask.ts';
import { loadModel, saveModel } from '../models/io.ts';
import { Temperature } from '../../node-shared/tfjs/temperature-layer.ts';
import { defaultDataSource } from '../../node-shared/paths.ts';
import { calibrateOnValidation, testPredictor, type TaskMetrics } from '../train-task.ts';
import { isMain, runCli, UsageError } from '../../node-shared/cli-args.ts';

const USAGE = `Usage: npm run calibrate -- --run DIR [--data PATH]

Fits a temperature for the ethnicity and gender models of a multitask training run on its validation split,
so that their probabilities mean what they say, and saves the models with it (in place). Runs trained since
calibration was added to training already have it. Then export again: npm run export -- --all --runs DIR --out-dir DIR/onnx

  --run DIR     a multitask training run (ethnicity/ and gender/ inside)                    (required)
  --data PATH   the UTKFace folder it was trained on                   (default: ../shared/data/utkface)`;

async function readJson<T>(file: string): Promise<T> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as T;
  } catch (error) {
    throw new UsageError(`cannot read ${file}: ${(error as Error).message}`);
  }
}

/** Loads the faces a run was trained on (as `loadDataset` does; tests give their own). */
export type DatasetLoader = (input: InputSpec, options: { limit?: number; seed: number }) => Promise<Dataset>;

/** What phase one found for a task: the calibrated model and metrics to write, or nothing to do. */
interface Plan {
  folder: string;
  model: tf.LayersModel;
  metrics: object;
  release(): void;
}

/**
 * Fits and rescores every task in memory first, and writes only once all have succeeded, each file to a temporary
 * name renamed over the old one: a failure leaves the run as it was. A task already calibrated (a temperature in
 * the model and its record in metrics.json) is left as it is, so that a second run finishes what a first began.
 */
export async function calibrateRun(runDir: string, load: DatasetLoader, log: (line: string) => void): Promise<void> {
  // the tasks of one run read the same faces: loaded once
  const loaded = new Map<string, Promise<Dataset>>();
  const plans: Plan[] = [];
  try {
    for (const task of CALIBRATED_TASKS) {
      const plan = await planTask(join(runDir, task), task, loaded, load, log);
      if (plan !== undefined) plans.push(plan);
    }
    for (const plan of plans) {
      await replaceFolder(join(plan.folder, 'model'), (dir) => saveModel(plan.model, dir));
      await writeFileAtomic(join(plan.folder, 'metrics.json'), JSON.stringify(plan.metrics, null, 2) + '\n');
    }
  } finally {
    for (const plan of plans) plan.release();
  }
}

async function planTask(folder: string, task: Task, loaded: Map<string, Promise<Dataset>>, load: DatasetLoader, log: (line: string) => void): Promise<Plan | undefined> {
  if (!existsSync(join(folder, 'training-info.json'))) throw new UsageError(`${folder} holds no training-info.json: --run takes a multitask run folder (age/, ethnicity/, gender/ inside)`);
  const info = await readTrainingInfo(join(folder, 'training-info.json'));
  if (info.preset !== 'multitask') throw new UsageError(`${folder} was trained with the "${info.preset}" preset; temperatures are fitted for multitask runs only`);
  if (info.outputs === undefined) throw new UsageError(`${folder}/training-info.json does not say what the model's outputs hold ("outputs"); a multitask run writes it`);
  const metrics = await readJson<TaskMetrics & { subgroups?: unknown }>(join(folder, 'metrics.json'));
  const model = await loadModel(join(folder, 'model'));
  try {
    const hasTemperature = model.outputs.some((o) => o.sourceLayer instanceof Temperature);
    if (hasTemperature && metrics.calibration !== undefined) {
      log(`${task}: already calibrated (temperature ${metrics.calibration.temperature}); left as it is`);
      model.dispose();
      return undefined;
    }
    if (hasTemperature || metrics.calibration !== undefined) {
      throw new UsageError(
        `${folder}: ${hasTemperature ? 'the model has a temperature but metrics.json records none' : 'metrics.json records a temperature the model does not have'}; ` +
          'train the run again, or restore the folder from a copy',
      );
    }
    const { split } = metrics;
    const key = JSON.stringify([info.input, split.limit, split.seed]);
    if (!loaded.has(key)) loaded.set(key, load(info.input, { limit: split.limit ?? undefined, seed: split.seed }));
    const dataset = await (loaded.get(key) as Promise<Dataset>);
    if (dataset.count !== split.datasetCount) {
      throw new UsageError(`${folder} was trained on ${split.datasetCount} faces and the data gives ${dataset.count}: its validation split cannot be recovered; pass the data it was trained on`);
    }
    const { train, test } = trainTestSplit(dataset.count, split.testFraction, split.seed);
    // The split recovered from the seeds must be the one training held out, face for face.
    const testNames = existsSync(join(folder, 'test-split.json')) ? await readJson<string[]>(join(folder, 'test-split.json')) : undefined;
    if (testNames !== undefined && (testNames.length !== test.length || test.some((face, i) => dataset.names[face] !== testNames[i]))) {
      throw new UsageError(`${folder}/test-split.json names other faces than the split recovered from its seeds: the data differs from the run's; pass the data it was trained on`);
    }
    const { validation } = multitaskValidation(train, info.seed ?? split.seed);
    const outputsInfo = { task, labels: info.labels, outputs: info.outputs, input: info.input, ageScheme: info.ageScheme };
    const { model: calibrated, fit, seconds } = await calibrateOnValidation(model, outputsInfo, dataset, validation, taskTargets(dataset, task, info.ageScheme), log);
    log(formatTemperatureFit(task, fit, seconds));
    // The test figures in metrics.json, as training would have written them: the accuracy cannot change, the
    // cross-entropy does.
    const rescored = await testPredictor(calibrated, outputsInfo, log);
    try {
      const evaluation = await evaluate(rescored.predict, dataset, test, task, info.labels, info.ageScheme);
      if (evaluation.accuracy !== metrics.testAccuracy) log(`${task}: note: test accuracy ${evaluation.accuracy} where training measured ${metrics.testAccuracy}`);
      log(`${task}: test split cross-entropy ${metrics.testLoss.toFixed(4)} -> ${evaluation.loss.toFixed(4)}, accuracy ${(evaluation.accuracy * 100).toFixed(2)}%`);
      // Keys in the order training writes them (the record goes into the exported file's metadata as it is).
      const { subgroups, ...rest } = metrics;
      return { folder, model: calibrated, metrics: { ...rest, testLoss: evaluation.loss, calibration: fit, subgroups }, release: () => calibrated.dispose() };
    } finally {
      await rescored.release();
    }
  } catch (error) {
    // (the calibrated model holds this model's layers: it is the plan's to free once the task is planned)
    model.dispose();
    throw error;
  }
}

/** Writes a folder's files with `write` into a temporary folder, then renames each over the old one. */
async function replaceFolder(dir: string, write: (dir: string) => Promise<void>): Promise<void> {
  const temporary = `${dir}.writing`;
  await rm(temporary, { recursive: true, force: true });
  await write(temporary);
  for (const name of await readdir(temporary)) await rename(join(temporary, name), join(dir, name));
  await rm(temporary, { recursive: true, force: true });
}

if (isMain(import.meta.url)) {
  runCli(USAGE, async (argv) => {
    const { values } = parseArgs({ args: argv, strict: true, options: { run: { type: 'string' }, data: { type: 'string' }, help: { type: 'boolean', short: 'h', default: false } } });
    if (values.help) throw new UsageError('');
    if (values.run === undefined) throw new UsageError('--run is required');
    const data = values.data ?? defaultDataSource();
    if (data === undefined) throw new UsageError(missingDataMessage(false));
    await selectBackend('cpu', () => {});
    const folder = resolve(data);
    await calibrateRun(resolve(values.run), (input, options) => loadDataset(folder, input, options), console.log);
    console.log(`Export it again: npm run export -- --all --runs ${values.run} --out-dir ${values.run}/onnx`);
    tf.disposeVariables();
  });
}
