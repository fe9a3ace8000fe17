/**
 * One replica of the multitask preset's data-parallel training (started by fit-multitask.ts, one per core).
 *
 * Every replica builds the same network from the same seed and walks the same batches; each computes the
 * gradients of its share of a batch, writes them to shared memory, waits for the others, and applies the mean.
 * Summed in the same order everywhere, the mean is the same in every replica, so the weights stay identical
 * without ever being sent. Only batch-norm running statistics differ during an epoch (each replica's are from
 * its own faces); after it, every replica writes the same precise statistics, averaged over the replicas (with
 * `batchNormFaces` 0 they stay apart, and replica 0's ship). Validation is split the same way, and every replica
 * reaches the same choices from the shared sums. Replica 0 keeps the best epoch's weights (one epoch for all three
 * tasks, so that the shipped models share their trunk exactly) and reports to the parent. Where the run keeps a
 * checkpoint, every replica saves its own state after each epoch and a resumed replica starts from it.
 */
import { createHash } from 'node:crypto';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs';
import { ageGroupIndex, MIN_AGE, TASKS, type AgeScheme, type Task } from '../contract/labels.ts';
import { scaleBytes, type InputSpec } from '../contract/preprocess.ts';
import { selectBackend, type BackendName } from '../node-shared/tfjs/select.ts';
import { augmentFace, drawTransform } from './data/augment.ts';
import { shuffledIndices } from './data/split.ts';
import { bestWeightsFile, readFloats, replicaStateFile, writeFloats } from './checkpoint.ts';
import { ageTarget, ageTargetTable, augmentationSeed, betaDraw, classWeights, countedRandom, emaDecayAt, epochOrder, learningRateAt, SEED_OFFSET, updateAverage, type CountedRandom } from './recipe.ts';
import type { MultitaskConfig } from './fit-multitask.ts';
import type { TeacherTargets } from './distill.ts';
import { AGE_BINS, buildMultitaskModels } from './models/residual.ts';

/** Where a replica keeps its checkpoint, and the state it resumes from. */
export interface ReplicaCheckpoint {
  folder: string;
  resume?: {
    epochsDone: number;
    stopped: boolean;
    best: { epoch: number; score: number | null };
    /** this replica's augmentation draws so far */
    draws: number;
    optimizerSteps: number;
  };
}

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
  /** with `config.distill`: the teachers' answers per face, class probabilities softened at its temperature (Float32) */
  teachers?: Record<keyof TeacherTargets, SharedArrayBuffer>;
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
  /** absent: no checkpoint is written */
  checkpoint?: ReplicaCheckpoint;
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
  /**
   * replica 0, after each epoch. `improved`: the epoch is the best so far on the validation split, by
   * `validationScore`; `stopping`: early stopping ends the run here; `trainSeconds`: this session's so far.
   */
  | { type: 'epoch'; epoch: number; seconds: number; imagesPerSecond: number; tasks: Record<Task, TaskEpoch>; improved: boolean; score: number; stopping: boolean; trainSeconds: number }
  /** every replica, once its checkpoint files for `epoch` are written */
  | { type: 'checkpointed'; replica: number; epoch: number; draws: number; optimizerSteps: number }
  /** every replica, at the end: a digest of its trainable weights, which must be the same in all */
  | { type: 'digest'; replica: number; digest: string }
  | {
      type: 'done';
      /** epochs completed, those of earlier sessions included */
      epochsRun: number;
      /** this session's */
      trainSeconds: number;
      /** the epoch kept and the whole network's weights at that epoch, in getWeights() order */
      best: { epoch: number; weights: Float32Array[] };
    };

/**
 * Per-replica sums (`stats`): for each task in TASKS order, STATS_PER_TASK values (train loss, train hits,
 * validation loss, validation hits); then the counts and the age error.
 */
