/** What every preset's training takes and gives back, so the run around it is the same for all. */
import type * as tf from '@tensorflow/tfjs';
import type { AgeScheme, Task } from '../contract/labels.ts';
import type { OutputSpec } from '../contract/metadata.ts';
import type { TemperatureFit } from './calibrate.ts';
import type { Dataset } from './data/dataset.ts';

export interface History {
  epoch: number[];
  loss: number[];
  accuracy: number[];
  valLoss: number[];
  valAccuracy: number[];
  seconds: number[];
  imagesPerSecond: number[];
  /** age models that predict years: validation mean absolute error, in years */
  valMae?: number[];
}

/** What a preset's training hands back: the model that ships and how it got there. */
export interface FitResult {
  /** the model to evaluate, save and export (image -> what `outputs` describe) */
  model: tf.LayersModel;
  outputs: OutputSpec[];
  history: History;
  epochs: number;
  parameters: number;
  trainCount: number;
  trainSeconds: number;
  /** presets that choose on a validation split: the epoch whose weights were kept */
  keptEpoch?: number;
  /** where the model's probabilities were rescaled by a temperature fitted on the validation split */
  calibration?: TemperatureFit;
  /** frees what only training needed (optimizer state, the training graph) */
  release(): void;
}

export interface FitArgs {
  task: Task;
  labels: string[];
  dataset: Dataset;
  targets: Int32Array;
  /** the faces training may use (the test split is not among them) */
  train: Int32Array;
  /** the held-out test faces: shown per epoch by the seed preset, as the coursework did; chosen on by nobody */
  test: Int32Array;
  epochs?: number;
  seed: number;
  ageScheme: AgeScheme;
  log: (line: string) => void;
}

export function emptyHistory(): History {
  return { epoch: [], loss: [], accuracy: [], valLoss: [], valAccuracy: [], seconds: [], imagesPerSecond: [] };
}

export function recordEpoch(history: History, entry: { epoch: number; loss: number; accuracy: number; valLoss: number; valAccuracy: number; seconds: number; imagesPerSecond: number; valMae?: number }): void {
  history.epoch.push(entry.epoch);
  history.loss.push(entry.loss);
  history.accuracy.push(entry.accuracy);
  history.valLoss.push(entry.valLoss);
  history.valAccuracy.push(entry.valAccuracy);
  history.seconds.push(entry.seconds);
  history.imagesPerSecond.push(entry.imagesPerSecond);
  if (entry.valMae !== undefined) (history.valMae ??= []).push(entry.valMae);
}
