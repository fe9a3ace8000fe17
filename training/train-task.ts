/**
 * Trains one task's model on a loaded dataset and writes everything a run leaves behind:
 * the tfjs model, its history, curves, confusion matrix, sample faces and metrics.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { TASKS, taskLabels, type AgeScheme, type Task } from '../contract/labels.ts';
import { PREPROCESSING_VERSION, scaleBytes, SEED_INPUT, type InputSpec } from '../contract/preprocess.ts';
import type { OutputSpec } from '../contract/metadata.ts';
import type { Dataset } from './data/dataset.ts';
import { CALIBRATED_TASKS, calibrateModel, formatTemperatureFit, type TemperatureFit } from './calibrate.ts';
import { emptyHistory, recordEpoch, type FitArgs, type FitResult, type History } from './fit.ts';
import { shuffledIndices, trainTestSplit } from './data/split.ts';
import { saveModel } from './models/io.ts';
import { buildSeedModel, SEED_TRAINING } from './models/seed.ts';
import { fitResidual, RESIDUAL_TEST_FRACTION } from './fit-residual.ts';
import { fitMultitask, MULTITASK_INPUT, multitaskConfig, multitaskValidation, type MultitaskCheckpointArgs, type MultitaskFitArgs } from './fit-multitask.ts';
import { DEFAULT_RECIPE, type DistillOptions, type RecipeOptions } from './recipe.ts';
import { softenedTargets, teacherFiles, teacherSplitWarnings, teacherTargets, type Teacher, type TeacherPassOptions } from './distill.ts';
import type { BackendName } from '../node-shared/tfjs/select.ts';
import { evaluate, formatEvaluation, onnxPredictor, taskTargets, tfjsPredictor, type Evaluation, type Predictor } from './evaluate.ts';
import { ExportError, exportModel } from '../export/export-model.ts';
import { formatSubgroupTable } from './report/metrics.ts';
import { plotConfusionMatrix, plotHistory, plotSampleGrid, type LossLegend } from './report/plots.ts';
import { formatEpochLine } from './report/progress.ts';

export type Preset = 'multitask' | 'residual' | 'seed';
export const PRESETS: readonly Preset[] = ['multitask', 'residual', 'seed'];
/** What `npm run train` trains without --preset. */
export const DEFAULT_PRESET: Preset = 'multitask';

/** The input each preset trains on; the dataset is loaded (and cached) in this form. */
export const PRESET_INPUT: Record<Preset, InputSpec> = { multitask: MULTITASK_INPUT, residual: SEED_INPUT, seed: SEED_INPUT };

/** Presets that train the three tasks as one network, in one process (`--task all` only). */
export function trainsTogether(preset: Preset): boolean {
  return preset === 'multitask';
}

export interface TrainTaskOptions {
  task: Task;
  preset: Preset;
  dataset: Dataset;
  /** the run's folder for this task; everything is written here */
  outDir: string;
  /** override the preset's epoch count */
  epochs?: number;
  seed: number;
  /** the --limit the dataset was loaded with, recorded so evaluation can load the same faces */
  limit?: number;
  ageScheme: AgeScheme;
  /** name of the tfjs backend in use, recorded in the metrics */
  backend: BackendName;
  log: (line: string) => void;
  /** lines only `--verbose` prints (the test split's tables, the temperature fits, each task's epoch lines); absent: they go to `log` */
  detail?: (line: string) => void;
}

export interface TaskMetrics {
  task: Task;
  preset: Preset;
  labels: string[];
  testAccuracy: number;
  testLoss: number;
  trainCount: number;
  testCount: number;
  epochs: number;
  parameters: number;
  backend: string;
  trainSeconds: number;
  meanImagesPerSecond: number;
  report: Evaluation['report'];
  confusionMatrix: number[][];
  /** how the test split was drawn: `trainTestSplit(datasetCount, testFraction, seed)` over the data loaded with `limit` */
  split: TestSplitInfo;
  /** presets that choose on a validation split: the epoch whose weights were kept */
  keptEpoch?: number;
  /** the multitask preset's levers the run was trained with (recipe.ts), which travel in the exported metadata */
  recipe?: RecipeOptions;
  /** age models that predict years: mean absolute error on the test split, overall and per age group */
  years?: Evaluation['years'];
  /** the temperature its probabilities are rescaled by, fitted on the validation split */
  calibration?: TemperatureFit;
}