export const STAT_COUNT = 16;
const STATS_PER_TASK = 4;
const TRAIN_LOSS = 0;
const TRAIN_HITS = 1;
const VALIDATION_LOSS = 2;
const VALIDATION_HITS = 3;
const TRAIN_COUNT = 12;
const VALIDATION_COUNT = 13;
const AGE_ABS_ERROR = 14;
/** Int32 slots of `sync`. */
export const SYNC_SLOTS = 3;
const SYNC_ARRIVED = 0;
export const SYNC_GENERATION = 1;
export const SYNC_ABORTED = 2;
/** How long a waiting replica sleeps between looks at the aborted flag. */
const ABORT_POLL_MS = 1000;
/** Faces per validation batch. */
const VALIDATION_BATCH = 128;
/** The floor under a probability before its log, so that a confident mistake costs a finite loss. */
const MIN_PROBABILITY = 1e-7;

/** The index in `stats` of a task's sum. */
function statIndex(task: number, sum: number): number {
  return STATS_PER_TASK * task + sum;
}

/** Waits until every replica has arrived; throws if the parent aborted the run (another replica failed). */
function arriveAndWait(sync: Int32Array, parties: number): void {
  const generation = Atomics.load(sync, SYNC_GENERATION);
  if (Atomics.add(sync, SYNC_ARRIVED, 1) === parties - 1) {
    Atomics.store(sync, SYNC_ARRIVED, 0);
    Atomics.add(sync, SYNC_GENERATION, 1);
    Atomics.notify(sync, SYNC_GENERATION);
    return;
  }
  while (Atomics.load(sync, SYNC_GENERATION) === generation) {
    Atomics.wait(sync, SYNC_GENERATION, generation, ABORT_POLL_MS);
    if (Atomics.load(sync, SYNC_ABORTED) !== 0) throw new Error('training aborted: another replica failed');
  }
}

/** The replica's views of the shared buffers. */
interface SharedViews {
  pixels: Uint8Array;
  ages: Uint8Array;
  targets: Record<Task, Int32Array>;
  teachers: TeacherTargets | undefined;
  fit: Int32Array;
  validation: Int32Array;
  sync: Int32Array;
  stats: Float64Array;
  /** this replica's row of `stats` */
  own: Float64Array;
  gradients: Float32Array;
  batchStats: Float64Array;
}

function openShared(data: ReplicaData): SharedViews {
  const stats = new Float64Array(data.stats);
  return {
    pixels: new Uint8Array(data.pixels),
    ages: new Uint8Array(data.ages),
    targets: Object.fromEntries(TASKS.map((task) => [task, new Int32Array(data.targets[task])])) as Record<Task, Int32Array>,
    teachers: data.teachers && (Object.fromEntries(Object.entries(data.teachers).map(([key, buffer]) => [key, new Float32Array(buffer)])) as unknown as TeacherTargets),
    fit: new Int32Array(data.fit),
    validation: new Int32Array(data.validation),
    sync: new Int32Array(data.sync),
    stats,
    own: stats.subarray(data.replica * STAT_COUNT, (data.replica + 1) * STAT_COUNT),
    gradients: new Float32Array(data.gradients),
    batchStats: new Float64Array(data.batchStats),
  };
}

/** The network, the variables it trains and the optimizer that moves them. */
interface Trainer {
  net: tf.LayersModel;
  variables: tf.Variable[];
  /** where each variable starts in a flat gradient */
  offsets: number[];
  parameterCount: number;
  /** the mean of the replicas' gradients, rebuilt at every step in one reused buffer */
  meanGradient: Float32Array;
  /** the kernels that weight decay shrinks */
  decayed: tf.Variable[];
  optimizer: tf.MomentumOptimizer;
}

function buildTrainer(data: ReplicaData, views: SharedViews): Trainer {
  const { config, spec, replicas } = data;
  const net = buildMultitaskModels(data.labels, { ...config.architecture, input: spec }, data.ageScheme, data.seed).train;
  const variables = net.trainableWeights.map((w) => w.read() as tf.Variable);
  const offsets: number[] = [];
  let parameterCount = 0;
  for (const v of variables) {
    offsets.push(parameterCount);
    parameterCount += v.size;
  }
  if (views.gradients.length !== 2 * replicas * parameterCount) throw new Error(`gradient buffer holds ${views.gradients.length} floats; expected ${2 * replicas * parameterCount}`);
  return {
    net,
    variables,
    offsets,
    parameterCount,
    meanGradient: new Float32Array(parameterCount),
    decayed: variables.filter((v) => v.name.includes('kernel')),
    optimizer: tf.train.momentum(config.learningRate, config.momentum, true),
  };
}

