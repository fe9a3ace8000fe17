/**
 * One replica of the multitask preset's data-parallel training (started by fit-multitask.ts, one per core).
 *
 * Every replica builds the same network from the same seed and walks the same batches; each computes the
 * gradients of its share of a batch, writes them to shared memory, waits for the others, and applies the mean.
 * Summed in the same order everywhere, the mean is the same in every replica, so the weights stay identical
 * without ever being sent. Only batch-norm running statistics differ during an epoch (each replica's are from
 * its own faces); after it, every replica writes the same precise statistics, averaged over the replicas (with
 * `batchNormFaces` 0 they stay apart, and replica 0's ship). Validation is split the same way, and every replica
 * reaches the same choices from the shared sums. Replica 0 keeps the best epoch's checkpoint (one for all three
 * tasks, so that the shipped models share their trunk exactly) and reports to the parent.
 */
import { createHash } from 'node:crypto';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs';
import { ageGroupIndex, MIN_AGE, TASKS, type AgeScheme, type Task } from '../contract/labels.ts';
import { scaleBytes, type InputSpec } from '../contract/preprocess.ts';
import { selectBackend, type BackendName } from '../node-shared/tfjs/select.ts';
import { augmentFace, drawTransform } from './data/augment.ts';
import { seededRandom, shuffledIndices } from './data/split.ts';
import { ageTargetTable, classWeights, learningRateAt } from './fit-residual.ts';
import type { MultitaskConfig } from './fit-multitask.ts';
import { AGE_BINS, buildMultitaskModels } from './models/residual.ts';

/** What `workerData` holds in a replica; the role keeps this module inert when imported anywhere else. */
export interface ReplicaData {
  role: 'multitask-replica';
  replica: number;
  replicas: number;
  config: MultitaskConfig;
  epochs: number;
  seed: number;
  ageScheme: AgeScheme;
  labels: Record<Task, string[]>;
  spec: InputSpec;
  backend: BackendName;
  /** dataset bytes, ages and per-task targets, shared by every replica */
  pixels: SharedArrayBuffer;
  ages: SharedArrayBuffer;
  targets: Record<Task, SharedArrayBuffer>;
  /** Int32 face indices */
  fit: SharedArrayBuffer;
  validation: SharedArrayBuffer;
  /** Float32: 2 (alternating steps) x replicas x parameter count */
  gradients: SharedArrayBuffer;
  /** Float64: replicas x STAT_COUNT per-epoch sums */
  stats: SharedArrayBuffer;
  /** Float64: replicas x batchStatisticsSize(net), each replica's precise batch-normalization statistics */
  batchStats: SharedArrayBuffer;
  /** Int32: [arrived, generation, aborted] */
  sync: SharedArrayBuffer;
}

/** Per task and epoch, what the parent logs and records. */
export interface TaskEpoch {
  loss: number;
  accuracy: number;
  valLoss: number;
  valAccuracy: number;
  /** age only: validation mean absolute error in years */
  valMae?: number;
}

export type ReplicaMessage =
  /** replica 0, as an epoch's training starts (step 0) and after each step: how far it has got */
  | { type: 'step'; epoch: number; step: number; steps: number }
  /** `improved`: the epoch is the best so far on the validation split, by `validationScore` */
  | { type: 'epoch'; epoch: number; seconds: number; imagesPerSecond: number; tasks: Record<Task, TaskEpoch>; improved: boolean }
  | { type: 'stopped'; epoch: number; patience: number }
  /** every replica, at the end: a digest of its trainable weights, which must be the same in all */
  | { type: 'digest'; replica: number; digest: string }
  | {
      type: 'done';
      epochsRun: number;
      trainSeconds: number;
      /** the epoch kept and the whole network's weights at that epoch, in getWeights() order */
      best: { epoch: number; weights: Float32Array[] };
    };

/** Per-replica sums: for each task (TASKS order) train loss, train hits, validation loss, validation hits; then counts and the age error. */
export const STAT_COUNT = 16;
/** Int32 slots of `sync`: arrived, generation, aborted. */
export const SYNC_SLOTS = 3;
const TRAIN_COUNT = 12;
const VALIDATION_COUNT = 13;
const AGE_ABS_ERROR = 14;