export interface TestSplitInfo {
  testFraction: number;
  seed: number;
  limit: number | null;
  datasetCount: number;
}

/** How many faces of each split go into the sample grids. */
const SAMPLES_PER_KIND = 12;

export async function trainTask(options: TrainTaskOptions): Promise<TaskMetrics> {
  const { task, dataset, seed, ageScheme, log } = options;
  if (trainsTogether(options.preset)) throw new Error(`the ${options.preset} preset trains the three tasks together; use trainTogether (--task all)`);
  const testFraction = options.preset === 'seed' ? SEED_TRAINING[task].testFraction : RESIDUAL_TEST_FRACTION;
  const labels = taskLabels(task, ageScheme);
  const targets = taskTargets(dataset, task, ageScheme);
  const split = trainTestSplit(dataset.count, testFraction, seed);
  const fitArgs: FitArgs = { task, labels, dataset, targets, train: split.train, test: split.test, epochs: options.epochs, seed, ageScheme, log };
  const fitted = options.preset === 'seed' ? await fitSeed(fitArgs) : await fitResidual(fitArgs);
  return writeTaskRun(options, fitted, split, testFraction);
}

/**
 * Trains a preset that learns the three tasks as one network (multitask) and writes one task folder per task
 * under `runDir`, each as `trainTask` would.
 */
export async function trainTogether(
  options: Omit<TrainTaskOptions, 'task' | 'outDir'> & {
    runDir: string;
    replicas?: number;
    /** where and what to checkpoint after every epoch, and the checkpoint to resume from */
    checkpoint?: MultitaskCheckpointArgs;
    /** stops training at once, keeping the last epoch's checkpoint */
    stop?: AbortSignal;
    /** the levers of the run (default: the shipped models' recipe); the dataset must be loaded at its input size and crops */
    recipe?: RecipeOptions;
    /** with `recipe.distill`: its teachers, read and checked (distill.ts `readTeachers`), and how to reach the faces at their input sizes */
    teachers?: { teachers: Teacher[] } & Omit<TeacherPassOptions, 'log'>;
  },
): Promise<TaskMetrics[]> {
  const { dataset, seed, ageScheme, log } = options;
  const testFraction = RESIDUAL_TEST_FRACTION;
  const split = trainTestSplit(dataset.count, testFraction, seed);
  const args: MultitaskFitArgs = {
    labels: Object.fromEntries(TASKS.map((task) => [task, taskLabels(task, ageScheme)])) as Record<Task, string[]>,
    dataset,
    targets: Object.fromEntries(TASKS.map((task) => [task, taskTargets(dataset, task, ageScheme)])) as Record<Task, Int32Array>,
    train: split.train,
    testCount: split.test.length,
    epochs: options.epochs,
    seed,
    ageScheme,
    backend: options.backend,
    replicas: options.replicas,
    log,
    detail: options.detail,
    checkpoint: options.checkpoint,
    stop: options.stop,
  };
  const recipe = options.recipe ?? DEFAULT_RECIPE;
  const config = multitaskConfig(recipe);
  if (recipe.distill !== undefined) {
    const splitInfo = { testFraction, seed, limit: options.limit ?? null, datasetCount: dataset.count };
    args.teachers = await distillationTargets(recipe.distill, options.teachers, dataset, multitaskValidation(split.train, seed, config).fit, splitInfo, log);
  }
  const fitted = await fitMultitask(args, config);
  const metrics: TaskMetrics[] = [];
  for (const task of TASKS) {
    let model = fitted.models[task];
    let calibration: TemperatureFit | undefined;
    if (CALIBRATED_TASKS.includes(task)) {
      const info = { task, labels: args.labels[task], outputs: fitted.outputs[task], input: dataset.spec, ageScheme };
      try {
        const calibrated = await calibrateOnValidation(model, info, dataset, fitted.validation, args.targets[task], log);
        ({ model, fit: calibration } = calibrated);
        (options.detail ?? log)(formatTemperatureFit(task, calibration, calibrated.seconds));
      } catch (error) {
        // A model whose probabilities cannot be calibrated (a diverged run's NaN) is still written, as it is.
        if (!(error instanceof RangeError)) throw error;
        log(`${task}: probabilities left as they are: ${error.message}`);
      }
    }
    const result: FitResult = {
      model,
      outputs: fitted.outputs[task],
      history: fitted.history[task],
      epochs: fitted.epochs,
      parameters: fitted.models[task].countParams(),
      trainCount: fitted.trainCount,
      trainSeconds: fitted.trainSeconds,
      keptEpoch: fitted.bestEpoch,
      ...(calibration === undefined ? {} : { calibration }),
      release: () => {},
    };
    metrics.push(await writeTaskRun({ ...options, task, outDir: join(options.runDir, task) }, result, split, testFraction, recipe));
  }
  return metrics;
}

