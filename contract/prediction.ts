/**
 * The answer every runtime gives for a face: the server's POST /v1/predict body and the browser's
 * `window.demo.predict`. One function turns a model's outputs into it, so the two cannot drift apart.
 */
import { classProbabilities, type ModelMetadata } from './metadata.ts';

/**
 * Answers whose top probability is under this are marked `uncertain`. The probabilities are calibrated, so such an
 * answer is right about 60% of the time or less; on the shipped models' test split this marks 15.7% of age-group
 * answers (54% of them right), 16.2% of ethnicity answers (45%) and 4.1% of gender answers (55%), against 84.6%,
 * 89.7% and 94.3% for the rest (`npm run evaluate -- --model models`, its "at least 0.60" lines).
 */
export const UNCERTAIN_BELOW = 0.6;

/** One task's answer: `group` for the age task, `label` for the others, as the API has it. */
export interface TaskPrediction {
  group?: string;
  label?: string;
  index: number;
  probabilities: number[];
  /** each class's probability under its name, in the same order as `probabilities` */
  classes: Record<string, number>;
  /** whether the top probability is under UNCERTAIN_BELOW: close to a guess between classes */
  uncertain: boolean;
  /** an age model's estimate in years, when it has such an output */
  years?: number;
}

export interface Timings {
  decode: number;
  inference: number;
  total: number;
}

/** POST /v1/predict's answer: one entry per task, then the timings. */
export type Prediction = { [task: string]: TaskPrediction | Timings } & { timingsMs: Timings };

export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/**
 * One face's answer for a task from its model's outputs, `rows` holding that face's values of each output
 * by name. Labels and their order come from the metadata; a single sigmoid becomes [1 - p, p].
 */
export function taskPrediction(metadata: Pick<ModelMetadata, 'task' | 'labels' | 'outputs'>, rows: Record<string, ArrayLike<number>>): TaskPrediction {
  const classes = metadata.outputs.find((o) => o.kind !== 'years');
  if (classes === undefined) throw new Error(`The ${metadata.task} model has no output that gives class probabilities`);
  const labels = classes.labels ?? metadata.labels;
  const probabilities = classProbabilities(classes, rows[classes.name]);
  const index = argmax(probabilities);
  const classNames = Object.fromEntries(labels.map((name, i) => [name, probabilities[i]]));
  const prediction: TaskPrediction = { [metadata.task === 'age' ? 'group' : 'label']: labels[index], index, probabilities, classes: classNames, uncertain: probabilities[index] < UNCERTAIN_BELOW };
  const years = metadata.outputs.find((o) => o.kind === 'years');
  if (years !== undefined) prediction.years = rows[years.name][0];
  return prediction;
}
