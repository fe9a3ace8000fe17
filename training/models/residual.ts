/**
 * The `residual` preset's networks: a small ResNet (3x3 convolutions, batch normalization, ReLU, identity or
 * 1x1-projection shortcuts, stride-2 downsampling, global average pooling) with one head per task.
 *
 * Training sees logits; the exported model ends in probabilities. The age model predicts a distribution
 * over every age from 1 to 116 years: its mean is `age.years`, and summing it over each group's ages gives the
 * six group probabilities, so the two answers can never disagree. Both sums are fixed Dense layers.
 */
import * as tf from '@tensorflow/tfjs';
import { ageGroupIndex, MAX_AGE, MIN_AGE, type AgeScheme, type Task } from '../../models/spec/labels.ts';
import type { OutputSpec } from '../../models/spec/metadata.ts';
import type { InputSpec } from '../../models/spec/preprocess.ts';

/** Age bins of the age model's distribution: one per whole year, MIN_AGE..MAX_AGE. */
export const AGE_BINS = MAX_AGE - MIN_AGE + 1;

export interface ResidualArchitecture {
  input: InputSpec;
  /** filters of each stage; every stage after the first halves the resolution */
  widths: number[];
  /** residual blocks per stage */
  blocksPerStage: number;
  dropout: number;
}

export interface ResidualModels {
  /** what training differentiates: image -> logits */
  train: tf.LayersModel;
  /** what ships: image -> probabilities (and years for age), sharing the training model's layers */
  inference: tf.LayersModel;
  /** what each inference output means, for the metadata */
  outputs: OutputSpec[];
}

type Symbolic = tf.SymbolicTensor;

function convBn(x: Symbolic, filters: number, kernelSize: number, strides: number, init: () => ReturnType<typeof tf.initializers.heNormal>): Symbolic {
  const y = tf.layers.conv2d({ filters, kernelSize, strides, padding: 'same', useBias: false, kernelInitializer: init() }).apply(x) as Symbolic;
  return tf.layers.batchNormalization({ momentum: 0.9 }).apply(y) as Symbolic;
}

function residualBlock(x: Symbolic, filters: number, strides: number, init: () => ReturnType<typeof tf.initializers.heNormal>): Symbolic {
  let y = tf.layers.reLU().apply(convBn(x, filters, 3, strides, init)) as Symbolic;
  y = convBn(y, filters, 3, 1, init);
  const shortcut = strides !== 1 || x.shape[3] !== filters ? convBn(x, filters, 1, strides, init) : x;
  return tf.layers.reLU().apply(tf.layers.add().apply([y, shortcut]) as Symbolic) as Symbolic;
}

/** A fixed linear map (no bias, not trained): used to sum the age distribution. */
function fixedDense(name: string, kernel: number[][]): tf.layers.Layer {
  const units = kernel[0].length;
  return tf.layers.dense({ name, units, useBias: false, trainable: false, weights: [tf.tensor2d(kernel)] });
}

export function buildResidualModels(task: Task, labels: string[], architecture: ResidualArchitecture, ageScheme: AgeScheme, seed: number): ResidualModels {
  let layerSeed = seed;
  const init = () => tf.initializers.heNormal({ seed: layerSeed++ });
  const { height, width, channels } = architecture.input;
  const input = tf.input({ shape: [height, width, channels], name: 'image' });
  let x = tf.layers.reLU().apply(convBn(input, architecture.widths[0], 3, 1, init)) as Symbolic;
  architecture.widths.forEach((filters, stage) => {
    for (let b = 0; b < architecture.blocksPerStage; b++) x = residualBlock(x, filters, stage > 0 && b === 0 ? 2 : 1, init);
  });
  x = tf.layers.globalAveragePooling2d({}).apply(x) as Symbolic;
  if (architecture.dropout > 0) x = tf.layers.dropout({ rate: architecture.dropout }).apply(x) as Symbolic;
  const units = task === 'age' ? AGE_BINS : task === 'gender' ? 1 : labels.length;
  const logits = tf.layers.dense({ units, name: `${task}_logits`, kernelInitializer: tf.initializers.glorotUniform({ seed: layerSeed++ }) }).apply(x) as Symbolic;
  const train = tf.model({ inputs: input, outputs: logits, name: `residual_${task}` });

  if (task === 'gender') {
    const probability = tf.layers.activation({ activation: 'sigmoid', name: 'gender' }).apply(logits) as Symbolic;
    return { train, inference: tf.model({ inputs: input, outputs: probability }), outputs: [{ name: 'gender', kind: 'sigmoid', labels }] };
  }
  if (task === 'ethnicity') {
    const probabilities = tf.layers.activation({ activation: 'softmax', name: 'ethnicity' }).apply(logits) as Symbolic;
    return { train, inference: tf.model({ inputs: input, outputs: probabilities }), outputs: [{ name: 'ethnicity', kind: 'probabilities', labels }] };
  }
  const distribution = tf.layers.activation({ activation: 'softmax', name: 'age_distribution' }).apply(logits) as Symbolic;
  const ages = Array.from({ length: AGE_BINS }, (_, i) => MIN_AGE + i);
  const groups = fixedDense('age_group', ages.map((age) => labels.map((_, g) => (ageGroupIndex(age, ageScheme) === g ? 1 : 0)))).apply(distribution) as Symbolic;
  const years = fixedDense('age_years', ages.map((age) => [age])).apply(distribution) as Symbolic;
  return {
    train,
    inference: tf.model({ inputs: input, outputs: [groups, years] }),
    outputs: [
      { name: 'age_group', kind: 'probabilities', labels },
      { name: 'age_years', kind: 'years' },
    ],
  };
}