/** Waits until every replica has arrived; throws if the parent aborted the run (another replica failed). */
function arriveAndWait(sync: Int32Array, parties: number): void {
  const generation = Atomics.load(sync, 1);
  if (Atomics.add(sync, 0, 1) === parties - 1) {
    Atomics.store(sync, 0, 0);
    Atomics.add(sync, 1, 1);
    Atomics.notify(sync, 1);
    return;
  }
  while (Atomics.load(sync, 1) === generation) {
    Atomics.wait(sync, 1, generation, 1000);
    if (Atomics.load(sync, 2) !== 0) throw new Error('training aborted: another replica failed');
  }
}

async function runReplica(data: ReplicaData, post: (message: ReplicaMessage) => void): Promise<void> {
  const { config, spec, replica, replicas, seed, epochs } = data;
  await selectBackend(data.backend, () => {});
  const pixels = new Uint8Array(data.pixels);
  const ages = new Uint8Array(data.ages);
  const targets = Object.fromEntries(TASKS.map((task) => [task, new Int32Array(data.targets[task])])) as Record<Task, Int32Array>;
  const fit = new Int32Array(data.fit);
  const validation = new Int32Array(data.validation);
  const sync = new Int32Array(data.sync);
  const stats = new Float64Array(data.stats);
  const size = spec.height * spec.width * spec.channels;

  const models = buildMultitaskModels(data.labels, { ...config.architecture, input: spec }, data.ageScheme, seed);
  const net = models.train;
  const variables = net.trainableWeights.map((w) => w.read() as tf.Variable);
  const offsets: number[] = [];
  let parameterCount = 0;
  for (const v of variables) {
    offsets.push(parameterCount);
    parameterCount += v.size;
  }
  const gradients = new Float32Array(data.gradients);
  // the mean of the replicas' gradients, rebuilt at every step in one reused buffer
  const meanGradient = new Float32Array(parameterCount);
  if (gradients.length !== 2 * replicas * parameterCount) throw new Error(`gradient buffer holds ${gradients.length} floats; expected ${2 * replicas * parameterCount}`);
  const decayed = variables.filter((v) => v.name.includes('kernel'));
  const optimizer = tf.train.momentum(config.learningRate, config.momentum, true);
  const schedule = { ...config, epochs };

  const ethnicityWeights = classWeights(targets.ethnicity, fit, data.labels.ethnicity.length, config.classBalance);
  const ageTargets = ageTargetTable(config.ageSigma);
  const groupCount = data.labels.age.length;
  const groupOfBin = Array.from({ length: AGE_BINS }, (_, bin) => ageGroupIndex(MIN_AGE + bin, data.ageScheme));
  // distribution -> group probabilities and -> years, as the exported age model computes them
  const groupMatrix = tf.tensor2d(groupOfBin.flatMap((g) => Array.from({ length: groupCount }, (_, k) => (k === g ? 1 : 0))), [AGE_BINS, groupCount]);
  const yearsMatrix = tf.tensor2d(groupOfBin.map((_, bin) => MIN_AGE + bin), [AGE_BINS, 1]);
  const random = seededRandom(seed + 202 + 7919 * replica);
  const globalBatch = config.batchSize;
  const share = Math.floor(globalBatch / replicas);
  const batchInput = new Float32Array(share * size);
  const mine = new Int32Array(share);
  const best = { score: -Infinity, epoch: 0, weights: [] as tf.Tensor[] };
  const normalizers = batchNormalizers(net);
  // the faces whose statistics replace the running ones after every epoch: a fixed draw, split between replicas
  // (at least one each, so that no replica averages an empty batch)
  const statisticsCount = config.batchNormFaces > 0 ? Math.min(fit.length, Math.max(replicas, config.batchNormFaces)) : 0;
  const statisticsFaces = Int32Array.from(shuffledIndices(fit.length, seed + 303).subarray(0, statisticsCount), (i) => fit[i]).filter((_, i) => i % replicas === replica);
  const batchStats = new Float64Array(data.batchStats);
  const statisticsSize = batchStatisticsSize(net);
  if (batchStats.length !== replicas * statisticsSize) throw new Error(`batch statistics buffer holds ${batchStats.length} values; expected ${replicas * statisticsSize}`);
  const own = stats.subarray(replica * STAT_COUNT, (replica + 1) * STAT_COUNT);

  /** Each task's loss on `batch`, whose classes per task (TASKS order) are `truth`. */
  const lossOf = (logits: tf.Tensor[], batch: Int32Array, truth: tf.Tensor1D[]): tf.Scalar[] => {
    const count = batch.length;
    const soft = new Float32Array(count * AGE_BINS);
    batch.forEach((face, k) => soft.set(ageTargets[ages[face] - MIN_AGE], k * AGE_BINS));
    const ethnicity = Array.from(batch, (face) => targets.ethnicity[face]);
    return [
      tf.losses.softmaxCrossEntropy(tf.tensor2d(soft, [count, AGE_BINS]), logits[0]).add(ageGroupCrossEntropy(logits[0], groupMatrix, truth[0]).mul(config.ageGroupLoss)),
      tf.losses.softmaxCrossEntropy(tf.oneHot(truth[1], data.labels.ethnicity.length), logits[1], tf.tensor1d(ethnicity.map((c) => ethnicityWeights[c])), config.labelSmoothing),
      tf.losses.sigmoidCrossEntropy(truth[2].toFloat().reshape([count, 1]), logits[2], undefined, config.labelSmoothing),
    ];
  };

  /** Predicted class of each face for each task, from the heads' logits. */
  const predictions = (logits: tf.Tensor[]): tf.Tensor[] => [
    tf.softmax(logits[0]).matMul(groupMatrix).argMax(1),
    logits[1].argMax(1),
    logits[2].greater(0).squeeze([1]).toInt(),
  ];

  const trainStart = performance.now();
  let epochsRun = 0;
  const steps = Math.floor(fit.length / globalBatch);
  for (let epoch = 0; epoch < epochs; epoch++) {
    const epochStart = performance.now();
    own.fill(0);
    const order = shuffledIndices(fit.length, seed + 1000 + epoch);
    if (replica === 0) post({ type: 'step', epoch: epoch + 1, step: 0, steps });
    for (let step = 0; step < steps; step++) {
      for (let k = 0; k < share; k++) mine[k] = fit[order[step * globalBatch + replica * share + k]];
      mine.forEach((face, k) => augmentFace(pixels.subarray(face * size, (face + 1) * size), spec, drawTransform(config.augment, random), batchInput.subarray(k * size, (k + 1) * size)));
      const lr = learningRateAt(epoch + step / steps, schedule);
      const slot = (step % 2) * replicas;
      const taskLosses: tf.Scalar[] = [];
      const hits: tf.Tensor[] = [];
      const { grads, value } = tf.tidy(() => {
        const x = tf.tensor4d(batchInput, [share, spec.height, spec.width, spec.channels]);
        return tf.variableGrads(() => {
          const logits = net.apply(x, { training: true }) as tf.Tensor[];
          const truth = TASKS.map((task) => tf.tensor1d(Array.from(mine, (face) => targets[task][face]), 'int32'));
          const losses = lossOf(logits, mine, truth);
          taskLosses.push(...losses.map((l) => tf.keep(l)));
          hits.push(...predictions(logits).map((p, t) => tf.keep(p.equal(truth[t]).sum())));
          return tf.addN(losses.map((l, t) => l.mul(config.lossWeights[TASKS[t]]))) as tf.Scalar;
        }, variables);
      });
      variables.forEach((v, i) => gradients.set(grads[v.name].dataSync() as Float32Array, (slot + replica) * parameterCount + offsets[i]));
      tf.dispose([value, ...Object.values(grads)]);
      TASKS.forEach((_, t) => {
        own[4 * t] += taskLosses[t].dataSync()[0] * share;
        own[4 * t + 1] += hits[t].dataSync()[0];
      });
      own[TRAIN_COUNT] += share;
      tf.dispose([...taskLosses, ...hits]);

      arriveAndWait(sync, replicas);
      optimizer.setLearningRate(lr);
      const mean = variables.map((v, i) => {
        const averaged = meanGradient.subarray(offsets[i], offsets[i] + v.size).fill(0);
        for (let r = 0; r < replicas; r++) {
          const from = (slot + r) * parameterCount + offsets[i];
          for (let j = 0; j < averaged.length; j++) averaged[j] += gradients[from + j];
        }
        for (let j = 0; j < averaged.length; j++) averaged[j] /= replicas;
        return { name: v.name, tensor: tf.tensor(averaged, v.shape) };
      });
      optimizer.applyGradients(mean);
      tf.dispose(mean.map((g) => g.tensor));
      tf.tidy(() => {
        for (const w of decayed) w.assign(w.mul(1 - lr * config.weightDecay));
      });
      if (replica === 0) post({ type: 'step', epoch: epoch + 1, step: step + 1, steps });
    }
    if (statisticsCount > 0) {
      batchStats.set(batchStatistics(net, normalizers, statisticsFaces, pixels, spec), replica * statisticsSize);
      arriveAndWait(sync, replicas);
      setRunningStatistics(normalizers, meanOfReplicas(batchStats, replicas, statisticsSize));
    }
    const seconds = (performance.now() - epochStart) / 1000;

    // Validation, split between the replicas; every replica reads the same totals and decides alike.
    // With flipTest, each face is scored as the shipped models answer: the mean over it and its mirror image.
    await scoreShare(net, validation, replica, replicas, pixels, spec, size, config.architecture.flipTest === true, (views, faces) => {
      const count = faces.length;
      const [ageGroups, ageYears, ethnicity, gender] = tf.tidy(() => {
        const mean = (f: (logits: tf.Tensor[]) => tf.Tensor) => tf.addN(views.map(f)).div(views.length);
        const distribution = mean((logits) => tf.softmax(logits[0]));
        return [distribution.matMul(groupMatrix), distribution.matMul(yearsMatrix), mean((logits) => tf.softmax(logits[1])), mean((logits) => tf.sigmoid(logits[2]))];
      });
      const probabilities = [ageGroups.dataSync(), ethnicity.dataSync(), gender.dataSync()];
      const years = ageYears.dataSync();
      tf.dispose([ageGroups, ageYears, ethnicity, gender]);
      for (let k = 0; k < count; k++) {
        const face = faces[k];
        TASKS.forEach((task, t) => {
          const target = targets[task][face];
          const width = probabilities[t].length / count;
          const row = Array.from(probabilities[t].subarray(k * width, (k + 1) * width));
          const p = width === 1 ? [1 - row[0], row[0]] : row;
          const argmax = p.indexOf(Math.max(...p));
          own[4 * t + 2] -= Math.log(Math.max(p[target], 1e-7));
          if (argmax === target) own[4 * t + 3]++;
        });
        own[AGE_ABS_ERROR] += Math.abs(years[k] - ages[face]);
      }
      own[VALIDATION_COUNT] += count;
    });
    arriveAndWait(sync, replicas);
    const total = new Float64Array(STAT_COUNT);
    for (let r = 0; r < replicas; r++) for (let i = 0; i < STAT_COUNT; i++) total[i] += stats[r * STAT_COUNT + i];
    // Nobody may clear its sums for the next epoch before everyone has read these.
    arriveAndWait(sync, replicas);

    const mae = total[AGE_ABS_ERROR] / total[VALIDATION_COUNT];
    const tasks = {} as Record<Task, TaskEpoch>;
    TASKS.forEach((task, t) => {
      const valAccuracy = total[4 * t + 3] / total[VALIDATION_COUNT];
      tasks[task] = {
        loss: total[4 * t] / total[TRAIN_COUNT],
        accuracy: total[4 * t + 1] / total[TRAIN_COUNT],
        valLoss: total[4 * t + 2] / total[VALIDATION_COUNT],
        valAccuracy,
        valMae: task === 'age' ? mae : undefined,
      };
    });
    const score = validationScore(tasks);
    const improved = score > best.score;
    if (improved) {
      if (replica === 0) {
        tf.dispose(best.weights);
        best.weights = net.getWeights().map((w) => w.clone());
      }
      best.score = score;
      best.epoch = epoch + 1;
    }
    epochsRun = epoch + 1;
    if (replica === 0) post({ type: 'epoch', epoch: epoch + 1, seconds, imagesPerSecond: total[TRAIN_COUNT] / seconds, tasks, improved });
    if (epoch + 1 - best.epoch >= config.patience) {
      if (replica === 0) post({ type: 'stopped', epoch: epoch + 1, patience: config.patience });
      break;
    }
  }
  const trainSeconds = (performance.now() - trainStart) / 1000;
  const hash = createHash('sha256');
  for (const v of variables) hash.update(v.dataSync() as Float32Array);
  post({ type: 'digest', replica, digest: hash.digest('hex') });
  if (replica === 0) {
    post({ type: 'done', epochsRun, trainSeconds, best: { epoch: best.epoch, weights: best.weights.map((w) => w.dataSync() as Float32Array) } });
  }
  tf.dispose([groupMatrix, yearsMatrix, ...best.weights]);
  optimizer.dispose();
}

