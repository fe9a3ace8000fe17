/**
 * Temperature scaling fitted on the validation split: the temperature that makes a model's probabilities best
 * predict the labels of faces it did not train on (lowest mean cross-entropy), then kept in the model as a
 * `Temperature` layer, so that the exported file, the server and the page all give the rescaled probabilities.
 * Only the ethnicity and gender models are rescaled: the age model's group probabilities are sums of its
 * distribution over years, which its `years` answer shares, and they are already calibrated (1.2 points).
 */
import type * as tf from '@tensorflow/tfjs';
import type { Task } from '../contract/labels.ts';
import type { Dataset } from './data/dataset.ts';
import { predictFaces, type Predictor } from './evaluate.ts';
import { TEMPERATURE_FLOOR } from '../contract/temperature.ts';
import { withTemperature } from '../node-shared/tfjs/temperature-layer.ts';
import { calibration } from './report/metrics.ts';

/** The tasks whose probabilities are rescaled. */
export const CALIBRATED_TASKS: readonly Task[] = ['ethnicity', 'gender'];

/** Temperatures are searched in this range (a model that needs more is broken, not miscalibrated). */
const TEMPERATURE_RANGE = [0.05, 20] as const;

/** What a fit found, as metrics.json and the ONNX metadata record it. */
export interface TemperatureFit {
  /** rounded to 3 decimals, as kept in the model */
  temperature: number;
  /** validation faces it was fitted on */
  faces: number;
  /** mean cross-entropy of the true class on those faces, before and after */
  lossBefore: number;
  lossAfter: number;
  /** expected calibration error on those faces (fraction, 10 bins), before and after */
  eceBefore: number;
  eceAfter: number;
}

/** Rows of probabilities rescaled by `temperature`: q_i = p_i^(1/T) / sum_j p_j^(1/T), as the layer computes. */
export function temperedProbabilities(rows: readonly (readonly number[])[], temperature: number): number[][] {
  return rows.map((row) => {
    const logs = row.map((p) => Math.log(Math.max(p, TEMPERATURE_FLOOR)) / temperature);
    const top = Math.max(...logs);
    const exps = logs.map((l) => Math.exp(l - top));
    const sum = exps.reduce((a, b) => a + b, 0);
    return exps.map((e) => e / sum);
  });
}

/** Each row's log-probabilities, floored as the layer floors them; refuses rows that are not probabilities. */
function logRows(rows: readonly (readonly number[])[]): number[][] {
  return rows.map((row, i) => {
    if (!row.every((p) => p >= 0 && p <= 1)) throw new RangeError(`face ${i}'s probabilities are [${row.join(', ')}]; a model that gives values outside [0, 1] (or NaN) cannot be calibrated`);
    return row.map((p) => Math.log(Math.max(p, TEMPERATURE_FLOOR)));
  });
}

/**
 * Mean cross-entropy of the true classes under the probabilities rescaled by 1/`inverse`: log q_true =
 * s log p_true - logsumexp_j(s log p_j) with s = 1/T, exact (no floor on q) and convex in s.
 */
function meanLoss(logs: readonly (readonly number[])[], truth: ArrayLike<number>, inverse: number): number {
  let loss = 0;
  logs.forEach((row, i) => {
    const top = Math.max(...row) * inverse;
    let sum = 0;
    for (const l of row) sum += Math.exp(l * inverse - top);
    loss += top + Math.log(sum) - row[truth[i]] * inverse;
  });
  return loss / logs.length;
}

function ece(rows: readonly (readonly number[])[], truth: ArrayLike<number>): number {
  const top = rows.map((row) => row.indexOf(Math.max(...row)));
  return calibration(
    top.map((c, i) => rows[i][c]),
    top.map((c, i) => c === truth[i]),
  ).ece;
}

/**
 * The temperature that minimizes the mean cross-entropy of `truth` under the rescaled `rows` (each row a face's
 * class probabilities; two for a sigmoid unit). The loss is convex in 1/T, so a golden-section search over 1/T
 * finds the minimum. Throws RangeError for rows that are not probabilities and for a best temperature at the edge
 * of the range searched (0.05 to 20): such a model is broken, not miscalibrated.
 */
export function fitTemperature(rows: readonly (readonly number[])[], truth: ArrayLike<number>): TemperatureFit {
  if (rows.length === 0) throw new RangeError('fitTemperature needs at least one face');
  if (rows.length !== truth.length) throw new RangeError(`${rows.length} rows of probabilities for ${truth.length} labels`);
  const logs = logRows(rows);
  const lossAt = (inverse: number): number => meanLoss(logs, truth, inverse);
  const [lowest, highest] = [1 / TEMPERATURE_RANGE[1], 1 / TEMPERATURE_RANGE[0]];
  let [lo, hi] = [lowest, highest];
  const ratio = (Math.sqrt(5) - 1) / 2;
  let a = hi - ratio * (hi - lo);
  let b = lo + ratio * (hi - lo);
  let [fa, fb] = [lossAt(a), lossAt(b)];
  while (hi - lo > 1e-6) {
    if (fa <= fb) {
      [hi, b, fb] = [b, a, fa];
      a = hi - ratio * (hi - lo);
      fa = lossAt(a);
    } else {
      [lo, a, fa] = [a, b, fb];
      b = lo + ratio * (hi - lo);
      fb = lossAt(b);
    }
  }
  const inverse = (lo + hi) / 2;
  if (inverse - lowest < 1e-4 || highest - inverse < 1e-4) {
    throw new RangeError(`the best temperature for these ${rows.length} faces lies at the edge of ${TEMPERATURE_RANGE.join(' to ')} (1/T = ${inverse.toFixed(4)}); the model's probabilities are broken, not miscalibrated`);
  }
  const temperature = Math.round((1 / inverse) * 1000) / 1000;
  const after = temperedProbabilities(rows, temperature);
  return {
    temperature,
    faces: rows.length,
    lossBefore: lossAt(1),
    lossAfter: lossAt(1 / temperature),
    eceBefore: ece(rows, truth),
    eceAfter: ece(after, truth),
  };
}

/**
 * Fits a temperature for `model` (read through `predict`, which must answer as the model does) on the faces at
 * `indices`, and returns the model with it as its last layer. `targets` holds every face's class for the task.
 */
export async function calibrateModel(
  model: tf.LayersModel,
  predict: Predictor,
  dataset: Dataset,
  indices: Int32Array,
  targets: Int32Array,
): Promise<{ model: tf.LayersModel; fit: TemperatureFit }> {
  if (model.outputs.length !== 1) throw new Error(`model "${model.name}" has ${model.outputs.length} outputs; temperature scaling takes a model with one class output`);
  const answers = await predictFaces(predict, dataset, indices);
  const fit = fitTemperature(
    answers.map((a) => a.probabilities),
    Array.from(indices, (face) => targets[face]),
  );
  return { model: withTemperature(model, [fit.temperature]), fit };
}

/** One line for the training log and the calibrate CLI; `seconds`: what the fit took, predictions included. */
export function formatTemperatureFit(task: Task, fit: TemperatureFit, seconds?: number): string {
  const points = (x: number): string => (x * 100).toFixed(1);
  return (
    `${task}: probabilities rescaled by temperature ${fit.temperature}, fitted on ${fit.faces} validation faces` +
    (seconds === undefined ? '' : ` in ${seconds.toFixed(1)} s`) +
    ` (cross-entropy ${fit.lossBefore.toFixed(4)} -> ${fit.lossAfter.toFixed(4)}, calibration error ${points(fit.eceBefore)} -> ${points(fit.eceAfter)} points)`
  );
}
