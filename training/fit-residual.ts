/**
 * The `residual` preset's training: a custom loop (tfjs's fit cannot augment per batch or schedule SGD's rate)
 * with augmentation, SGD with Nesterov momentum on a warm-up + cosine schedule, decoupled weight decay, label
 * smoothing, class-balanced loss weights for ethnicity, a Gaussian age distribution target, and early stopping
 * with the best checkpoint chosen on a validation split carved out of the training faces. The test split
 * is never seen here.
 */
import * as tf from '@tensorflow/tfjs';
import { ageGroupIndex, MIN_AGE, type Task } from '../contract/labels.ts';
import { SEED_INPUT } from '../contract/preprocess.ts';
import { augmentFace, drawTransform, type AugmentOptions } from './data/augment.ts';
import { scaleBytes } from '../contract/preprocess.ts';
import { seededRandom } from './data/split.ts';
import { ageTargetTable, augmentationSeed, carveValidation, classWeights, epochOrder, learningRateAt, SEED_OFFSET } from './recipe.ts';
import { AGE_BINS, buildResidualModels, type ResidualArchitecture } from './models/residual.ts';
import { formatEpochLine } from './report/progress.ts';
import { emptyHistory, recordEpoch, type FitArgs, type FitResult } from './fit.ts';

// test/residual.test.ts checks the schedule through this module, the preset that introduced it
export { learningRateAt } from './recipe.ts';

export const RESIDUAL_TEST_FRACTION = 0.2;

export interface ResidualConfig {
  architecture: ResidualArchitecture;
  batchSize: number;
  epochs: number;
  /** peak learning rate of SGD with Nesterov momentum */
  learningRate: number;
  warmupEpochs: number;
  momentum: number;
  /** decoupled weight decay on convolution and dense kernels, per unit of learning rate */
  weightDecay: number;
  /** classification tasks: label smoothing of the targets */
  labelSmoothing: number;
  /** age: standard deviation, in years, of the Gaussian around the true age that the model learns */
  ageSigma: number;
  /** ethnicity: weight each class's loss by (its frequency)^-balance; 0 = none, 1 = fully balanced */
  classBalance: number;
  /** fraction of the training faces held out to choose the best epoch and stop early */
  validationFraction: number;
  /** stop after this many epochs without a better validation score */
  patience: number;
  augment: AugmentOptions;
}

export const RESIDUAL_TRAINING: ResidualConfig = {
  architecture: { input: SEED_INPUT, widths: [16, 32, 64], blocksPerStage: 1, dropout: 0.2 },
  batchSize: 64,
  epochs: 30,
  learningRate: 0.05,
  warmupEpochs: 1,
  momentum: 0.9,
  weightDecay: 5e-4,
  labelSmoothing: 0.1,
  ageSigma: 2.5,
  classBalance: 0.5,
  validationFraction: 0.1,
  patience: 8,
  augment: { flip: 0.5, scale: 0.1, rotationDegrees: 10, shift: 0.08, brightness: 0.15, contrast: 0.2 },
};