/**
 * The mean cross-entropy of each face's true age group under the group probabilities the age head's
 * distribution sums to (`groupMatrix`: bins x groups, 0/1), as the shipped model derives them.
 */
export function ageGroupCrossEntropy(logits: tf.Tensor, groupMatrix: tf.Tensor2D, groups: tf.Tensor1D): tf.Scalar {
  return tf.tidy(() => {
    const probabilities = tf.softmax(logits).matMul(groupMatrix);
    const truth = tf.oneHot(groups, groupMatrix.shape[1]);
    return tf.log(probabilities.mul(truth).sum(1).maximum(1e-7)).mean().neg() as tf.Scalar;
  });
}

/**
 * What chooses the epoch that ships: the mean of the three validation accuracies (age group, ethnicity,
 * gender). One epoch for all tasks keeps the three models' trunks identical, so a runtime can compute it once.
 */
export function validationScore(tasks: Record<Task, Pick<TaskEpoch, 'valAccuracy'>>): number {
  return TASKS.reduce((sum, task) => sum + tasks[task].valAccuracy, 0) / TASKS.length;
}

/**
 * Runs `score` on this replica's share of `indices` (every replicas-th face), in batches, without augmentation:
 * on the network's logits for the faces, and with `mirror` also for their mirror images.
 */