/** What the losses and the validation scores are computed with. */
interface Scoring {
  ethnicityWeights: Float32Array;
  ageTargets: Float32Array[];
  /** distribution -> group probabilities, as the exported age model computes them */
  groupMatrix: tf.Tensor2D;
  /** distribution -> years, as the exported age model computes them */
  yearsMatrix: tf.Tensor2D;
}

function buildScoring(data: ReplicaData, views: SharedViews): Scoring {
  const groupCount = data.labels.age.length;
  const groupOfBin = Array.from({ length: AGE_BINS }, (_, bin) => ageGroupIndex(MIN_AGE + bin, data.ageScheme));
  return {
    ethnicityWeights: classWeights(views.targets.ethnicity, views.fit, data.labels.ethnicity.length, data.config.classBalance),
    ageTargets: ageTargetTable(data.config.ageSigma),
    groupMatrix: tf.tensor2d(groupOfBin.flatMap((g) => Array.from({ length: groupCount }, (_, k) => (k === g ? 1 : 0))), [AGE_BINS, groupCount]),
    yearsMatrix: tf.tensor2d(groupOfBin.map((_, bin) => MIN_AGE + bin), [AGE_BINS, 1]),
  };
}

/** Everything a replica's stages share. */
interface Replica {
  data: ReplicaData;
  views: SharedViews;
  trainer: Trainer;
  scoring: Scoring;
  /** the augmentation stream, counted so that a checkpoint can record where it is */
  random: CountedRandom;
  /** faces per replica in a step */
  share: number;
  /** values per face */
  faceSize: number;
  batchInput: Float32Array;
  /** this replica's faces of the current step */
  mine: Int32Array;
  normalizers: tf.layers.Layer[];
  /** the faces whose batch statistics replace the running ones after every epoch (this replica's part) */
  statisticsFaces: Int32Array;
  statisticsSize: number;
  /** with `config.ema`: the moving average of each trainable variable (what is validated and shipped) */
  average: Float32Array[] | undefined;
  /** with `config.mixup`: this step's mixing weight and, per face of `mine`, the position of the face mixed into it */
  mix: { weight: number; partners: Int32Array } | undefined;
  post: (message: ReplicaMessage) => void;
}

function openReplica(data: ReplicaData, post: (message: ReplicaMessage) => void): Replica {
  const { config, spec, replica, replicas, seed } = data;
  const views = openShared(data);
  const trainer = buildTrainer(data, views);
  const faceSize = spec.height * spec.width * spec.channels;
  const share = Math.floor(config.batchSize / replicas);
  // a fixed draw, split between replicas (at least one each, so that no replica averages an empty batch)
  const statisticsCount = config.batchNormFaces > 0 ? Math.min(views.fit.length, Math.max(replicas, config.batchNormFaces)) : 0;
  const statisticsFaces = Int32Array.from(shuffledIndices(views.fit.length, seed + SEED_OFFSET.batchNormFaces).subarray(0, statisticsCount), (i) => views.fit[i]).filter((_, i) => i % replicas === replica);
  const statisticsSize = batchStatisticsSize(trainer.net);
  if (views.batchStats.length !== replicas * statisticsSize) throw new Error(`batch statistics buffer holds ${views.batchStats.length} values; expected ${replicas * statisticsSize}`);
  return {
    data,
    views,
    trainer,
    scoring: buildScoring(data, views),
    random: countedRandom(augmentationSeed(seed, replica), data.checkpoint?.resume?.draws ?? 0),
    share,
    faceSize,
    batchInput: new Float32Array(share * faceSize),
    mine: new Int32Array(share),
    normalizers: batchNormalizers(trainer.net),
    statisticsFaces: statisticsCount > 0 ? statisticsFaces : new Int32Array(0),
    statisticsSize,
    average: config.ema === null ? undefined : trainer.variables.map((v) => Float32Array.from(v.dataSync() as Float32Array)),
    mix: config.mixup === null ? undefined : { weight: 1, partners: new Int32Array(share) },
    post,
  };
}

