/** Scoring a model on labelled faces: the numbers training reports and `npm run evaluate` prints. */
import * as tf from '@tensorflow/tfjs';
import { ageGroupIndex, ageGroupLabels, classIndex, type AgeScheme, type Task } from '../contract/labels.ts';
import { readModelMetadata, type ModelMetadata } from '../contract/metadata.ts';
import { taskPrediction, type TaskPrediction } from '../contract/prediction.ts';
import { scaleBytes, type InputSpec } from '../contract/preprocess.ts';
import { createSession, releaseSession, run, type NodeSession } from '../node-shared/onnxruntime-node.ts';
import type { Dataset } from './data/dataset.ts';
import {
  calibration,
  classificationReport,
  confusionMatrix,
  formatCalibration,
  formatClassificationReport,
  formatConfusionMatrix,
  formatSubgroupTable,
  meanAbsoluteError,
  subgroupAccuracy,
  type Calibration,
} from './report/metrics.ts';

const PREDICT_BATCH = 512;

/** Each face's answer (class probabilities, and years where the model gives them) for a batch of scaled NHWC inputs. */
export type Predictor = (batch: Float32Array, count: number) => Promise<TaskPrediction[]>;

/** What a model's outputs mean: from training-info.json for a tfjs model, from the metadata for an ONNX one. */
export type OutputsInfo = Pick<ModelMetadata, 'task' | 'labels' | 'outputs'>;

/** One face's values of each output, by name, from whole-batch outputs. */
function rowsOf(outputs: Record<string, { data: Float32Array; width: number }>, row: number): Record<string, Float32Array> {
  const rows: Record<string, Float32Array> = {};
  for (const [name, { data, width }] of Object.entries(outputs)) rows[name] = data.subarray(row * width, (row + 1) * width);
  return rows;
}

/** A tfjs model as a Predictor; its outputs are read as `info` says, as the runtimes read the exported model. */
export function tfjsPredictor(model: tf.LayersModel, spec: InputSpec, info: OutputsInfo): Predictor {
  return async (batch, count) => {
    const outs = tf.tidy(() => {
      const result = model.predict(tf.tensor4d(batch, [count, spec.height, spec.width, spec.channels]));
      return Array.isArray(result) ? result : [result];
    });
    const byName: Record<string, { data: Float32Array; width: number }> = {};
    info.outputs.forEach((output, i) => (byName[output.name] = { data: outs[i].dataSync() as Float32Array, width: outs[i].size / count }));
    tf.dispose(outs);
    return Array.from({ length: count }, (_, row) => taskPrediction(info, rowsOf(byName, row)));
  };
}

/**
 * An exported ONNX model in onnxruntime-node as a Predictor, read through its own metadata, on `threads` intra-op
 * threads; `release` frees its session. `file`, where the bytes came from one, heads any error about them.
 */