async function scoreShare(net: tf.LayersModel, indices: Int32Array, replica: number, replicas: number, pixels: Uint8Array, spec: InputSpec, size: number, mirror: boolean, score: (views: tf.Tensor[][], faces: Int32Array) => void): Promise<void> {
  const faces = indices.filter((_, i) => i % replicas === replica);
  const batchSize = 128;
  const input = new Float32Array(batchSize * size);
  for (let start = 0; start < faces.length; start += batchSize) {
    const chunk = faces.subarray(start, Math.min(faces.length, start + batchSize));
    chunk.forEach((face, k) => scaleBytes(pixels.subarray(face * size, (face + 1) * size), spec, input.subarray(k * size, (k + 1) * size)));
    const views = tf.tidy(() => {
      const x = tf.tensor4d(input.subarray(0, chunk.length * size), [chunk.length, spec.height, spec.width, spec.channels]);
      const images = mirror ? [x, tf.reverse(x, 2)] : [x];
      return images.map((image) => net.apply(image, { training: false }) as tf.Tensor[]);
    });
    score(views, chunk);
    tf.dispose(views);
  }
}

/** The network's batch-normalization layers, in order. */
export function batchNormalizers(net: tf.LayersModel): tf.layers.Layer[] {
  return net.layers.filter((layer) => layer.getClassName() === 'BatchNormalization');
}

