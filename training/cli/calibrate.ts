/**
 * npm run calibrate -- --run <run folder> [--data <folder>]
 *
 * Rescales the ethnicity and gender probabilities of a multitask run trained before training did it itself: fits
 * each model's temperature on the run's own validation split (recovered from its seeds), saves the model with it
 * in place, and records the fit in metrics.json with the test split's cross-entropy under it (its accuracy cannot
 * change). Export the run again afterwards.
 */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { validateTrainingInfo, type TrainingInfo } from '../../models/spec/metadata.ts';
import { selectBackend } from '../backend/select.ts';
import { CALIBRATED_TASKS, formatTemperatureFit } from '../calibrate.ts';
import type { Dataset } from '../data/dataset.ts';
import { loadDataset } from '../data/load.ts';
import { trainTestSplit } from '../data/split.ts';
import { evaluate, taskTargets } from '../evaluate.ts';
import { multitaskValidation } from '../fit-multitask.ts';
import { loadModel, saveModel } from '../models/io.ts';
import { Temperature } from '../models/temperature.ts';
import { defaultDataSource } from '../paths.ts';
import { calibrateOnValidation, testPredictor, type TaskMetrics } from '../train-task.ts';
import { isMain, runCli, UsageError } from './args.ts';

const USAGE = `Usage: npm run calibrate -- --run DIR [--data PATH]

Fits a temperature for the ethnicity and gender models of a multitask training run on its validation split,
so that their probabilities mean what they say, and saves the models with it (in place). Runs trained since
calibration was added to training already have it. Then export again: npm run export -- --all --runs DIR

  --run DIR     a multitask training run (ethnicity/ and gender/ inside)                    (required)
  --data PATH   the UTKFace folder it was trained on                   (default: ../shared/data/utkface)`;

async function readJson<T>(file: string): Promise<T> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as T;
  } catch (error) {
    throw new UsageError(`cannot read ${file}: ${(error as Error).message}`);
  }
}

export async function calibrateRun(runDir: string, data: string, log: (line: string) => void): Promise<void> {
  // the tasks of one run read the same faces: loaded once
  const loaded = new Map<string, Promise<Dataset>>();
  for (const task of CALIBRATED_TASKS) {
    const folder = join(runDir, task);
    if (!existsSync(join(folder, 'training-info.json'))) throw new UsageError(`${folder} holds no training-info.json: --run takes a multitask run folder (age/, ethnicity/, gender/ inside)`);
    const info: TrainingInfo = validateTrainingInfo(await readJson(join(folder, 'training-info.json')), `${folder}/training-info.json`);
    if (info.preset !== 'multitask') throw new UsageError(`${folder} was trained with the "${info.preset}" preset; only multitask runs record the validation split a temperature is fitted on`);
    const metrics = await readJson<TaskMetrics>(join(folder, 'metrics.json'));
    const model = await loadModel(join(folder, 'model'));
    if (model.outputs.some((o) => o.sourceLayer instanceof Temperature)) {
      model.dispose();
      throw new UsageError(`${folder}/model already has a temperature; a model is calibrated once`);
    }
    const { split } = metrics;
    const key = JSON.stringify([info.input, split.limit, split.seed]);
    if (!loaded.has(key)) loaded.set(key, loadDataset(data, info.input, { limit: split.limit ?? undefined, seed: split.seed }));
    const dataset = await (loaded.get(key) as Promise<Dataset>);
    if (dataset.count !== split.datasetCount) {
      throw new UsageError(`${folder} was trained on ${split.datasetCount} faces and ${data} gives ${dataset.count}: its validation split cannot be recovered; pass the data it was trained on`);
    }
    const { train, test } = trainTestSplit(dataset.count, split.testFraction, split.seed);
    const { validation } = multitaskValidation(train, info.seed ?? split.seed);
    const outputsInfo = { task, labels: info.labels, outputs: info.outputs ?? [], input: info.input, ageScheme: info.ageScheme };
    const { model: calibrated, fit, seconds } = await calibrateOnValidation(model, outputsInfo, dataset, validation, taskTargets(dataset, task, info.ageScheme), log);
    log(formatTemperatureFit(task, fit, seconds));
    // The test figures in metrics.json, as training would have written them: the accuracy cannot change, the
    // cross-entropy does.
    const rescored = await testPredictor(calibrated, outputsInfo, log);
    try {
      const evaluation = await evaluate(rescored.predict, dataset, test, task, info.labels, info.ageScheme);
      if (evaluation.accuracy !== metrics.testAccuracy) log(`${task}: note: test accuracy ${evaluation.accuracy} where training measured ${metrics.testAccuracy}`);
      log(`${task}: test split cross-entropy ${metrics.testLoss.toFixed(4)} -> ${evaluation.loss.toFixed(4)}, accuracy ${(evaluation.accuracy * 100).toFixed(2)}%`);
      await saveModel(calibrated, join(folder, 'model'));
      // Keys in the order training writes them (the record goes into the exported file's metadata as it is).
      const { subgroups, ...rest } = metrics as TaskMetrics & { subgroups?: unknown };
      await writeFile(join(folder, 'metrics.json'), JSON.stringify({ ...rest, testLoss: evaluation.loss, calibration: fit, subgroups }, null, 2) + '\n');
    } finally {
      await rescored.release();
      model.dispose();
    }
  }
}

if (isMain(import.meta.url)) {
  runCli(USAGE, async (argv) => {
    const { values } = parseArgs({ args: argv, strict: true, options: { run: { type: 'string' }, data: { type: 'string' }, help: { type: 'boolean', default: false } } });
    if (values.help) throw new UsageError('');
    if (values.run === undefined) throw new UsageError('--run is required');
    const data = values.data ?? defaultDataSource();
    if (data === undefined) throw new UsageError('--data is required: no UTKFace folder at ../shared/data/utkface');
    await selectBackend('cpu', () => {});
    await calibrateRun(resolve(values.run), resolve(data), console.log);
    console.log(`Export it again: npm run export -- --all --runs ${values.run}`);
    tf.disposeVariables();
  });
}
