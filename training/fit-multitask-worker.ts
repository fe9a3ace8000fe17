/**
 * One replica of the multitask preset's data-parallel training (started by fit-multitask.ts, one per core).
 *
 * Every replica builds the same network from the same seed and walks the same batches; each computes the
 * gradients of its share of a batch, writes them to shared memory, waits for the others, and applies the mean.
 * Summed in the same order everywhere, the mean is the same in every replica, so the weights stay identical
 * without ever being sent. Only batch-norm running statistics differ (each replica's are from its own faces);
 * replica 0's ship. Validation is split the same way, and every replica reaches the same choices from the
 * shared sums. Replica 0 keeps the best epoch's checkpoint (one for all three tasks, so that the shipped models
 * share their trunk exactly) and reports to the parent.
 */
import { createHash } from 'node:crypto';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs';
import { ageGroupIndex, MIN_AGE, TASKS, type AgeScheme, type Task } from '../models/spec/labels.ts';
import { scaleBytes, type InputSpec } from '../models/spec/preprocess.ts';
import { selectBackend, type BackendName } from './backend/select.ts';
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
  const own = stats.subarray(replica * STAT_COUNT, (replica + 1) * STAT_COUNT);

  const lossOf = (logits: tf.Tensor[], batch: Int32Array): tf.Scalar[] => {
    const count = batch.length;
    const soft = new Float32Array(count * AGE_BINS);
    batch.forEach((face, k) => soft.set(ageTargets[ages[face] - MIN_AGE], k * AGE_BINS));
    const ethnicity = Array.from(batch, (face) => targets.ethnicity[face]);
    return [
      tf.losses.softmaxCrossEntropy(tf.tensor2d(soft, [count, AGE_BINS]), logits[0]),
      tf.losses.softmaxCrossEntropy(tf.oneHot(tf.tensor1d(ethnicity, 'int32'), data.labels.ethnicity.length), logits[1], tf.tensor1d(ethnicity.map((c) => ethnicityWeights[c])), config.labelSmoothing),
      tf.losses.sigmoidCrossEntropy(tf.tensor2d(Array.from(batch, (face) => targets.gender[face]), [count, 1]), logits[2], undefined, config.labelSmoothing),
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
          const losses = lossOf(logits, mine);
          taskLosses.push(...losses.map((l) => tf.keep(l)));
          const truth = TASKS.map((task) => tf.tensor1d(Array.from(mine, (face) => targets[task][face]), 'int32'));
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
    }
    const seconds = (performance.now() - epochStart) / 1000;

    // Validation, split between the replicas; every replica reads the same totals and decides alike.
    await scoreShare(net, validation, replica, replicas, pixels, spec, size, (logits, faces) => {
      const count = faces.length;
      const [ageGroups, ageYears, ethnicity, gender] = tf.tidy(() => {
        const distribution = tf.softmax(logits[0]);
        return [distribution.matMul(groupMatrix), distribution.matMul(yearsMatrix), tf.softmax(logits[1]), tf.sigmoid(logits[2])];
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
 * What chooses the epoch that ships: the mean of the three validation accuracies (age group, ethnicity,
 * gender). One epoch for all tasks keeps the three models' trunks identical, so a runtime can compute it once.
 */
export function validationScore(tasks: Record<Task, Pick<TaskEpoch, 'valAccuracy'>>): number {
  return TASKS.reduce((sum, task) => sum + tasks[task].valAccuracy, 0) / TASKS.length;
}

/** Runs `score` on this replica's share of `indices` (every replicas-th face), in batches, without augmentation. */
async function scoreShare(net: tf.LayersModel, indices: Int32Array, replica: number, replicas: number, pixels: Uint8Array, spec: InputSpec, size: number, score: (logits: tf.Tensor[], faces: Int32Array) => void): Promise<void> {
  const faces = indices.filter((_, i) => i % replicas === replica);
  const batchSize = 128;
  const input = new Float32Array(batchSize * size);
  for (let start = 0; start < faces.length; start += batchSize) {
    const chunk = faces.subarray(start, Math.min(faces.length, start + batchSize));
    chunk.forEach((face, k) => scaleBytes(pixels.subarray(face * size, (face + 1) * size), spec, input.subarray(k * size, (k + 1) * size)));
    const logits = tf.tidy(() => net.apply(tf.tensor4d(input.subarray(0, chunk.length * size), [chunk.length, spec.height, spec.width, spec.channels]), { training: false }) as tf.Tensor[]);
    score(logits, chunk);
    tf.dispose(logits);
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