/**
 * Each task's loss on `batch`, whose classes per task (TASKS order) are `truth`; with distillation, (1 - weight) x
 * that + weight x the loss against the teachers' answers (`teacherLosses`).
 */
function taskLosses(r: Replica, logits: tf.Tensor[], batch: Int32Array, truth: tf.Tensor1D[]): tf.Scalar[] {
  const { config, labels } = r.data;
  const { ageTargets, groupMatrix, ethnicityWeights } = r.scoring;
  const count = batch.length;
  const soft = new Float32Array(count * AGE_BINS);
  batch.forEach((face, k) => soft.set(ageTargets[r.views.ages[face] - MIN_AGE], k * AGE_BINS));
  const ethnicityWeight = tf.tensor1d(Array.from(batch, (face) => ethnicityWeights[r.views.targets.ethnicity[face]]));
  const onTruth = [
    tf.losses.softmaxCrossEntropy(tf.tensor2d(soft, [count, AGE_BINS]), logits[0]).add(ageGroupCrossEntropy(logits[0], groupMatrix, truth[0]).mul(config.ageGroupLoss)),
    tf.losses.softmaxCrossEntropy(tf.oneHot(truth[1], labels.ethnicity.length), logits[1], ethnicityWeight, config.labelSmoothing),
    tf.losses.sigmoidCrossEntropy(truth[2].toFloat().reshape([count, 1]), logits[2], undefined, config.labelSmoothing),
  ] as tf.Scalar[];
  if (config.distill === null) return onTruth;
  const { weight } = config.distill;
  const onTeachers = teacherLosses(logits, teacherRows(r, batch), ethnicityWeight, groupMatrix, { temperature: config.distill.temperature, ageGroupLoss: config.ageGroupLoss });
  return onTruth.map((loss, t) => loss.mul(1 - weight).add(onTeachers[t].mul(weight)) as tf.Scalar);
}

/** The teachers' answers for `batch` as the rows of `teacherLosses`' targets. */
function teacherRows(r: Replica, batch: Int32Array): TeacherBatch {
  const { config, labels } = r.data;
  const teachers = r.views.teachers!;
  const count = batch.length;
  const rows = (values: Float32Array, width: number): tf.Tensor2D => {
    const picked = new Float32Array(count * width);
    batch.forEach((face, k) => picked.set(values.subarray(face * width, (face + 1) * width), k * width));
    return tf.tensor2d(picked, [count, width]);
  };
  const ages = new Float32Array(count * AGE_BINS);
  batch.forEach((face, k) => ageTarget(teachers.ageYears[face] - MIN_AGE, config.ageSigma, ages.subarray(k * AGE_BINS, (k + 1) * AGE_BINS)));
  return { ages: tf.tensor2d(ages, [count, AGE_BINS]), ageGroups: rows(teachers.ageGroups, labels.age.length), ethnicity: rows(teachers.ethnicity, labels.ethnicity.length), gender: rows(teachers.gender, 1) };
}

/** A batch's targets from the teachers: the age distribution around their mean age, and their softened probabilities. */
export interface TeacherBatch {
  /** faces x AGE_BINS, each row summing to 1 */
  ages: tf.Tensor2D;
  /** faces x age groups, softened */
  ageGroups: tf.Tensor2D;
  /** faces x ethnicities, softened */
  ethnicity: tf.Tensor2D;
  /** faces x 1: the probability of female, softened */
  gender: tf.Tensor2D;
}

/**
 * Each task's loss against the teachers' answers (training/distill.ts), shaped as its loss on the truth: for age,
 * the cross-entropy against a Gaussian around the teachers' mean age plus `ageGroupLoss` x the age-group term against
 * their group probabilities; for ethnicity (weighted by the true class, as on the truth) and gender, the
 * cross-entropy against their probabilities. The class probabilities of both sides are softened at `temperature`
 * (the teachers' already are: `softenedTargets`), and those terms scaled by its square, so that their gradients
 * keep the size of the truth's whatever the temperature (Hinton, Vinyals and Dean, 2015).
 */
