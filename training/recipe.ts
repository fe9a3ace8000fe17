/**
 * The training recipe the residual and multitask presets share: the seeded streams they draw from, the split of
 * the training faces into fitted and validation faces, the learning-rate schedule, the soft age targets and the
 * class weights of the ethnicity loss.
 */
import { seededRandom, shuffledIndices } from './data/split.ts';
import { AGE_BINS } from './models/residual.ts';

/**
 * What each seeded stream adds to the run's --seed, so that the streams differ from each other and from the
 * test split (drawn from the seed itself). The values are those the shipped models were trained with.
 */
export const SEED_OFFSET = {
  /** the validation faces carved out of the training faces */
  validation: 101,
  /** the augmentation draws (per replica, see `augmentationSeed`) */
  augmentation: 202,
  /** the fixed faces whose statistics replace the batch-normalization running averages */
  batchNormFaces: 303,
  /** the order of the faces in epoch 0; epoch e uses this plus e */
  epochOrder: 1000,
} as const;

/** A prime step between replicas' augmentation seeds, so that no two replicas draw the same transforms. */
const REPLICA_SEED_STRIDE = 7919;

/** The seed of a replica's augmentation stream. */
export function augmentationSeed(seed: number, replica: number): number {
  return seed + SEED_OFFSET.augmentation + REPLICA_SEED_STRIDE * replica;
}

/** A seeded stream that counts its draws, so that a resumed run can continue it where it stopped. */
export interface CountedRandom {
  next: () => number;
  readonly draws: number;
}

/** The stream of `seed`, advanced past its first `draws` values (by drawing them: exact whatever the generator). */
export function countedRandom(seed: number, draws = 0): CountedRandom {
  const random = seededRandom(seed);
  for (let i = 0; i < draws; i++) random();
  let count = draws;
  return {
    next: () => {
      count++;
      return random();
    },
    get draws() {
      return count;
    },
  };
}

/** The order in which epoch `epoch` (from 0) walks the fitted faces: a function of the seed and epoch alone. */
export function epochOrder(count: number, seed: number, epoch: number): Int32Array {
  return shuffledIndices(count, seed + SEED_OFFSET.epochOrder + epoch);
}

/** A seeded split of the training faces into what is fitted and what chooses the epoch. */
export function carveValidation(train: Int32Array, fraction: number, seed: number): { fit: Int32Array; validation: Int32Array } {
  const order = shuffledIndices(train.length, seed);
  const count = Math.round(train.length * fraction);
  return { validation: Int32Array.from(order.subarray(0, count), (i) => train[i]), fit: Int32Array.from(order.subarray(count), (i) => train[i]) };
}

export interface LearningRateSchedule {
  /** the peak learning rate, reached at the end of the warm-up */
  learningRate: number;
  warmupEpochs: number;
  /** the run's length: the cosine reaches zero at its end */
  epochs: number;
}

/** The learning rate at a fractional epoch: linear warm-up, then cosine decay to zero. */
export function learningRateAt(epoch: number, config: LearningRateSchedule): number {
  if (epoch < config.warmupEpochs) return (config.learningRate * (epoch + 1e-3)) / config.warmupEpochs;
  const progress = (epoch - config.warmupEpochs) / Math.max(1e-9, config.epochs - config.warmupEpochs);
  return 0.5 * config.learningRate * (1 + Math.cos(Math.PI * Math.min(1, progress)));
}

/** Soft targets for the age distribution: a discretised Gaussian around each true age. */
export function ageTargetTable(sigma: number): Float32Array[] {
  return Array.from({ length: AGE_BINS }, (_, centre) => {
    const row = new Float32Array(AGE_BINS);
    let sum = 0;
    for (let bin = 0; bin < AGE_BINS; bin++) sum += row[bin] = Math.exp(-((bin - centre) ** 2) / (2 * sigma * sigma));
    for (let bin = 0; bin < AGE_BINS; bin++) row[bin] /= sum;
    return row;
  });
}

/** Per-class loss weights (frequency^-balance), normalised to a mean of 1 over the faces. */
export function classWeights(targets: Int32Array, indices: Int32Array, classes: number, balance: number): Float32Array {
  const counts = new Float64Array(classes);
  for (const i of indices) counts[targets[i]]++;
  const weights = Float32Array.from(counts, (n) => (n > 0 ? n ** -balance : 0));
  let mean = 0;
  for (const i of indices) mean += weights[targets[i]];
  mean /= indices.length;
  return weights.map((w) => w / mean);
}
