/**
 * The `seed` preset: the coursework's three CNNs exactly as they were trained.
 *
 * Its model summaries show 2,981 parameters for ethnicity and 673 for gender. Both are the same two
 * convolution blocks (Conv 3x3 with 2 then 4 filters, "same" padding, ReLU, 2x2 max pooling: 96 weights,
 * leaving 12x12x4 = 576 features) followed directly by the output layer: 576x5+5 = 2,885 for ethnicity,
 * 576x1+1 = 577 for a sigmoid gender output. The hidden Dense+Dropout lines meant for all three were
 * added to the age model only; we reproduce what ran, not what was meant.
 */
import * as tf from '@tensorflow/tfjs';
import type { Task } from '../../contract/labels.ts';
import { SEED_INPUT } from '../../contract/preprocess.ts';

export interface SeedTrainingConfig {
  batchSize: number;
  epochs: number;
  learningRate: number;
  /** fraction of the data held out for testing */
  testFraction: number;
}

export const SEED_TRAINING: Record<Task, SeedTrainingConfig> = {
  age: { batchSize: 128, epochs: 25, learningRate: 1e-3, testFraction: 0.3 },
  ethnicity: { batchSize: 32, epochs: 25, learningRate: 1e-3, testFraction: 0.3 },
  gender: { batchSize: 32, epochs: 25, learningRate: 1e-3, testFraction: 0.3 },
};

/** Units of the age model's hidden Dense layer, and its dropout rate. */
const AGE_HIDDEN_UNITS = 64;
const AGE_DROPOUT = 0.5;

function convBlocks(model: tf.Sequential, init: () => ReturnType<typeof tf.initializers.glorotUniform>): void {
  const { height, width, channels } = SEED_INPUT;
  model.add(tf.layers.conv2d({ inputShape: [height, width, channels], filters: 2, kernelSize: 3, padding: 'same', activation: 'relu', kernelInitializer: init() }));
  model.add(tf.layers.maxPooling2d({ poolSize: 2 }));
  model.add(tf.layers.conv2d({ filters: 4, kernelSize: 3, padding: 'same', activation: 'relu', kernelInitializer: init() }));
  model.add(tf.layers.maxPooling2d({ poolSize: 2 }));
  model.add(tf.layers.flatten());
}

/**
 * Builds and compiles the seed model of a task. `classes` is the number of age groups for `age`
 * (6 for the coursework's scheme, 10 for decades); gender is one sigmoid unit, as in the coursework.
 * Keras' default initializers (Glorot uniform kernels, zero biases), seeded when `seed` is given.
 */
export function buildSeedModel(task: Task, classes: number, seed?: number): tf.Sequential {
  let layerIndex = 0;
  const init = () => tf.initializers.glorotUniform({ seed: seed === undefined ? undefined : seed + layerIndex++ });
  const model = tf.sequential({ name: `seed_${task}` });
  convBlocks(model, init);
  if (task === 'age') {
    model.add(tf.layers.dense({ units: AGE_HIDDEN_UNITS, activation: 'relu', kernelInitializer: init() }));
    model.add(tf.layers.dropout({ rate: AGE_DROPOUT }));
  }
  if (task === 'gender') {
    model.add(tf.layers.dense({ units: 1, activation: 'sigmoid', kernelInitializer: init() }));
  } else {
    model.add(tf.layers.dense({ units: classes, activation: 'softmax', kernelInitializer: init() }));
  }
  model.compile({
    optimizer: tf.train.adam(SEED_TRAINING[task].learningRate),
    loss: task === 'gender' ? 'binaryCrossentropy' : 'sparseCategoricalCrossentropy',
    metrics: ['accuracy'],
  });
  return model;
}