/** The teachers' answers for the faces the run fits, softened for the loss. */
async function distillationTargets(
  distill: DistillOptions,
  teachers: ({ teachers: Teacher[] } & Omit<TeacherPassOptions, 'log'>) | undefined,
  dataset: Dataset,
  fit: Int32Array,
  split: TestSplitInfo,
  log: (line: string) => void,
): Promise<MultitaskFitArgs['teachers']> {
  if (teachers === undefined) throw new Error('the recipe distills, and no teachers were given');
  for (const line of teacherSplitWarnings(teachers.teachers, split)) log(line);
  const targets = await teacherTargets(teachers.teachers, dataset, fit, { ...teachers, log });
  return { targets: softenedTargets(targets, distill.temperature), files: teacherFiles(teachers.teachers) };
}

/**
 * What scores the test split: the model exported to ONNX and run in onnxruntime-node, as `npm run evaluate` scores
 * the shipped files (several times faster than tfjs on wasm, with the same class for every face), or the tfjs
 * model itself where the exporter does not take it.
 */
export async function testPredictor(
  model: tf.LayersModel,
  info: { task: Task; labels: string[]; outputs: OutputSpec[]; input: InputSpec; ageScheme: AgeScheme },
  log: (line: string) => void,
): Promise<{ predict: Predictor; release: () => void | Promise<void> }> {
  let bytes: Uint8Array;
  try {
    // the source hash only identifies a saved model in the metadata, which nothing reads here
    bytes = exportModel(model, { ...info, sourceSha256: '0'.repeat(64) }).bytes;
  } catch (error) {
    if (!(error instanceof ExportError)) throw error;
    log(`${info.task}: scoring the test split with tfjs, since the model does not export to ONNX: ${error.message}`);
    return { predict: tfjsPredictor(model, info.input, info), release: () => {} };
  }
  // training has ended, so every core is free
  return onnxPredictor(bytes, { threads: availableParallelism() });
}

/**
 * `model` with a temperature fitted on the faces at `validation` (training/calibrate.ts), whose answers are read
 * as the test split's are (the model exported and run in onnxruntime-node).
 */
export async function calibrateOnValidation(
  model: tf.LayersModel,
  info: Parameters<typeof testPredictor>[1],
  dataset: Dataset,
  validation: Int32Array,
  targets: Int32Array,
  log: (line: string) => void,
): Promise<{ model: tf.LayersModel; fit: TemperatureFit; seconds: number }> {
  const startedAt = performance.now();
  const scorer = await testPredictor(model, info, log);
  try {
    return { ...(await calibrateModel(model, scorer.predict, dataset, validation, targets)), seconds: (performance.now() - startedAt) / 1000 };
  } finally {
    await scorer.release();
  }
}