export async function fitResidual(args: FitArgs, config: ResidualConfig = RESIDUAL_TRAINING): Promise<FitResult> {
  const { task, labels, dataset, targets, train, seed, ageScheme, log } = args;
  const epochs = args.epochs ?? config.epochs;
  const schedule = { ...config, epochs };
  const { fit, validation } = carveValidation(train, config.validationFraction, seed + SEED_OFFSET.validation);
  const models = buildResidualModels(task, labels, { ...config.architecture, input: dataset.spec }, ageScheme, seed);
  const { train: net, inference } = models;
  const optimizer = tf.train.momentum(config.learningRate, config.momentum, true);
  const decayed = net.trainableWeights.filter((w) => w.name.includes('kernel')).map((w) => w.read() as tf.Variable);
  const weights = task === 'ethnicity' ? classWeights(targets, fit, labels.length, config.classBalance) : undefined;
  const ageTargets = task === 'age' ? ageTargetTable(config.ageSigma) : undefined;
  // The age group of each bin of the age distribution, to score training batches by group.
  const groupOfAge = task === 'age' ? tf.tensor1d(Array.from({ length: AGE_BINS }, (_, bin) => ageGroupIndex(MIN_AGE + bin, ageScheme)), 'int32') : undefined;
  const size = dataset.spec.height * dataset.spec.width * dataset.spec.channels;
  const random = seededRandom(augmentationSeed(seed, 0));
  log(`${task}: residual net ${net.countParams().toLocaleString('en-US')} parameters; ${fit.length} train / ${validation.length} validation faces (the ${args.test.length} test faces are held out), batch ${config.batchSize}, up to ${epochs} epochs`);

  const lossOf = (logits: tf.Tensor, batch: Int32Array): tf.Scalar => {
    const classes = Array.from(batch, (i) => targets[i]);
    if (task === 'age') {
      const soft = new Float32Array(batch.length * AGE_BINS);
      batch.forEach((face, k) => soft.set(ageTargets![dataset.ages[face] - MIN_AGE], k * AGE_BINS));
      return tf.losses.softmaxCrossEntropy(tf.tensor2d(soft, [batch.length, AGE_BINS]), logits);
    }
    if (task === 'gender') return tf.losses.sigmoidCrossEntropy(tf.tensor2d(classes, [batch.length, 1]), logits, undefined, config.labelSmoothing);
    const onehot = tf.oneHot(tf.tensor1d(classes, 'int32'), labels.length);
    const faceWeights = weights === undefined ? undefined : tf.tensor1d(classes.map((c) => weights[c]));
    return tf.losses.softmaxCrossEntropy(onehot, logits, faceWeights, config.labelSmoothing);
  };

  const history = emptyHistory();
  let best = { score: -Infinity, epoch: 0, weights: [] as tf.Tensor[] };
  const batchInput = new Float32Array(config.batchSize * size);
  const trainStart = performance.now();
  let epochsRun = 0;
  for (let epoch = 0; epoch < epochs; epoch++) {
    const epochStart = performance.now();
    const order = epochOrder(fit.length, seed, epoch);
    const steps = Math.floor(fit.length / config.batchSize);
    let lossSum = 0;
    let correct = 0;
    for (let step = 0; step < steps; step++) {
      const batch = Int32Array.from(order.subarray(step * config.batchSize, (step + 1) * config.batchSize), (k) => fit[k]);
      batch.forEach((face, k) => augmentFace(dataset.pixels.subarray(face * size, (face + 1) * size), dataset.spec, drawTransform(config.augment, random), batchInput.subarray(k * size, (k + 1) * size)));
      const lr = learningRateAt(epoch + step / steps, schedule);
      optimizer.setLearningRate(lr);
      const [loss, hits] = tf.tidy(() => {
        let logits: tf.Tensor | undefined;
        const cost = optimizer.minimize(() => {
          // Kept past the gradient computation's own tidy, to score the batch below.
          logits = tf.keep(net.apply(tf.tensor4d(batchInput, [batch.length, dataset.spec.height, dataset.spec.width, dataset.spec.channels]), { training: true }) as tf.Tensor);
          return lossOf(logits, batch);
        }, true) as tf.Scalar;
        for (const w of decayed) w.assign(w.mul(1 - lr * config.weightDecay));
        const predicted = task === 'gender' ? logits!.greater(0).squeeze([1]).toInt() : task === 'age' ? groupOfAge!.gather(logits!.argMax(1)) : logits!.argMax(1);
        const hit = predicted.equal(tf.tensor1d(Array.from(batch, (i) => targets[i]), 'int32')).toFloat().sum();
        logits!.dispose();
        return [cost, hit];
      });
      lossSum += (await loss.data())[0];
      correct += (await hits.data())[0];
      tf.dispose([loss, hits]);
    }
    const seconds = (performance.now() - epochStart) / 1000;
    const scored = await scoreValidation(inference, models.outputs.length, task, dataset, targets, validation, size);
    const score = task === 'age' ? -scored.mae! : scored.accuracy;
    const entry = {
      epoch: epoch + 1,
      epochs,
      loss: lossSum / steps,
      // For age: the accuracy of the group of the most likely age, on augmented faces.
      accuracy: correct / (steps * config.batchSize),
      valLoss: scored.loss,
      valAccuracy: scored.accuracy,
      seconds,
      imagesPerSecond: (steps * config.batchSize) / seconds,
      valMae: scored.mae,
    };
    recordEpoch(history, entry);
    epochsRun = epoch + 1;
    const improved = score > best.score;
    if (improved) {
      tf.dispose(best.weights);
      best = { score, epoch: epoch + 1, weights: net.getWeights().map((w) => w.clone()) };
    }
    log(`${task}: ${formatEpochLine(entry)}${scored.mae === undefined ? '' : `  val_mae ${scored.mae.toFixed(2)}`}${improved ? '  (best)' : ''}`);
    if (epoch + 1 - best.epoch >= config.patience) {
      log(`${task}: stopping early: no better validation score for ${config.patience} epochs`);
      break;
    }
  }
  const trainSeconds = (performance.now() - trainStart) / 1000;
  net.setWeights(best.weights);
  tf.dispose(best.weights);
  log(`${task}: keeping epoch ${best.epoch}, the best on the validation split`);
  return {
    model: inference,
    outputs: models.outputs,
    history,
    epochs: epochsRun,
    parameters: net.countParams(),
    trainCount: fit.length,
    trainSeconds,
    keptEpoch: best.epoch,
    release: () => {
      optimizer.dispose();
      // MomentumOptimizer.dispose() forgets the learning-rate scalar its SGD base keeps (tfjs 4.22).
      (optimizer as unknown as { c?: tf.Tensor }).c?.dispose();
      groupOfAge?.dispose();
      // The training graph shares its layers with the inference model, which the caller disposes.
    },
  };
}

