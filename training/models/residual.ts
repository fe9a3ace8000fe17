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
import { ageGroupIndex, MAX_AGE, MIN_AGE, TASKS, type AgeScheme, type Task } from '../../contract/labels.ts';
import type { OutputSpec } from '../../contract/metadata.ts';
import type { InputSpec } from '../../contract/preprocess.ts';
import { HorizontalFlip } from '../../node-shared/tfjs/flip-layer.ts';

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
  /**
   * The shipped models answer with the mean of the face and its mirror image (test-time flip): the same layers
   * run on both, so the weights are unchanged and the compute doubles. Training never sees it; validation,
   * which chooses the epoch that ships, scores the faces the same way.
   */
  flipTest?: boolean;
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

type Block = (x: Symbolic) => Symbolic;

function conv(filters: number, kernelSize: number, strides: number, init: Initializer): tf.layers.Layer {
  return tf.layers.conv2d({ filters, kernelSize, strides, padding: 'same', useBias: false, kernelInitializer: init() });
}

function applyAll(layers: tf.layers.Layer[], x: Symbolic): Symbolic {
  return layers.reduce((y, layer) => layer.apply(y) as Symbolic, x);
}

/** A residual block's layers, made once and applied to any input of `inChannels` channels. */
function residualBlock(inChannels: number, filters: number, strides: number, init: Initializer): Block {
  const main = [conv(filters, 3, strides, init), tf.layers.batchNormalization({ momentum: 0.9 }), tf.layers.reLU(), conv(filters, 3, 1, init), tf.layers.batchNormalization({ momentum: 0.9 })];
  const projection = strides !== 1 || inChannels !== filters ? [conv(filters, 1, strides, init), tf.layers.batchNormalization({ momentum: 0.9 })] : [];
  const add = tf.layers.add();
  const relu = tf.layers.reLU();
  return (x) => relu.apply(add.apply([applyAll(main, x), applyAll(projection, x)]) as Symbolic) as Symbolic;
}

/** A fixed linear map (no bias, not trained): used to sum the age distribution. */
function fixedDense(name: string, kernel: number[][]): tf.layers.Layer {
  const layer = tf.layers.dense({ name, units: kernel[0].length, useBias: false, trainable: false });
  // Built and set here rather than through the `weights` option, whose tensor the layer would hold forever;
  // built by an eager call, which names its kernel `${name}/kernel` as a symbolic call does (build() alone
  // names it `kernel`, and a saved model with two such weights does not load).
  tf.tidy(() => {
    layer.apply(tf.zeros([1, kernel.length]));
  });
  const value = tf.tensor2d(kernel);
  layer.setWeights([value]);
  value.dispose();
  return layer;
}

/**
 * The trunk as a function of its input, so that the shipped models can apply the same layers to a face and to
 * its mirror image. `features` is the pooled (and dropped-out, in training) output.
 */
function buildTrunk(architecture: ResidualArchitecture, init: Initializer): (input: Symbolic) => Symbolic {
  const stem = [conv(architecture.stemWidth ?? architecture.widths[0], 3, 1, init), tf.layers.batchNormalization({ momentum: 0.9 }), tf.layers.reLU()];
  const blocks: Block[] = [];
  let channels = architecture.stemWidth ?? architecture.widths[0];
  architecture.widths.forEach((filters, stage) => {
    const stride = architecture.strides?.[stage] ?? (stage > 0 ? 2 : 1);
    for (let b = 0; b < architecture.blocksPerStage; b++) {
      blocks.push(residualBlock(channels, filters, b === 0 ? stride : 1, init));
      channels = filters;
    }
  });
  const pool = tf.layers.globalAveragePooling2d({});
  const dropout = architecture.dropout > 0 ? tf.layers.dropout({ rate: architecture.dropout }) : undefined;
  return (input) => {
    let x = applyAll(stem, input);
    for (const block of blocks) x = block(x);
    x = pool.apply(x) as Symbolic;
    return dropout === undefined ? x : (dropout.apply(x) as Symbolic);
  };
}

interface Head {
  /** what training differentiates */
  logits: (features: Symbolic) => Symbolic;
  /** what ships, in the order of `outputs`: the same layers, plus probabilities (and years) */
  shipped: (features: Symbolic) => Symbolic[];
  outputs: OutputSpec[];
}

