/**
 * The residual presets' networks: a small ResNet trunk (3x3 convolutions, batch normalization, ReLU, identity
 * or 1x1-projection shortcuts, strided downsampling, global average pooling) with one head per task. The
 * `residual` preset gives each task its own trunk; the `multitask` preset shares one trunk between three heads,
 * so one forward and backward pass trains all three tasks.
 *
 * Training sees logits; the exported models end in probabilities. The age head predicts a distribution
 * over every age from 1 to 116 years: its mean is `age.years`, and summing it over each group's ages gives the
 * six group probabilities, so the two answers can never disagree. Both sums are fixed Dense layers.
 */
import * as tf from '@tensorflow/tfjs';
import { ageGroupIndex, MAX_AGE, MIN_AGE, TASKS, type AgeScheme, type Task } from '../../models/spec/labels.ts';
import type { OutputSpec } from '../../models/spec/metadata.ts';
import type { InputSpec } from '../../models/spec/preprocess.ts';

/** Age bins of the age model's distribution: one per whole year, MIN_AGE..MAX_AGE. */
export const AGE_BINS = MAX_AGE - MIN_AGE + 1;

export interface ResidualArchitecture {
  input: InputSpec;
  /** filters of the stem convolution (default: the first stage's width) */
  stemWidth?: number;
  /** filters of each stage */
  widths: number[];
  /** stride of each stage's first block (default: 1 for the first stage, 2 after it) */
  strides?: number[];
  /** residual blocks per stage */
  blocksPerStage: number;
  dropout: number;
}

/** One task's networks. */
export interface ResidualModels {
  /** what training differentiates: image -> logits */
  train: tf.LayersModel;
  /** what ships: image -> probabilities (and years for age), sharing the training model's layers */
  inference: tf.LayersModel;
  /** what each inference output means, for the metadata */
  outputs: OutputSpec[];
}

/** The three tasks on one shared trunk. */
export interface MultitaskModels {
  /** image -> [age logits, ethnicity logits, gender logit], in TASKS order */
  train: tf.LayersModel;
  /** one shippable model per task, each the shared trunk plus that task's head */
  inference: Record<Task, tf.LayersModel>;
  outputs: Record<Task, OutputSpec[]>;
}

type Symbolic = tf.SymbolicTensor;
type Initializer = () => ReturnType<typeof tf.initializers.heNormal>;

function convBn(x: Symbolic, filters: number, kernelSize: number, strides: number, init: Initializer): Symbolic {
  const y = tf.layers.conv2d({ filters, kernelSize, strides, padding: 'same', useBias: false, kernelInitializer: init() }).apply(x) as Symbolic;
  return tf.layers.batchNormalization({ momentum: 0.9 }).apply(y) as Symbolic;
}

function residualBlock(x: Symbolic, filters: number, strides: number, init: Initializer): Symbolic {
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

/** The image input and the pooled (and dropped-out, in training) features of the trunk. */
function buildTrunk(architecture: ResidualArchitecture, init: Initializer): { input: Symbolic; features: Symbolic } {
  const { height, width, channels } = architecture.input;
  const input = tf.input({ shape: [height, width, channels], name: 'image' });
  let x = tf.layers.reLU().apply(convBn(input, architecture.stemWidth ?? architecture.widths[0], 3, 1, init)) as Symbolic;
  architecture.widths.forEach((filters, stage) => {
    const stride = architecture.strides?.[stage] ?? (stage > 0 ? 2 : 1);
    for (let b = 0; b < architecture.blocksPerStage; b++) x = residualBlock(x, filters, b === 0 ? stride : 1, init);
  });
  x = tf.layers.globalAveragePooling2d({}).apply(x) as Symbolic;
  if (architecture.dropout > 0) x = tf.layers.dropout({ rate: architecture.dropout }).apply(x) as Symbolic;
  return { input, features: x };
}

interface Head {
  logits: Symbolic;
  /** the shipped outputs, in the order of `outputs` */
  shipped: Symbolic[];
  outputs: OutputSpec[];
}

/** One task's head on the trunk's features: logits for training, probabilities (and years) to ship. */
function buildHead(task: Task, features: Symbolic, labels: string[], ageScheme: AgeScheme, seed: number): Head {
  const units = task === 'age' ? AGE_BINS : task === 'gender' ? 1 : labels.length;
  const logits = tf.layers.dense({ units, name: `${task}_logits`, kernelInitializer: tf.initializers.glorotUniform({ seed }) }).apply(features) as Symbolic;
  if (task === 'gender') {
    const probability = tf.layers.activation({ activation: 'sigmoid', name: 'gender' }).apply(logits) as Symbolic;
    return { logits, shipped: [probability], outputs: [{ name: 'gender', kind: 'sigmoid', labels }] };
  }
  if (task === 'ethnicity') {
    const probabilities = tf.layers.activation({ activation: 'softmax', name: 'ethnicity' }).apply(logits) as Symbolic;
    return { logits, shipped: [probabilities], outputs: [{ name: 'ethnicity', kind: 'probabilities', labels }] };
  }
  const distribution = tf.layers.activation({ activation: 'softmax', name: 'age_distribution' }).apply(logits) as Symbolic;
  const ages = Array.from({ length: AGE_BINS }, (_, i) => MIN_AGE + i);
  const groups = fixedDense('age_group', ages.map((age) => labels.map((_, g) => (ageGroupIndex(age, ageScheme) === g ? 1 : 0)))).apply(distribution) as Symbolic;
  const years = fixedDense('age_years', ages.map((age) => [age])).apply(distribution) as Symbolic;
  return {
    logits,
    shipped: [groups, years],
    outputs: [
      { name: 'age_group', kind: 'probabilities', labels },
      { name: 'age_years', kind: 'years' },
    ],
  };
}

function seededInitializer(seed: number): { init: Initializer; next: () => number } {
  let layerSeed = seed;
  return { init: () => tf.initializers.heNormal({ seed: layerSeed++ }), next: () => layerSeed++ };
}

export function buildResidualModels(task: Task, labels: string[], architecture: ResidualArchitecture, ageScheme: AgeScheme, seed: number): ResidualModels {
  const { init, next } = seededInitializer(seed);
  const { input, features } = buildTrunk(architecture, init);
  const head = buildHead(task, features, labels, ageScheme, next());
  return {
    train: tf.model({ inputs: input, outputs: head.logits, name: `residual_${task}` }),
    inference: tf.model({ inputs: input, outputs: head.shipped.length === 1 ? head.shipped[0] : head.shipped }),
    outputs: head.outputs,
  };
}

export function buildMultitaskModels(labels: Record<Task, string[]>, architecture: ResidualArchitecture, ageScheme: AgeScheme, seed: number): MultitaskModels {
  const { init, next } = seededInitializer(seed);
  const { input, features } = buildTrunk(architecture, init);
  const heads = TASKS.map((task) => buildHead(task, features, labels[task], ageScheme, next()));
  const inference = {} as Record<Task, tf.LayersModel>;
  const outputs = {} as Record<Task, OutputSpec[]>;
  TASKS.forEach((task, i) => {
    const { shipped } = heads[i];
    inference[task] = tf.model({ inputs: input, outputs: shipped.length === 1 ? shipped[0] : shipped, name: `multitask_${task}` });
    outputs[task] = heads[i].outputs;
  });
  return { train: tf.model({ inputs: input, outputs: heads.map((h) => h.logits), name: 'multitask' }), inference, outputs };
}