export function teacherLosses(
  logits: tf.Tensor[],
  targets: TeacherBatch,
  ethnicityWeight: tf.Tensor1D,
  groupMatrix: tf.Tensor2D,
  { temperature, ageGroupLoss }: { temperature: number; ageGroupLoss: number },
): tf.Scalar[] {
  const groupLogProbabilities = tf.log(tf.softmax(logits[0]).matMul(groupMatrix).maximum(MIN_PROBABILITY));
  const softened = (studentLogits: tf.Tensor) => studentLogits.div(temperature);
  const scale = temperature * temperature;
  return [
    tf.losses.softmaxCrossEntropy(targets.ages, logits[0]).add(tf.losses.softmaxCrossEntropy(targets.ageGroups, softened(groupLogProbabilities)).mul(scale * ageGroupLoss)),
    tf.losses.softmaxCrossEntropy(targets.ethnicity, softened(logits[1]), ethnicityWeight).mul(scale),
    tf.losses.sigmoidCrossEntropy(targets.gender, softened(logits[2])).mul(scale),
  ] as tf.Scalar[];
}

/** Predicted class of each face for each task, from the heads' logits. */
function predictedClasses(r: Replica, logits: tf.Tensor[]): tf.Tensor[] {
  return [tf.softmax(logits[0]).matMul(r.scoring.groupMatrix).argMax(1), logits[1].argMax(1), logits[2].greater(0).squeeze([1]).toInt()];
}

/** This replica's gradient on its share of the step's faces, written to its slot; its loss and hits summed in `own`. */
function shareGradient(r: Replica, slot: number): void {
  const { spec, config, replica } = r.data;
  const { net, variables, offsets, parameterCount } = r.trainer;
  const { own, gradients, targets } = r.views;
  const losses: tf.Scalar[] = [];
  const hits: tf.Tensor[] = [];
  const { grads, value } = tf.tidy(() => {
    const x = tf.tensor4d(r.batchInput, [r.share, spec.height, spec.width, spec.channels]);
    return tf.variableGrads(() => {
      const logits = net.apply(x, { training: true }) as tf.Tensor[];
      const truthOf = (faces: Int32Array) => TASKS.map((task) => tf.tensor1d(Array.from(faces, (face) => targets[task][face]), 'int32'));
      const truth = truthOf(r.mine);
      let perTask = taskLosses(r, logits, r.mine, truth);
      if (r.mix !== undefined) {
        // mixup: each loss is the mixing weight's blend of the losses against either face's truth
        const { weight, partners } = r.mix;
        const partnerFaces = Int32Array.from(partners, (k) => r.mine[k]);
        const partnerLosses = taskLosses(r, logits, partnerFaces, truthOf(partnerFaces));
        perTask = perTask.map((loss, t) => loss.mul(weight).add(partnerLosses[t].mul(1 - weight)) as tf.Scalar);
      }
      losses.push(...perTask.map((l) => tf.keep(l)));
      hits.push(...predictedClasses(r, logits).map((p, t) => tf.keep(p.equal(truth[t]).sum())));
      return tf.addN(perTask.map((l, t) => l.mul(config.lossWeights[TASKS[t]]))) as tf.Scalar;
    }, variables);
  });
  variables.forEach((v, i) => gradients.set(grads[v.name].dataSync() as Float32Array, (slot + replica) * parameterCount + offsets[i]));
  tf.dispose([value, ...Object.values(grads)]);
  TASKS.forEach((_, t) => {
    own[statIndex(t, TRAIN_LOSS)] += losses[t].dataSync()[0] * r.share;
    own[statIndex(t, TRAIN_HITS)] += hits[t].dataSync()[0];
  });
  own[TRAIN_COUNT] += r.share;
  tf.dispose([...losses, ...hits]);
}