/** Validation accuracy (age: of the group), mean cross-entropy and, for age, the mean absolute error in years. */
async function scoreValidation(model: tf.LayersModel, outputCount: number, task: Task, dataset: FitArgs['dataset'], targets: Int32Array, indices: Int32Array, size: number): Promise<{ accuracy: number; loss: number; mae?: number }> {
  const batchSize = 256;
  const input = new Float32Array(batchSize * size);
  let correct = 0;
  let loss = 0;
  let absError = 0;
  for (let start = 0; start < indices.length; start += batchSize) {
    const count = Math.min(batchSize, indices.length - start);
    for (let k = 0; k < count; k++) {
      const face = indices[start + k];
      scaleBytes(dataset.pixels.subarray(face * size, (face + 1) * size), dataset.spec, input.subarray(k * size, (k + 1) * size));
    }
    const outs = tf.tidy(() => {
      const result = model.predict(tf.tensor4d(input.subarray(0, count * size), [count, dataset.spec.height, dataset.spec.width, dataset.spec.channels]));
      return Array.isArray(result) ? result : [result];
    });
    const probabilities = (await outs[0].data()) as Float32Array;
    const years = outputCount > 1 ? ((await outs[1].data()) as Float32Array) : undefined;
    tf.dispose(outs);
    const width = probabilities.length / count;
    for (let k = 0; k < count; k++) {
      const face = indices[start + k];
      const target = targets[face];
      const row = probabilities.subarray(k * width, (k + 1) * width);
      const p = width === 1 ? [1 - row[0], row[0]] : Array.from(row);
      let argmax = 0;
      for (let c = 1; c < p.length; c++) if (p[c] > p[argmax]) argmax = c;
      if (argmax === target) correct++;
      loss -= Math.log(Math.max(p[target], 1e-7));
      if (years !== undefined) absError += Math.abs(years[k] - dataset.ages[face]);
    }
  }
  const n = Math.max(1, indices.length);
  return { accuracy: correct / n, loss: loss / n, mae: task === 'age' ? absError / n : undefined };
}
