/** Scoring a model on labelled faces: the numbers training reports and `npm run evaluate` prints. */
import * as tf from '@tensorflow/tfjs';
import { ageGroupIndex, classIndex, type AgeScheme, type Task } from '../models/spec/labels.ts';
import { argmax } from '../models/spec/prediction.ts';
import { scaleBytes } from '../models/spec/preprocess.ts';
import type { Dataset } from './data/dataset.ts';
import {
  classificationReport,
  confusionMatrix,
  formatClassificationReport,
  formatConfusionMatrix,
  formatSubgroupTable,
  subgroupAccuracy,
} from './report/metrics.ts';

const PREDICT_BATCH = 512;

/** Class probabilities for a batch of scaled NHWC inputs. */
export type Predictor = (batch: Float32Array, count: number) => Promise<number[][]>;

/** A tfjs model as a Predictor; a single sigmoid output becomes [1 - p, p]. */
export function tfjsPredictor(model: tf.LayersModel, spec: Dataset['spec']): Predictor {
  return async (batch, count) => {
    const out = tf.tidy(() => model.predict(tf.tensor4d(batch, [count, spec.height, spec.width, spec.channels])) as tf.Tensor2D);
    const rows = (await out.array()) as number[][];
    out.dispose();
    return rows.map((row) => (row.length === 1 ? [1 - row[0], row[0]] : row));
  };
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
  const { height, width, channels } = dataset.spec;
  const size = height * width * channels;
  const targets = taskTargets(dataset, task, ageScheme);
  const predicted = new Int32Array(indices.length);
  const truth = new Int32Array(indices.length);
  let loss = 0;
  const batch = new Float32Array(PREDICT_BATCH * size);
  for (let start = 0; start < indices.length; start += PREDICT_BATCH) {
    const count = Math.min(PREDICT_BATCH, indices.length - start);
    for (let k = 0; k < count; k++) {
      const face = indices[start + k];
      scaleBytes(dataset.pixels.subarray(face * size, (face + 1) * size), dataset.spec, batch.subarray(k * size, (k + 1) * size));
    }
    const rows = await predict(batch.subarray(0, count * size), count);
    rows.forEach((row, k) => {
      const target = targets[indices[start + k]];
      predicted[start + k] = argmax(row);
      truth[start + k] = target;
      loss -= Math.log(Math.max(row[target], 1e-7));
    });
  }
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
  return { task, labels, count: indices.length, accuracy: report.accuracy, loss: loss / Math.max(1, indices.length), report, confusionMatrix: cm, subgroups, predicted, truth };
}

export function formatEvaluation(evaluation: Evaluation): string {
  return [
    `${evaluation.task}: accuracy ${(evaluation.accuracy * 100).toFixed(2)}% on ${evaluation.count} faces`,
    '',
    formatClassificationReport(evaluation.report),
    'Confusion matrix (rows: true, columns: predicted)',
    formatConfusionMatrix(evaluation.confusionMatrix, evaluation.labels),
    '',
    'Accuracy by subgroup',
    formatSubgroupTable(evaluation.subgroups),
  ].join('\n');
}