export async function onnxPredictor(bytes: Uint8Array, { threads = 1, file }: { threads?: number; file?: string } = {}): Promise<{ predict: Predictor; metadata: ModelMetadata; release: () => Promise<void> }> {
  let metadata: ModelMetadata;
  let session: NodeSession;
  try {
    metadata = readModelMetadata(bytes);
    session = await createSession(bytes, { provider: 'cpu', threads });
  } catch (error) {
    if (file === undefined) throw error;
    throw new Error(`${file}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
  const inputName = session.inputs[0].name;
  const { height, width, channels } = metadata.input;
  const predict: Predictor = async (batch, count) => {
    const outputs = await run(session, { [inputName]: { data: batch, dims: [count, height, width, channels] } });
    const byName: Record<string, { data: Float32Array; width: number }> = {};
    for (const [name, tensor] of Object.entries(outputs)) byName[name] = { data: tensor.data, width: tensor.data.length / count };
    return Array.from({ length: count }, (_, row) => taskPrediction(metadata, rowsOf(byName, row)));
  };
  return { predict, metadata, release: () => releaseSession(session) };
}

/** The class index of every face for a task. */
export function taskTargets(dataset: Dataset, task: Task, ageScheme: AgeScheme): Int32Array {
  const targets = new Int32Array(dataset.count);
  for (let i = 0; i < dataset.count; i++) {
    targets[i] = classIndex({ age: dataset.ages[i], gender: dataset.genders[i], ethnicity: dataset.ethnicities[i] }, task, ageScheme);
  }
  return targets;
}

export interface Evaluation {
  task: Task;
  labels: string[];
  count: number;
  accuracy: number;
  /** mean cross-entropy of the true class */
  loss: number;
  report: ReturnType<typeof classificationReport>;
  confusionMatrix: number[][];
  subgroups: ReturnType<typeof subgroupAccuracy>;
  /** per evaluated face, in `indices` order */
  predicted: Int32Array;
  truth: Int32Array;
  /**
   * how far the probability of each answer can be taken at its word, over the answers that have one (a diverged
   * model's NaN has none); undefined where none does
   */
  calibration?: Calibration;
  /** for a model that predicts age in years: mean absolute error overall and per age group */
  years?: { mae: number; byAgeGroup: { label: string; mae: number | null; count: number }[] };
}

/** `predict`'s answer for each face at `indices`, in that order, in batches of scaled inputs. */
export async function predictFaces(predict: Predictor, dataset: Dataset, indices: ArrayLike<number>): Promise<TaskPrediction[]> {
  const { height, width, channels } = dataset.spec;
  const size = height * width * channels;
  const answers: TaskPrediction[] = [];
  const batch = new Float32Array(PREDICT_BATCH * size);
  for (let start = 0; start < indices.length; start += PREDICT_BATCH) {
    const count = Math.min(PREDICT_BATCH, indices.length - start);
    for (let k = 0; k < count; k++) {
      const face = indices[start + k];
      scaleBytes(dataset.pixels.subarray(face * size, (face + 1) * size), dataset.spec, batch.subarray(k * size, (k + 1) * size));
    }
    answers.push(...(await predict(batch.subarray(0, count * size), count)));
  }
  return answers;
}

/** Runs `predict` over the faces at `indices` and scores it against their labels. */
export async function evaluate(
  predict: Predictor,
  dataset: Dataset,
  indices: ArrayLike<number>,
  task: Task,
  labels: string[],
  ageScheme: AgeScheme,
): Promise<Evaluation> {
  const targets = taskTargets(dataset, task, ageScheme);
  const predicted = new Int32Array(indices.length);
  const truth = new Int32Array(indices.length);
  const confidence = new Float32Array(indices.length);
  let loss = 0;
  const years: number[] = [];
  (await predictFaces(predict, dataset, indices)).forEach((row, k) => {
    const target = targets[indices[k]];
    predicted[k] = row.index;
    truth[k] = target;
    confidence[k] = row.probabilities[row.index];
    loss -= Math.log(Math.max(row.probabilities[target], 1e-7));
    if (row.years !== undefined) years.push(row.years);
  });
  const cm = confusionMatrix(truth, predicted, labels.length);
  const report = classificationReport(cm, labels);
  const subgroups = subgroupAccuracy(
    Array.from(indices, (face, k) => ({
      gender: dataset.genders[face],
      ethnicity: dataset.ethnicities[face],
      ageGroup: ageGroupIndex(dataset.ages[face], ageScheme),
      correct: predicted[k] === truth[k],
    })),
    ageScheme,
  );
  const evaluation: Evaluation = {
    task,
    labels,
    count: indices.length,
    accuracy: report.accuracy,
    loss: loss / Math.max(1, indices.length),
    report,
    confusionMatrix: cm,
    subgroups,
    calibration: calibrationOf(confidence, predicted, truth),
    predicted,
    truth,
  };
  if (years.length === indices.length && years.length > 0) evaluation.years = yearsError(years, Array.from(indices, (face) => dataset.ages[face]), ageScheme);
  return evaluation;
}

function calibrationOf(confidence: Float32Array, predicted: Int32Array, truth: Int32Array): Calibration | undefined {
  const answered = Array.from(confidence.keys()).filter((k) => confidence[k] >= 0 && confidence[k] <= 1);
  if (answered.length === 0) return undefined;
  return calibration(
    answered.map((k) => confidence[k]),
    answered.map((k) => predicted[k] === truth[k]),
  );
}

function yearsError(predicted: number[], ages: number[], ageScheme: AgeScheme): NonNullable<Evaluation['years']> {
  const groupLabels = ageGroupLabels(ageScheme);
  const sums = new Float64Array(groupLabels.length);
  const counts = new Int32Array(groupLabels.length);
  ages.forEach((age, i) => {
    const group = ageGroupIndex(age, ageScheme);
    sums[group] += Math.abs(predicted[i] - age);
    counts[group]++;
  });
  return {
    mae: meanAbsoluteError(ages, predicted),
    byAgeGroup: groupLabels.map((label, g) => ({ label, mae: counts[g] > 0 ? sums[g] / counts[g] : null, count: counts[g] })),
  };
}

/** The full report: accuracy, the per-class report, confusion matrix, subgroups, calibration and, for age, the error in years; headed by `heading` (default: the task). */
export function formatEvaluation(evaluation: Evaluation, heading: string = evaluation.task): string {
  return [
    `${heading}: accuracy ${(evaluation.accuracy * 100).toFixed(2)}% on ${evaluation.count} faces`,
    '',
    formatClassificationReport(evaluation.report),
    'Confusion matrix (rows: true, columns: predicted)',
    formatConfusionMatrix(evaluation.confusionMatrix, evaluation.labels),
    '',
    'Accuracy by subgroup',
    formatSubgroupTable(evaluation.subgroups),
    evaluation.calibration === undefined ? 'Calibration: no answer has a probability (NaN outputs)' : formatCalibration(evaluation.calibration),
    ...(evaluation.years === undefined
      ? []
      : [
          '',
          `Age in years: mean absolute error ${evaluation.years.mae.toFixed(2)} years`,
          ...evaluation.years.byAgeGroup.map((g) => `  ${g.label.padEnd(6)} ${g.mae === null ? '     -' : g.mae.toFixed(2).padStart(6)} years  (${g.count} faces)`),
        ]),
  ].join('\n');
}

/**
 * One line per task, for the end of a report: `age:      79.82% accuracy (age group), 5.20 years MAE (4272 faces)`.
 * `heading` defaults to the task; `faces` names what was counted (e.g. "test faces").
 */
export function formatEvaluationSummary(evaluation: Pick<Evaluation, 'task' | 'accuracy' | 'count' | 'years'>, { heading = evaluation.task as string, faces = 'faces' }: { heading?: string; faces?: string } = {}): string {
  const accuracy = `${(evaluation.accuracy * 100).toFixed(2)}% accuracy${evaluation.task === 'age' ? ' (age group)' : ''}`;
  const years = evaluation.years === undefined ? '' : `, ${evaluation.years.mae.toFixed(2)} years MAE`;
  return `${`${heading}:`.padEnd(10)} ${accuracy}${years} (${evaluation.count} ${faces})`;
}