/** How many values `batchStatistics` gives for `net`: a mean and a variance per channel of every normalizer. */
export function batchStatisticsSize(net: tf.LayersModel): number {
  return batchNormalizers(net).reduce((n, layer) => n + 2 * runningVariables(layer).mean.read().size, 0);
}

function runningVariables(layer: tf.layers.Layer): { mean: tf.LayerVariable; variance: tf.LayerVariable } {
  const find = (suffix: string) => {
    const found = layer.weights.find((w) => w.name.endsWith(suffix));
    if (found === undefined) throw new Error(`batch-normalization layer ${layer.name} has no ${suffix} weight`);
    return found;
  };
  return { mean: find('moving_mean'), variance: find('moving_variance') };
}

const STATISTICS_BATCH = 128;

/**
 * Precise batch-normalization statistics ("precise BN"): for every normalizer, the mean over `faces`
 * (unaugmented, in batches of 128) of the batch mean and batch variance of its input, in training mode, so that
 * every layer upstream normalizes with its batch's statistics as in training (whose batches are a replica's
 * share, 64 faces on two cores; the larger batch only steadies the estimate). The running averages they replace
 * lean on the last few hundred augmented faces of one replica, which made the validation score jump from epoch
 * to epoch even at a tiny learning rate.
 * Returns, per normalizer in order, its channel means and then its channel variances.
 */