/** Evaluates a fitted model on the test split and writes the task's run folder. */
async function writeTaskRun(options: TrainTaskOptions, fitted: FitResult, split: { train: Int32Array; test: Int32Array }, testFraction: number, recipe?: RecipeOptions): Promise<TaskMetrics> {
  const { task, dataset, outDir, seed, ageScheme, log } = options;
  const labels = taskLabels(task, ageScheme);
  await mkdir(outDir, { recursive: true });
  const { model, outputs, history, epochs, trainSeconds } = fitted;

  const scorer = await testPredictor(model, { task, labels, outputs, input: dataset.spec, ageScheme }, log);
  const evaluation = await evaluate(scorer.predict, dataset, split.test, task, labels, ageScheme);
  await scorer.release();
  (options.detail ?? log)(formatEvaluation(evaluation));
  const { predicted, truth, subgroups } = evaluation;
  const cm = evaluation.confusionMatrix;
  const report = evaluation.report;
  const testLoss = evaluation.loss;

  const metrics: TaskMetrics = {
    task,
    preset: options.preset,
    labels,
    testAccuracy: report.accuracy,
    testLoss,
    trainCount: fitted.trainCount,
    testCount: split.test.length,
    epochs,
    parameters: fitted.parameters,
    backend: options.backend,
    trainSeconds,
    meanImagesPerSecond: (fitted.trainCount * epochs) / trainSeconds,
    report,
    confusionMatrix: cm,
    split: { testFraction, seed, limit: options.limit ?? null, datasetCount: dataset.count },
    ...(fitted.keptEpoch === undefined ? {} : { keptEpoch: fitted.keptEpoch }),
    ...(recipe === undefined ? {} : { recipe }),
    ...(evaluation.years === undefined ? {} : { years: evaluation.years }),
    ...(fitted.calibration === undefined ? {} : { calibration: fitted.calibration }),
  };

  await saveModel(model, join(outDir, 'model'));
  await writeJson(join(outDir, 'training-info.json'), {
    task,
    preset: options.preset,
    labels,
    ageScheme,
    input: dataset.spec,
    preprocessingVersion: PREPROCESSING_VERSION,
    outputs,
    seed,
    split: { testFraction, seed },
  });
  await writeJson(join(outDir, 'metrics.json'), { ...metrics, subgroups });
  await writeJson(join(outDir, 'history.json'), history);
  await writeJson(join(outDir, 'test-split.json'), split.test.length > 0 ? Array.from(split.test, (i) => dataset.names[i]) : []);
  await writeFile(join(outDir, 'subgroups.txt'), formatSubgroupTable(subgroups) + '\n');
  await writeFile(join(outDir, 'evaluation.txt'), formatEvaluation(evaluation) + '\n');
  await plotHistory(history, join(outDir, 'curves.png'), `${task} (${options.preset} preset): loss and accuracy`, {
    keptEpoch: fitted.keptEpoch,
    loss: lossLegend(options.preset, task, recipe),
  });
  await plotConfusionMatrix(cm, labels, join(outDir, 'confusion.png'), `${task}: confusion matrix (test split)`);
  await plotSampleGrid(pickSamples(dataset, split.test, predicted, truth, labels, seed), join(outDir, 'samples.png'), `${task}: sample test faces, correct (green) and misclassified (red)`);
  fitted.release();
  model.dispose();
  return metrics;
}

/** Validation's loss where training's differs: the cross-entropy of the true class (for age, of its age group), on faces as they are. */
const VALIDATION_LOSS: Record<Task, string> = {
  age: 'validation: age-group cross-entropy, faces unaugmented',
  ethnicity: 'validation: cross-entropy, faces unaugmented',
  gender: 'validation: cross-entropy, faces unaugmented',
};

/** Training's loss in the residual and multitask presets (fit-residual.ts lossOf, fit-multitask-worker.ts taskLosses). */
const TRAINING_LOSS: Record<Task, string> = {
  age: 'train: age-distribution cross-entropy (smoothed targets)',
  ethnicity: 'train: class-weighted cross-entropy (smoothed labels)',
  gender: 'train: cross-entropy (smoothed labels)',
};

/**
 * What the curves' two losses are: the seed preset's model.fit computes one loss on both splits; the others train on
 * augmented faces against smoothed targets (and the multitask age head adds its age-group term), which validation does not.
 */
function lossLegend(preset: Preset, task: Task, recipe?: RecipeOptions): LossLegend | undefined {
  if (preset === 'seed') return undefined;
  const groupTerm = preset === 'multitask' && task === 'age' ? ' + age-group term' : '';
  const mixup = recipe?.mixup === null || recipe?.mixup === undefined ? '' : ', mixup';
  const distilled = recipe?.distill === undefined ? '' : `, distilled (teachers' weight ${recipe.distill.weight})`;
  return {
    train: `${TRAINING_LOSS[task]}${groupTerm}, faces augmented${mixup}${distilled}`,
    validation: VALIDATION_LOSS[task],
    note: 'different losses, not comparable: follow each curve on its own',
  };
}