/** Applies the mean of every replica's gradient in `slot` (summed in replica order, so the same bits everywhere), then weight decay. */
function applyMeanGradient(r: Replica, slot: number, learningRate: number): void {
  const { replicas, config } = r.data;
  const { variables, offsets, parameterCount, meanGradient, optimizer, decayed } = r.trainer;
  const { gradients } = r.views;
  optimizer.setLearningRate(learningRate);
  const mean = variables.map((v, i) => {
    const averaged = meanGradient.subarray(offsets[i], offsets[i] + v.size).fill(0);
    for (let replica = 0; replica < replicas; replica++) {
      const from = (slot + replica) * parameterCount + offsets[i];
      for (let j = 0; j < averaged.length; j++) averaged[j] += gradients[from + j];
    }
    for (let j = 0; j < averaged.length; j++) averaged[j] /= replicas;
    return { name: v.name, tensor: tf.tensor(averaged, v.shape) };
  });
  optimizer.applyGradients(mean);
  tf.dispose(mean.map((g) => g.tensor));
  tf.tidy(() => {
    for (const w of decayed) w.assign(w.mul(1 - learningRate * config.weightDecay));
  });
}

/** One epoch's training steps (`epoch` from 0), every replica in lockstep. */
function trainEpoch(r: Replica, epoch: number, steps: number): void {
  const { config, spec, replica, replicas, seed, epochs } = r.data;
  const { fit, pixels, sync } = r.views;
  const globalBatch = config.batchSize;
  const schedule = { ...config, epochs };
  const order = epochOrder(fit.length, seed, epoch);
  if (replica === 0) r.post({ type: 'step', epoch: epoch + 1, step: 0, steps });
  for (let step = 0; step < steps; step++) {
    for (let k = 0; k < r.share; k++) r.mine[k] = fit[order[step * globalBatch + replica * r.share + k]];
    r.mine.forEach((face, k) => augmentFace(pixels.subarray(face * r.faceSize, (face + 1) * r.faceSize), spec, drawTransform(config.augment, r.random.next), r.batchInput.subarray(k * r.faceSize, (k + 1) * r.faceSize)));
    if (config.mixup !== null) mixShare(r, config.mixup);
    const slot = (step % 2) * replicas;
    shareGradient(r, slot);
    arriveAndWait(sync, replicas);
    applyMeanGradient(r, slot, learningRateAt(epoch + step / steps, schedule));
    if (config.ema !== null) updateWeightAverage(r, emaDecayAt(config.ema, epoch * steps + step));
    if (replica === 0) r.post({ type: 'step', epoch: epoch + 1, step: step + 1, steps });
  }
}

/**
 * mixup within this replica's share: a mixing weight from Beta(alpha, alpha) and a shuffle of the share, both from
 * the replica's augmentation stream (so a checkpoint's draw count covers them); each face becomes the weight's blend
 * of itself and its partner.
 */
function mixShare(r: Replica, alpha: number): void {
  const mix = r.mix!;
  mix.weight = betaDraw(alpha, r.random.next);
  const partners = mix.partners;
  for (let k = 0; k < partners.length; k++) partners[k] = k;
  for (let k = partners.length - 1; k > 0; k--) {
    const j = Math.floor(r.random.next() * (k + 1));
    [partners[k], partners[j]] = [partners[j], partners[k]];
  }
  const original = r.batchInput.slice();
  const size = r.faceSize;
  for (let k = 0; k < partners.length; k++) {
    const own = original.subarray(k * size, (k + 1) * size);
    const other = original.subarray(partners[k] * size, (partners[k] + 1) * size);
    const out = r.batchInput.subarray(k * size, (k + 1) * size);
    for (let i = 0; i < size; i++) out[i] = mix.weight * own[i] + (1 - mix.weight) * other[i];
  }
}

/** Moves the weights' moving average towards the weights just updated. */
function updateWeightAverage(r: Replica, decay: number): void {
  r.trainer.variables.forEach((v, i) => updateAverage(r.average![i], v.dataSync() as Float32Array, decay));
}

/** Writes `values` (one array per trainable variable) into the variables; returns what they held. */
function swapWeights(r: Replica, values: Float32Array[]): Float32Array[] {
  return r.trainer.variables.map((v, i) => {
    const held = Float32Array.from(v.dataSync() as Float32Array);
    const value = tf.tensor(values[i], v.shape);
    v.assign(value);
    value.dispose();
    return held;
  });
}

/** Precise batch normalization: every replica's running statistics become the mean of the replicas' batch statistics. */
function refreshBatchNorm(r: Replica): void {
  const { replica, replicas, spec } = r.data;
  if (r.data.config.batchNormFaces <= 0) return;
  r.views.batchStats.set(batchStatistics(r.trainer.net, r.normalizers, r.statisticsFaces, r.views.pixels, spec), replica * r.statisticsSize);
  arriveAndWait(r.views.sync, replicas);
  setRunningStatistics(r.normalizers, meanOfReplicas(r.views.batchStats, replicas, r.statisticsSize));
}