/** One task's head: logits for training, probabilities (and years) to ship. */
function buildHead(task: Task, labels: string[], ageScheme: AgeScheme, seed: number): Head {
  const units = task === 'age' ? AGE_BINS : task === 'gender' ? 1 : labels.length;
  const dense = tf.layers.dense({ units, name: `${task}_logits`, kernelInitializer: tf.initializers.glorotUniform({ seed }) });
  // One call per input: a layer called twice on the same features would count twice in tfjs' reference count
  // and outlive the model that holds it.
  const calls = new Map<Symbolic, Symbolic>();
  const logits = (features: Symbolic) => {
    if (!calls.has(features)) calls.set(features, dense.apply(features) as Symbolic);
    return calls.get(features) as Symbolic;
  };
  if (task === 'gender') {
    const sigmoid = tf.layers.activation({ activation: 'sigmoid', name: 'gender' });
    return { logits, shipped: (f) => [sigmoid.apply(logits(f)) as Symbolic], outputs: [{ name: 'gender', kind: 'sigmoid', labels }] };
  }
  if (task === 'ethnicity') {
    const softmax = tf.layers.activation({ activation: 'softmax', name: 'ethnicity' });
    return { logits, shipped: (f) => [softmax.apply(logits(f)) as Symbolic], outputs: [{ name: 'ethnicity', kind: 'probabilities', labels }] };
  }
  const softmax = tf.layers.activation({ activation: 'softmax', name: 'age_distribution' });
  const ages = Array.from({ length: AGE_BINS }, (_, i) => MIN_AGE + i);
  const groups = fixedDense('age_group', ages.map((age) => labels.map((_, g) => (ageGroupIndex(age, ageScheme) === g ? 1 : 0))));
  const years = fixedDense('age_years', ages.map((age) => [age]));
  return {
    logits,
    shipped: (f) => {
      const distribution = softmax.apply(logits(f)) as Symbolic;
      return [groups.apply(distribution) as Symbolic, years.apply(distribution) as Symbolic];
    },
    outputs: [
      { name: 'age_group', kind: 'probabilities', labels },
      { name: 'age_years', kind: 'years' },
    ],
  };
}

/**
 * The shipped outputs for `input`: the head on the trunk's features, or with `flipTest` the mean of that and
 * of the same layers run on the mirror image (every shipped output is a probability or a linear map of one,
 * so the mean is still one).
 */
function shippedOutputs(input: Symbolic, features: Symbolic, trunk: (x: Symbolic) => Symbolic, head: Head, architecture: ResidualArchitecture, name: string): Symbolic | Symbolic[] {
  const direct = head.shipped(features);
  let outputs = direct;
  if (architecture.flipTest === true) {
    const mirrored = head.shipped(trunk(new HorizontalFlip({ name: `${name}_mirror` }).apply(input) as Symbolic));
    outputs = direct.map((y, i) => tf.layers.average({ name: `${head.outputs[i].name}_flip_mean` }).apply([y, mirrored[i]]) as Symbolic);
  }
  return outputs.length === 1 ? outputs[0] : outputs;
}

function seededInitializer(seed: number): { init: Initializer; next: () => number } {
  let layerSeed = seed;
  return { init: () => tf.initializers.heNormal({ seed: layerSeed++ }), next: () => layerSeed++ };
}

function imageInput(architecture: ResidualArchitecture): Symbolic {
  const { height, width, channels } = architecture.input;
  return tf.input({ shape: [height, width, channels], name: 'image' });
}

export function buildResidualModels(task: Task, labels: string[], architecture: ResidualArchitecture, ageScheme: AgeScheme, seed: number): ResidualModels {
  const { init, next } = seededInitializer(seed);
  const trunk = buildTrunk(architecture, init);
  const head = buildHead(task, labels, ageScheme, next());
  const input = imageInput(architecture);
  const features = trunk(input);
  return {
    train: tf.model({ inputs: input, outputs: head.logits(features), name: `residual_${task}` }),
    inference: tf.model({ inputs: input, outputs: shippedOutputs(input, features, trunk, head, architecture, task) }),
    outputs: head.outputs,
  };
}

export function buildMultitaskModels(labels: Record<Task, string[]>, architecture: ResidualArchitecture, ageScheme: AgeScheme, seed: number): MultitaskModels {
  const { init, next } = seededInitializer(seed);
  const trunk = buildTrunk(architecture, init);
  const heads = TASKS.map((task) => buildHead(task, labels[task], ageScheme, next()));
  const input = imageInput(architecture);
  const features = trunk(input);
  const train = tf.model({ inputs: input, outputs: heads.map((head) => head.logits(features)), name: 'multitask' });
  const inference = {} as Record<Task, tf.LayersModel>;
  const outputs = {} as Record<Task, OutputSpec[]>;
  TASKS.forEach((task, i) => {
    inference[task] = tf.model({ inputs: input, outputs: shippedOutputs(input, features, trunk, heads[i], architecture, task), name: `multitask_${task}` });
    outputs[task] = heads[i].outputs;
  });
  return { train, inference, outputs };
}