export function batchStatistics(net: tf.LayersModel, normalizers: tf.layers.Layer[], faces: Int32Array, pixels: Uint8Array, spec: InputSpec): Float64Array {
  // node 0 of each normalizer is its call in the training graph (the shipped models call the trunk again)
  const probe = tf.model({ inputs: net.inputs, outputs: normalizers.map((layer) => layer.getInputAt(0) as tf.SymbolicTensor) });
  const size = spec.height * spec.width * spec.channels;
  const sums = new Float64Array(batchStatisticsSize(net));
  const input = new Float32Array(STATISTICS_BATCH * size);
  // whole batches only (a small last batch would skew the variances), but at least one
  const batches = Math.max(1, Math.floor(faces.length / STATISTICS_BATCH));
  for (let b = 0; b < batches; b++) {
    const chunk = faces.subarray(b * STATISTICS_BATCH, Math.min(faces.length, (b + 1) * STATISTICS_BATCH));
    chunk.forEach((face, k) => scaleBytes(pixels.subarray(face * size, (face + 1) * size), spec, input.subarray(k * size, (k + 1) * size)));
    const moments = tf.tidy(() => {
      // training mode, so each normalizer sees what it sees in training (upstream layers use batch statistics)
      const inputs = probe.apply(tf.tensor4d(input.subarray(0, chunk.length * size), [chunk.length, spec.height, spec.width, spec.channels]), { training: true }) as tf.Tensor | tf.Tensor[];
      return (Array.isArray(inputs) ? inputs : [inputs]).flatMap((y) => {
        const { mean, variance } = tf.moments(y, [0, 1, 2]);
        return [mean, variance];
      });
    });
    let offset = 0;
    for (const m of moments) {
      const values = m.dataSync();
      for (let i = 0; i < values.length; i++) sums[offset + i] += values[i];
      offset += values.length;
    }
    tf.dispose(moments);
  }
  return sums.map((v) => v / batches);
}

/** The mean over replicas of `size` values each, summed in replica order so that every replica gets the same bits. */
function meanOfReplicas(values: Float64Array, replicas: number, size: number): Float64Array {
  const mean = new Float64Array(size);
  for (let r = 0; r < replicas; r++) for (let i = 0; i < size; i++) mean[i] += values[r * size + i];
  return mean.map((v) => v / replicas);
}

/** Writes statistics laid out as `batchStatistics` gives them into the normalizers' running mean and variance. */
export function setRunningStatistics(normalizers: tf.layers.Layer[], statistics: Float64Array): void {
  let offset = 0;
  for (const layer of normalizers) {
    const { mean, variance } = runningVariables(layer);
    const channels = mean.read().size;
    for (const variable of [mean, variance]) {
      const value = tf.tensor1d(Float32Array.from(statistics.subarray(offset, offset + channels)));
      variable.write(value);
      value.dispose();
      offset += channels;
    }
  }
}

const data = workerData as ReplicaData | null | undefined;
if (!isMainThread && parentPort !== null && data?.role === 'multitask-replica') {
  const port = parentPort;
  runReplica(data, (message) => port.postMessage(message)).catch((error: unknown) => {
    // Wake the other replicas so that they fail too instead of waiting forever.
    const sync = new Int32Array(data.sync);
    Atomics.store(sync, 2, 1);
    Atomics.notify(sync, 1);
    throw error;
  });
}