/**
 * Validation, split between the replicas; every replica reads the same totals and decides alike. With flipTest,
 * each face is scored as the shipped models answer: the mean over it and its mirror image.
 */
async function validateEpoch(r: Replica): Promise<{ tasks: Record<Task, TaskEpoch>; totals: Float64Array }> {
  const { replica, replicas, spec, config } = r.data;
  const { own, targets, ages, stats, sync } = r.views;
  const { groupMatrix, yearsMatrix } = r.scoring;
  await scoreShare(r.trainer.net, r.views.validation, replica, replicas, r.views.pixels, spec, r.faceSize, config.architecture.flipTest === true, (views, faces) => {
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
        own[statIndex(t, VALIDATION_LOSS)] -= Math.log(Math.max(p[target], MIN_PROBABILITY));
        if (argmax === target) own[statIndex(t, VALIDATION_HITS)]++;
      });
      own[AGE_ABS_ERROR] += Math.abs(years[k] - ages[face]);
    }
    own[VALIDATION_COUNT] += count;
  });
  arriveAndWait(sync, replicas);
  const total = new Float64Array(STAT_COUNT);
  for (let other = 0; other < replicas; other++) for (let i = 0; i < STAT_COUNT; i++) total[i] += stats[other * STAT_COUNT + i];
  // Nobody may clear its sums for the next epoch before everyone has read these.
  arriveAndWait(sync, replicas);
  const tasks = {} as Record<Task, TaskEpoch>;
  TASKS.forEach((task, t) => {
    tasks[task] = {
      loss: total[statIndex(t, TRAIN_LOSS)] / total[TRAIN_COUNT],
      accuracy: total[statIndex(t, TRAIN_HITS)] / total[TRAIN_COUNT],
      valLoss: total[statIndex(t, VALIDATION_LOSS)] / total[VALIDATION_COUNT],
      valAccuracy: total[statIndex(t, VALIDATION_HITS)] / total[VALIDATION_COUNT],
      valMae: task === 'age' ? total[AGE_ABS_ERROR] / total[VALIDATION_COUNT] : undefined,
    };
  });
  return { tasks, totals: total };
}

/** The best epoch so far; replica 0 alone holds its weights. */
interface BestEpoch {
  score: number;
  epoch: number;
  weights: tf.Tensor[];
}

/** How many values each of the network's weights holds, then each momentum accumulator (one per trainable variable), then with EMA each average. */
function stateSizes(r: Replica): number[] {
  const { net, variables } = r.trainer;
  return [...net.getWeights().map((w) => w.size), ...variables.map((v) => v.size), ...(r.average ?? []).map((a) => a.length)];
}

/** Writes this replica's network and momentum after `epoch`, and replica 0 the best weights when they are this epoch's. */
async function saveReplicaState(r: Replica, epoch: number, best: BestEpoch): Promise<void> {
  const checkpoint = r.data.checkpoint;
  if (checkpoint === undefined) return;
  const { net, optimizer } = r.trainer;
  const momentum = (await optimizer.getWeights()).slice(1).map((w) => w.tensor.dataSync() as Float32Array);
  const weights = net.getWeights().map((w) => w.dataSync() as Float32Array);
  await writeFloats(replicaStateFile(checkpoint.folder, r.data.replica, epoch), [...weights, ...momentum, ...(r.average ?? [])]);
  if (r.data.replica === 0 && best.epoch === epoch) await writeFloats(bestWeightsFile(checkpoint.folder, epoch), best.weights.map((w) => w.dataSync() as Float32Array));
  r.post({ type: 'checkpointed', replica: r.data.replica, epoch, draws: r.random.draws, optimizerSteps: optimizer.iterations });
}