/** The coursework's way: model.fit on the 70% training split, the test split shown as validation data. */
async function fitSeed(args: FitArgs): Promise<FitResult> {
  const { task, labels, dataset, targets, train, test, seed, log } = args;
  const config = SEED_TRAINING[task];
  const epochs = args.epochs ?? config.epochs;
  const model = buildSeedModel(task, labels.length, seed);
  log(`${task}: ${model.countParams().toLocaleString('en-US')} parameters, ${train.length} train / ${test.length} test faces, batch ${config.batchSize}, ${epochs} epochs`);
  const [xTrain, yTrain] = tensorsFor(dataset, targets, train);
  const [xTest, yTest] = tensorsFor(dataset, targets, test);
  const history = emptyHistory();
  let epochStart = 0;
  const trainStart = performance.now();
  await model.fit(xTrain, yTrain, {
    batchSize: config.batchSize,
    epochs,
    shuffle: true,
    validationData: [xTest, yTest],
    verbose: 0,
    callbacks: {
      onEpochBegin: async () => {
        epochStart = performance.now();
      },
      onEpochEnd: async (epoch, logs = {}) => {
        const seconds = (performance.now() - epochStart) / 1000;
        const entry = {
          epoch: epoch + 1,
          epochs,
          loss: logs.loss,
          accuracy: logs.acc ?? logs.accuracy,
          valLoss: logs.val_loss,
          valAccuracy: logs.val_acc ?? logs.val_accuracy,
          seconds,
          imagesPerSecond: train.length / seconds,
        };
        recordEpoch(history, entry);
        log(`${task}: ${formatEpochLine(entry)}`);
      },
    },
  });
  const trainSeconds = (performance.now() - trainStart) / 1000;
  tf.dispose([xTrain, yTrain, xTest, yTest]);
  const outputs: OutputSpec[] = [task === 'gender' ? { name: 'output', kind: 'sigmoid', labels } : { name: 'output', kind: 'probabilities', labels }];
  return {
    model,
    outputs,
    history,
    epochs,
    parameters: model.countParams(),
    trainCount: train.length,
    trainSeconds,
    // The optimizer was passed to compile(), so the model does not own it: its Adam moments are ours to free.
    release: () => model.optimizer.dispose(),
  };
}

/** Inputs scaled as the spec says, and targets as an [N, 1] float column (sparse classes or binary). */
function tensorsFor(dataset: Dataset, targets: Int32Array, indices: Int32Array): [tf.Tensor4D, tf.Tensor2D] {
  const { height, width, channels } = dataset.spec;
  const size = height * width * channels;
  const x = new Float32Array(indices.length * size);
  const y = new Float32Array(indices.length);
  indices.forEach((faceIndex, k) => {
    scaleBytes(dataset.pixels.subarray(faceIndex * size, (faceIndex + 1) * size), dataset.spec, x.subarray(k * size, (k + 1) * size));
    y[k] = targets[faceIndex];
  });
  return [tf.tensor4d(x, [indices.length, height, width, channels]), tf.tensor2d(y, [indices.length, 1])];
}

function pickSamples(dataset: Dataset, test: Int32Array, predicted: Int32Array, truth: Int32Array, labels: string[], seed: number) {
  const { height, width, channels } = dataset.spec;
  const size = height * width * channels;
  const order = Array.from(shuffledIndices(test.length, seed + 1));
  const correct = order.filter((k) => predicted[k] === truth[k]).slice(0, SAMPLES_PER_KIND);
  const wrong = order.filter((k) => predicted[k] !== truth[k]).slice(0, SAMPLES_PER_KIND);
  return [...correct, ...wrong].map((k) => ({
    pixels: dataset.pixels.slice(test[k] * size, (test[k] + 1) * size),
    height,
    width,
    channels,
    predicted: labels[predicted[k]],
    truth: labels[truth[k]],
    correct: predicted[k] === truth[k],
  }));
}

async function writeJson(file: string, value: unknown): Promise<void> {
  await writeFile(file, JSON.stringify(value, null, 2) + '\n');
}
