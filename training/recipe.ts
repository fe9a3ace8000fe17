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
  return Array.from({ length: AGE_BINS }, (_, centre) => ageTarget(centre, sigma, new Float32Array(AGE_BINS)));
}

/** Writes into `row` (AGE_BINS values) a discretised Gaussian around bin `centre` (any real number), summing to 1. */
export function ageTarget(centre: number, sigma: number, row: Float32Array): Float32Array {
  let sum = 0;
  for (let bin = 0; bin < AGE_BINS; bin++) sum += row[bin] = Math.exp(-((bin - centre) ** 2) / (2 * sigma * sigma));
  for (let bin = 0; bin < AGE_BINS; bin++) row[bin] /= sum;
  return row;
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

/**
 * Distillation from an ensemble of exported model folders (`--distill DIR[,DIR...]`, training/distill.ts): every
 * task's loss is (1 - weight) x its loss on the truth + weight x its loss against the teachers' mean answer,
 * softened at `temperature`.
 */
export interface DistillOptions {
  /** the teachers' folders (each a manifest and the three classifiers), resolved */
  teachers: string[];
  /** the teachers' share of every task's loss, above 0 and at most 1 */
  weight: number;
  /** what the teachers' and the student's class probabilities are softened at (p^(1/T), normalized) */
  temperature: number;
}

export const DEFAULT_DISTILL_WEIGHT = 0.5;
export const DEFAULT_DISTILL_TEMPERATURE = 2;

/**
 * The multitask preset's levers for long runs (`npm run train -- --input-size --width-multiplier --blocks --ema
 * --mixup --crops --distill`), recorded in the checkpoint and the metrics; the defaults are the shipped models' recipe.
 */
export interface RecipeOptions {
  /** side of the square colour input, in pixels */
  inputSize: number;
  /** every stage's (and the stem's) filters times this, rounded */
  widthMultiplier: number;
  /** residual blocks per stage */
  blocksPerStage: number;
  /** decay of the exponential moving average of the weights that is validated and shipped; null: the weights as trained */
  ema: number | null;
  /** alpha of the Beta(alpha, alpha) mixing weight of mixup within each replica's share of a batch; null: no mixup */
  mixup: number | null;
  /** UTKFace's crops, or the detector's aligned crops of them as the server cuts faces (training/data/aligned-crops.ts) */
  crops: 'utkface' | 'aligned';
  /** absent: no distillation (and a recipe recorded before distillation existed), so that such recipes stay as they were */
  distill?: DistillOptions;
}

export const DEFAULT_RECIPE: RecipeOptions = { inputSize: 64, widthMultiplier: 1, blocksPerStage: 1, ema: null, mixup: null, crops: 'utkface' };

/** A recorded recipe, or the default for a checkpoint written before recipes were recorded. */
export function recipeOf(recorded: Partial<RecipeOptions> | undefined): RecipeOptions {
  return { ...DEFAULT_RECIPE, ...recorded };
}

/**
 * The EMA's decay at step `step` (from 0): the asked decay, but less while few steps have been averaged, so that
 * the first epochs' average is not dominated by the initial weights (as TensorFlow's ExponentialMovingAverage
 * with num_updates).
 */
export function emaDecayAt(decay: number, step: number): number {
  return Math.min(decay, (1 + step) / (10 + step));
}

/** shadow <- decay * shadow + (1 - decay) * weights, in float32 as the weights are. */
export function updateAverage(shadow: Float32Array, weights: ArrayLike<number>, decay: number): void {
  for (let i = 0; i < shadow.length; i++) shadow[i] = decay * shadow[i] + (1 - decay) * weights[i];
}

/** A standard normal draw (Box-Muller, two uniforms). */
function normalDraw(random: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}

/** A Gamma(shape, 1) draw (Marsaglia and Tsang; for shape < 1, Gamma(shape + 1) times U^(1/shape)). */
function gammaDraw(shape: number, random: () => number): number {
  if (shape < 1) return gammaDraw(shape + 1, random) * (1 - random()) ** (1 / shape);
  const d = shape - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    const x = normalDraw(random);
    const v = (1 + c * x) ** 3;
    if (v <= 0) continue;
    const u = 1 - random();
    if (Math.log(u) < 0.5 * x * x + d - d * v + d * Math.log(v)) return d * v;
  }
}

/** A Beta(alpha, alpha) draw: mixup's weight of the first face. */
export function betaDraw(alpha: number, random: () => number): number {
  const a = gammaDraw(alpha, random);
  const b = gammaDraw(alpha, random);
  return a / (a + b);
}