/** Sets the network, momentum and best epoch to those the checkpoint holds; returns the best epoch. */
async function restoreReplicaState(r: Replica): Promise<BestEpoch> {
  const resume = r.data.checkpoint?.resume;
  if (resume === undefined) return { score: -Infinity, epoch: 0, weights: [] };
  const { net, variables, optimizer } = r.trainer;
  const folder = r.data.checkpoint!.folder;
  const current = net.getWeights();
  const state = await readFloats(replicaStateFile(folder, r.data.replica, resume.epochsDone), stateSizes(r));
  const weights = current.map((w, i) => tf.tensor(state[i], w.shape));
  net.setWeights(weights);
  tf.dispose(weights);
  const momentum = variables.map((v, i) => ({ name: `${v.name}/momentum`, tensor: tf.tensor(state[current.length + i], v.shape) }));
  await optimizer.setWeights([{ name: 'iter', tensor: tf.scalar(resume.optimizerSteps, 'int32') }, ...momentum]);
  tf.dispose(momentum.map((m) => m.tensor));
  r.average?.forEach((average, i) => average.set(state[current.length + variables.length + i]));
  const best: BestEpoch = { score: resume.best.score ?? -Infinity, epoch: resume.best.epoch, weights: [] };
  if (r.data.replica === 0 && resume.best.epoch > 0) {
    const values = await readFloats(bestWeightsFile(folder, resume.best.epoch), current.map((w) => w.size));
    best.weights = values.map((v, i) => tf.tensor(v, current[i].shape));
  }
  return best;
}

async function runReplica(data: ReplicaData, post: (message: ReplicaMessage) => void): Promise<void> {
  const { config, replica, epochs } = data;
  await selectBackend(data.backend, () => {});
  const r = openReplica(data, post);
  const best = await restoreReplicaState(r);
  const resume = data.checkpoint?.resume;
  const firstEpoch = resume === undefined ? 0 : resume.stopped ? epochs : resume.epochsDone;
  let epochsRun = resume?.epochsDone ?? 0;
  const trainStart = performance.now();
  const steps = Math.floor(r.views.fit.length / config.batchSize);
  for (let epoch = firstEpoch; epoch < epochs; epoch++) {
    const epochStart = performance.now();
    r.views.own.fill(0);
    trainEpoch(r, epoch, steps);
    // With EMA the average is what is validated and kept: it gets its own batch-normalization statistics.
    const trained = r.average === undefined ? undefined : swapWeights(r, r.average);
    refreshBatchNorm(r);
    const seconds = (performance.now() - epochStart) / 1000;
    const { tasks, totals } = await validateEpoch(r);
    const score = validationScore(tasks);
    const improved = score > best.score;
    if (improved) {
      if (replica === 0) {
        tf.dispose(best.weights);
        best.weights = r.trainer.net.getWeights().map((w) => w.clone());
      }
      best.score = score;
      best.epoch = epoch + 1;
    }
    // Training goes on from the weights as trained; their running statistics are not read in training mode.
    if (trained !== undefined) swapWeights(r, trained);
    epochsRun = epoch + 1;
    const stopping = epoch + 1 - best.epoch >= config.patience;
    if (replica === 0) {
      const trainSeconds = (performance.now() - trainStart) / 1000;
      post({ type: 'epoch', epoch: epoch + 1, seconds, imagesPerSecond: totals[TRAIN_COUNT] / seconds, tasks, improved, score, stopping, trainSeconds });
    }
    await saveReplicaState(r, epoch + 1, best);
    if (stopping) break;
  }
  const trainSeconds = (performance.now() - trainStart) / 1000;
  const hash = createHash('sha256');
  for (const v of r.trainer.variables) hash.update(v.dataSync() as Float32Array);
  post({ type: 'digest', replica, digest: hash.digest('hex') });
  if (replica === 0) {
    post({ type: 'done', epochsRun, trainSeconds, best: { epoch: best.epoch, weights: best.weights.map((w) => w.dataSync() as Float32Array) } });
  }
  tf.dispose([r.scoring.groupMatrix, r.scoring.yearsMatrix, ...best.weights]);
  r.trainer.optimizer.dispose();
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
  const batchSize = VALIDATION_BATCH;
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
    Atomics.store(sync, SYNC_ABORTED, 1);
    Atomics.notify(sync, SYNC_GENERATION);
    throw error;
  });
}
