/**
 * The `multitask` preset: one residual trunk shared by the age, ethnicity and gender heads, trained on
 * 64x64 colour faces with the residual preset's recipe (augmentation, SGD with Nesterov momentum on a
 * warm-up + cosine schedule, decoupled weight decay, label smoothing, class-balanced ethnicity loss, the age
 * distribution target), data-parallel over the CPU cores: one replica per core in worker threads
 * (fit-multitask-worker.ts) that average their gradients through shared memory at every step.
 *
 * One epoch is kept for all three tasks: the best on the validation split (carved from the training faces; the
 * test split is never seen here) by the mean of the three accuracies. The shipped models are the trunk and each
 * task's head at that epoch, so their trunks are identical and a runtime can merge them and run the trunk once.
 *
 * Given a run folder, it writes a checkpoint after every epoch (checkpoint.ts), from which a stopped run resumes to
 * the weights it would have reached uninterrupted.
 */
import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';
import { startTsWorker } from '../node-shared/workers.ts';
import * as tf from '@tensorflow/tfjs';
import { TASKS, type AgeScheme, type Task } from '../contract/labels.ts';
import type { OutputSpec } from '../contract/metadata.ts';
import type { InputSpec } from '../contract/preprocess.ts';
import type { BackendName } from '../node-shared/tfjs/select.ts';
import type { Dataset } from './data/dataset.ts';
import { RESIDUAL_TRAINING, type ResidualConfig } from './fit-residual.ts';
import { carveValidation, recipeOf, SEED_OFFSET, type DistillOptions, type RecipeOptions } from './recipe.ts';
import type { TeacherFile, TeacherTargets } from './distill.ts';
import { batchStatisticsSize, STAT_COUNT, SYNC_ABORTED, SYNC_GENERATION, SYNC_SLOTS, type ReplicaCheckpoint, type ReplicaData, type ReplicaMessage } from './fit-multitask-worker.ts';
import { emptyHistory, recordEpoch, type History } from './fit.ts';
import {
  CHECKPOINT_VERSION,
  checkpointFolder,
  CheckpointError,
  datasetFingerprint,
  deleteStaleFiles,
  TrainingInterrupted,
  writeCheckpointMeta,
  type CheckpointMeta,
  type ReplicaProgress,
  type RunOptions,
} from './checkpoint.ts';
import { buildMultitaskModels } from './models/residual.ts';
import { formatEpochLine, formatSharedEpochLine, ProgressBar } from './report/progress.ts';

/** The multitask preset's input: UTKFace's colour, at a size the browser and two CPU cores can afford. */
export const MULTITASK_INPUT: InputSpec = { height: 64, width: 64, channels: 3, scaling: 'unit' };

export interface MultitaskConfig extends ResidualConfig {
  /** weight of each task's loss in the sum that is differentiated */
  lossWeights: Record<Task, number>;
  /**
   * training faces whose batch statistics replace the batch-normalization running averages after every epoch
   * (precise BN; 0 keeps the running averages)
   */
  batchNormFaces: number;
  /**
   * weight of a second age loss: the cross-entropy of the true age group under the group sums of the predicted
   * distribution (0: the distribution's soft target alone, which puts up to half its mass in the next group for
   * an age near a boundary)
   */
  ageGroupLoss: number;
  /** decay of the weights' exponential moving average, which is validated and shipped instead of the weights (null: none) */
  ema: number | null;
  /** alpha of mixup's Beta(alpha, alpha) mixing weight (null: no mixup) */
  mixup: number | null;
  /** the teachers' share of every task's loss and the temperature it softens at (null: no distillation; the teachers are `MultitaskFitArgs.teachers`) */
  distill: Pick<DistillOptions, 'weight' | 'temperature'> | null;
}

export const MULTITASK_TRAINING: MultitaskConfig = {
  ...RESIDUAL_TRAINING,
  architecture: { input: MULTITASK_INPUT, stemWidth: 16, widths: [32, 64, 128], strides: [2, 2, 2], blocksPerStage: 1, dropout: 0, flipTest: true },
  augment: { flip: 0.5, scale: 0.06, rotationDegrees: 6, shift: 0.05, brightness: 0.1, contrast: 0.15 },
  // 64 faces per replica on two cores: smaller shares leave the cores waiting on each other more
  batchSize: 128,
  learningRate: 0.1,
  epochs: 32,
  patience: 10,
  lossWeights: { age: 1, ethnicity: 1, gender: 1 },
  batchNormFaces: 2048,
  ageGroupLoss: 1,
  ema: null,
  mixup: null,
  distill: null,
};

/** The multitask input at `size` pixels a side. */
export function multitaskInput(size: number): InputSpec {
  return { ...MULTITASK_INPUT, height: size, width: size };
}

/** The multitask preset with a recipe's levers applied; the default recipe gives MULTITASK_TRAINING's values. */
export function multitaskConfig(recipe: RecipeOptions): MultitaskConfig {
  const base = MULTITASK_TRAINING.architecture;
  const scaled = (filters: number) => Math.max(1, Math.round(filters * recipe.widthMultiplier));
  return {
    ...MULTITASK_TRAINING,
    architecture: { ...base, input: multitaskInput(recipe.inputSize), stemWidth: scaled(base.stemWidth ?? base.widths[0]), widths: base.widths.map(scaled), blocksPerStage: recipe.blocksPerStage },
    ema: recipe.ema,
    mixup: recipe.mixup,
    distill: recipe.distill === undefined ? null : { weight: recipe.distill.weight, temperature: recipe.distill.temperature },
  };
}

export interface MultitaskFitArgs {
  labels: Record<Task, string[]>;
  dataset: Dataset;
  targets: Record<Task, Int32Array>;
  /** the faces training may use (the test split is not among them) */
  train: Int32Array;
  testCount: number;
  epochs?: number;
  seed: number;
  ageScheme: AgeScheme;
  backend: BackendName;
  /** data-parallel replicas (default: one per core on wasm and cpu; one on tfjs-node, which has its own threads) */
  replicas?: number;
  log: (line: string) => void;
  /** each task's epoch line, which only --verbose prints (`log` prints one line per epoch); absent: they go to `log` */
  detail?: (line: string) => void;
  /** absent: no checkpoint is written and the run cannot be resumed */
  checkpoint?: MultitaskCheckpointArgs;
  /** when it aborts, the run stops at once, keeping the checkpoint of the last completed epoch (`TrainingInterrupted`) */
  stop?: AbortSignal;
  /** with `config.distill`: the teachers' answers for the fitted faces, softened at its temperature, and their files (recorded in the checkpoint) */
  teachers?: { targets: TeacherTargets; files: TeacherFile[] };
}

export interface MultitaskCheckpointArgs {
  /** the run folder; the checkpoint is its checkpoint/ folder */
  runDir: string;
  /** what the run records about itself beyond what fitMultitask is given, for a resume to check */
  run: Pick<RunOptions, 'preset' | 'data' | 'limit' | 'recipe'>;
  /** the checkpoint to continue from */
  resume?: CheckpointMeta;
}

export interface MultitaskFitResult {
  /** per task: the shippable model (the shared trunk at the kept epoch, plus the task's head) */
  models: Record<Task, tf.LayersModel>;
  outputs: Record<Task, OutputSpec[]>;
  history: Record<Task, History>;
  /** the epoch kept, the same for every task */
  bestEpoch: number;
  epochs: number;
  parameters: number;
  trainCount: number;
  trainSeconds: number;
  replicas: number;
  /** the faces that chose the epoch (carved from `train`; see `multitaskValidation`) */
  validation: Int32Array;
}

function startReplica(data: ReplicaData): Worker {
  return startTsWorker(new URL('./fit-multitask-worker.ts', import.meta.url), data);
}

function shared<T extends Uint8Array | Int32Array | Float32Array>(array: T): SharedArrayBuffer {
  const buffer = new SharedArrayBuffer(array.byteLength);
  new Uint8Array(buffer).set(new Uint8Array(array.buffer, array.byteOffset, array.byteLength));
  return buffer;
}

export function defaultReplicas(backend: BackendName): number {
  return backend === 'wasm' || backend === 'cpu' ? availableParallelism() : 1;
}

/** The replicas a run uses: as asked (or the default), at most one per face of a batch. */
export function resolveReplicas(asked: number | undefined, backend: BackendName, config: Pick<MultitaskConfig, 'batchSize'> = MULTITASK_TRAINING): number {
  return Math.max(1, Math.min(asked ?? defaultReplicas(backend), config.batchSize));
}

/**
 * Disposes the models of one build, all but `except`'s inference model. tfjs counts a layer's uses per call, so
 * the layers a build shares are freed only once every model that calls them is disposed: a kept model's own
 * dispose() frees them only if the build's other models went first.
 */
function disposeAll(built: ReturnType<typeof buildMultitaskModels>, except?: Task): void {
  built.train.dispose();
  for (const task of TASKS) if (task !== except) built.inference[task].dispose();
}

/** The split of the training faces into those fitted and those that choose the epoch (and fit the temperatures). */
export function multitaskValidation(train: Int32Array, seed: number, config: Pick<MultitaskConfig, 'validationFraction'> = MULTITASK_TRAINING): { fit: Int32Array; validation: Int32Array } {
  return carveValidation(train, config.validationFraction, seed + SEED_OFFSET.validation);
}

type EpochMessage = Extract<ReplicaMessage, { type: 'epoch' }>;
type DoneMessage = Extract<ReplicaMessage, { type: 'done' }>;

export async function fitMultitask(args: MultitaskFitArgs, config: MultitaskConfig = MULTITASK_TRAINING): Promise<MultitaskFitResult> {
  const { dataset, labels, seed, log } = args;
  const epochs = args.epochs ?? config.epochs;
  const replicas = resolveReplicas(args.replicas, args.backend, config);
  if (config.batchSize % replicas !== 0) throw new Error(`batch size ${config.batchSize} does not split evenly over ${replicas} replicas`);
  if ((config.distill === null) !== (args.teachers === undefined)) throw new Error('distillation takes both its options (config.distill) and the teachers\' answers (args.teachers)');
  const { fit, validation } = multitaskValidation(args.train, seed, config);
  if (fit.length < config.batchSize) throw new Error(`only ${fit.length} faces to fit, fewer than one batch of ${config.batchSize}; load more faces`);
  const architecture = { ...config.architecture, input: dataset.spec };
  const probe = buildMultitaskModels(labels, architecture, args.ageScheme, seed);
  const parameters = probe.train.countParams();
  const parameterCount = probe.train.trainableWeights.reduce((n, w) => n + w.read().size, 0);
  const statisticsSize = batchStatisticsSize(probe.train);
  disposeAll(probe);
  log(
    `multitask: shared residual net, ${parameters.toLocaleString('en-US')} parameters, input ${dataset.spec.height}x${dataset.spec.width}x${dataset.spec.channels}; ` +
      `${fit.length} train / ${validation.length} validation faces (the ${args.testCount} test faces are held out), batch ${config.batchSize} over ${replicas} replica${replicas === 1 ? '' : 's'}, up to ${epochs} epochs`,
  );
  const options: RunOptions | undefined = args.checkpoint && { ...args.checkpoint.run, seed, ageScheme: args.ageScheme, epochs, backend: args.backend, replicas };
  const resume = args.checkpoint?.resume;
  if (resume !== undefined) await prepareResume(resume, options!, dataset, config, args.checkpoint!.runDir, log);

  const common = {
    role: 'multitask-replica' as const,
    replicas,
    config,
    epochs,
    seed,
    ageScheme: args.ageScheme,
    labels,
    spec: dataset.spec,
    backend: args.backend,
    pixels: shared(dataset.pixels),
    ages: shared(dataset.ages),
    targets: Object.fromEntries(TASKS.map((task) => [task, shared(args.targets[task])])) as Record<Task, SharedArrayBuffer>,
    teachers: args.teachers && (Object.fromEntries(Object.entries(args.teachers.targets).map(([key, values]) => [key, shared(values)])) as Record<keyof TeacherTargets, SharedArrayBuffer>),
    fit: shared(fit),
    validation: shared(validation),
    gradients: new SharedArrayBuffer(2 * replicas * parameterCount * Float32Array.BYTES_PER_ELEMENT),
    stats: new SharedArrayBuffer(replicas * STAT_COUNT * Float64Array.BYTES_PER_ELEMENT),
    batchStats: new SharedArrayBuffer(replicas * statisticsSize * Float64Array.BYTES_PER_ELEMENT),
    sync: new SharedArrayBuffer(SYNC_SLOTS * Int32Array.BYTES_PER_ELEMENT),
  };
  const journal = new RunJournal({ epochs, replicas, patience: config.patience, log, detail: args.detail ?? log, folder: args.checkpoint && checkpointFolder(args.checkpoint.runDir), options, dataset: datasetFingerprint(dataset), teachers: args.teachers?.files, resume });
  const replicaCheckpoint = (replica: number): ReplicaCheckpoint | undefined =>
    args.checkpoint && {
      folder: checkpointFolder(args.checkpoint.runDir),
      resume: resume && { epochsDone: resume.epochsDone, stopped: resume.stopped, best: resume.best, ...resume.replicas[replica] },
    };
  const workers = Array.from({ length: replicas }, (_, replica) => startReplica({ ...common, replica, checkpoint: replicaCheckpoint(replica) }));
  const done = await superviseReplicas(workers, common.sync, journal, args.stop);
  await journal.flushed();

  const models = {} as Record<Task, tf.LayersModel>;
  for (const task of TASKS) {
    // Each task's model is its own copy of the network (so each can be disposed on its own), all holding the
    // kept epoch's weights.
    const built = buildMultitaskModels(labels, architecture, args.ageScheme, seed);
    const shapes = built.train.getWeights().map((w) => w.shape);
    const values = done.best.weights.map((data, i) => tf.tensor(data, shapes[i]));
    built.train.setWeights(values);
    tf.dispose(values);
    models[task] = built.inference[task];
    disposeAll(built, task);
  }
  log(`multitask: keeping epoch ${done.best.epoch}, the best on the validation split`);
  return {
    models,
    outputs: probe.outputs,
    history: journal.history,
    bestEpoch: done.best.epoch,
    epochs: done.epochsRun,
    parameters,
    trainCount: fit.length,
    trainSeconds: (resume?.trainSeconds ?? 0) + done.trainSeconds,
    replicas,
    validation,
  };
}

/** Refuses a checkpoint this run cannot continue exactly, and clears what a stopped session left half-written. */
async function prepareResume(resume: CheckpointMeta, options: RunOptions, dataset: Dataset, config: MultitaskConfig, runDir: string, log: (line: string) => void): Promise<void> {
  for (const key of ['seed', 'ageScheme', 'epochs', 'backend', 'replicas'] as const) {
    if (resume.options[key] !== options[key]) throw new CheckpointError(`the run in ${runDir} was started with ${key} ${resume.options[key]}, not ${options[key]}: a resumed run keeps its options`);
  }
  const [recorded, asked] = [JSON.stringify(recipeOf(resume.options.recipe)), JSON.stringify(recipeOf(options.recipe))];
  if (recorded !== asked) throw new CheckpointError(`the run in ${runDir} was started with the recipe ${recorded}, not ${asked}: a resumed run keeps its options`);
  const loaded = datasetFingerprint(dataset);
  if (loaded.count !== resume.dataset.count || loaded.names !== resume.dataset.names) {
    throw new CheckpointError(`the faces loaded (${loaded.count}) are not those the run in ${runDir} trained on (${resume.dataset.count}, another list of files): resume with the run's --data ${resume.options.data} and --limit`);
  }
  if (resume.dataset.pixels !== undefined && loaded.pixels !== resume.dataset.pixels) {
    // Aligned crops are recut when the detector or the code that cuts faces changes; the run goes on with the new ones.
    log(`multitask: warning: the faces' pixels differ from those the run trained on (the crops were cut again or decoded differently): the run continues on the new pixels, so it is no longer the one an uninterrupted run would give`);
  }
  if (config.architecture.dropout > 0) throw new CheckpointError('this network has dropout, whose draws are not seeded: it cannot be resumed exactly');
  await deleteStaleFiles(checkpointFolder(runDir), resume, { keepLaterEpochs: false });
  const best = resume.best.epoch > 0 ? `, the best so far epoch ${resume.best.epoch}` : '';
  log(`multitask: resuming after epoch ${resume.epochsDone} of ${resume.options.epochs}${best}${resume.stopped ? ' (it had stopped early: no epoch left to train)' : ''}`);
}

/**
 * The parent's account of a run: it logs and records each epoch's figures, and writes checkpoint.json for an
 * epoch once replica 0 has reported it and every replica has saved its state for it.
 */
class RunJournal {
  readonly history: Record<Task, History>;
  /** the last epoch whose checkpoint.json is written (or was, before this session) */
  savedEpoch: number;
  private readonly started = performance.now();
  private readonly firstEpoch: number;
  private readonly reported = new Map<number, { message: EpochMessage; best: CheckpointMeta['best'] }>();
  private readonly saved = new Map<number, ReplicaProgress[]>();
  private best: CheckpointMeta['best'];
  private writes: Promise<void> = Promise.resolve();
  private closed = false;
  /** set by `close` while reported epochs wait for their replicas' state */
  private settled: (() => void) | undefined;
  private stepBar: ProgressBar | undefined;

  constructor(
    private readonly run: {
      epochs: number;
      replicas: number;
      patience: number;
      log: (line: string) => void;
      detail: (line: string) => void;
      /** absent: no checkpoint is written */
      folder?: string;
      options?: RunOptions;
      dataset: CheckpointMeta['dataset'];
      /** with distillation: the teachers' files */
      teachers?: CheckpointMeta['teachers'];
      resume?: CheckpointMeta;
    },
  ) {
    const resume = run.resume;
    this.history = resume === undefined ? (Object.fromEntries(TASKS.map((task) => [task, emptyHistory()])) as Record<Task, History>) : structuredClone(resume.history);
    this.savedEpoch = resume?.epochsDone ?? 0;
    this.firstEpoch = this.savedEpoch;
    this.best = resume?.best ?? { epoch: 0, score: null };
  }

  /** On a terminal, a bar over each epoch's training steps, taken off the line when the epoch's lines are printed. */
  showStep(message: Extract<ReplicaMessage, { type: 'step' }>): void {
    if (process.stderr.isTTY !== true) return;
    this.stepBar ??= new ProgressBar(message.steps, { label: `multitask: epoch ${message.epoch}/${this.run.epochs}, training`, unit: 'batches' });
    this.stepBar.update(message.step);
  }

  recordEpoch(message: EpochMessage): void {
    const { epochs, log, detail } = this.run;
    this.stepBar?.clear();
    this.stepBar = undefined;
    const elapsed = (performance.now() - this.started) / 1000;
    const left = (elapsed / (message.epoch - this.firstEpoch)) * (epochs - message.epoch);
    for (const task of TASKS) {
      const t = message.tasks[task];
      const entry = { epoch: message.epoch, epochs, loss: t.loss, accuracy: t.accuracy, valLoss: t.valLoss, valAccuracy: t.valAccuracy, seconds: message.seconds, imagesPerSecond: message.imagesPerSecond, valMae: t.valMae };
      recordEpoch(this.history[task], entry);
      detail(`${task.padEnd(9)}: ${formatEpochLine(entry)}${t.valMae === undefined ? '' : `  val_mae ${t.valMae.toFixed(2)}`}`);
    }
    const tasks = TASKS.map((task) => ({ task, valAccuracy: message.tasks[task].valAccuracy, valMae: message.tasks[task].valMae }));
    const { score, improved, seconds, imagesPerSecond } = message;
    log(`multitask: ${formatSharedEpochLine({ epoch: message.epoch, epochs, tasks, score, improved, seconds, imagesPerSecond, elapsedSeconds: elapsed, leftSeconds: left })}`);
    if (message.stopping) log(`multitask: stopping early: the validation score did not improve for ${this.run.patience} epochs`);
    if (message.improved) this.best = { epoch: message.epoch, score: Number.isFinite(message.score) ? message.score : null };
    if (!this.closed && this.run.folder !== undefined) this.reported.set(message.epoch, { message, best: { ...this.best } });
    this.writeWhenComplete(message.epoch);
  }

  recordSaved(message: Extract<ReplicaMessage, { type: 'checkpointed' }>): void {
    const progress = this.saved.get(message.epoch) ?? [];
    progress[message.replica] = { draws: message.draws, optimizerSteps: message.optimizerSteps };
    this.saved.set(message.epoch, progress);
    this.writeWhenComplete(message.epoch);
  }

  /**
   * Writes no checkpoint.json for epochs not yet reported (the run is being stopped), and resolves once the
   * reported ones, whose replicas are saving their state now, are written.
   */
  close(): Promise<void> {
    this.closed = true;
    return this.reported.size === 0 ? this.writes : new Promise((resolveSettled) => (this.settled = resolveSettled));
  }

  /** Resolves once every checkpoint.json started is written. */
  flushed(): Promise<void> {
    return this.writes;
  }

  private writeWhenComplete(epoch: number): void {
    const { folder, options, replicas, resume } = this.run;
    const reported = this.reported.get(epoch);
    const progress = this.saved.get(epoch);
    if (folder === undefined || options === undefined || reported === undefined || progress === undefined) return;
    if (progress.filter((p) => p !== undefined).length < replicas) return;
    const meta: CheckpointMeta = {
      version: CHECKPOINT_VERSION,
      options,
      dataset: this.run.dataset,
      ...(this.run.teachers === undefined ? {} : { teachers: this.run.teachers }),
      epochsDone: epoch,
      stopped: reported.message.stopping,
      best: reported.best,
      history: Object.fromEntries(TASKS.map((task) => [task, historyUpTo(this.history[task], epoch)])) as Record<Task, History>,
      trainSeconds: (resume?.trainSeconds ?? 0) + reported.message.trainSeconds,
      replicas: progress,
    };
    this.reported.delete(epoch);
    this.saved.delete(epoch);
    this.writes = this.writes.then(async () => {
      await writeCheckpointMeta(folder, meta);
      this.savedEpoch = epoch;
    });
    if (this.closed && this.reported.size === 0) void this.writes.finally(() => this.settled?.());
  }
}

/** The first `epochs` entries of a history. */
function historyUpTo(history: History, epochs: number): History {
  return Object.fromEntries(Object.entries(history).map(([key, values]) => [key, (values as number[]).slice(0, epochs)])) as unknown as History;
}

/**
 * Waits for the replicas to finish and checks that they end with the same weights; fails with the first replica's
 * failure, and on `stop` ends them at once after the checkpoint being written is in place.
 */
function superviseReplicas(workers: Worker[], sync: SharedArrayBuffer, journal: RunJournal, stop: AbortSignal | undefined): Promise<DoneMessage> {
  return new Promise<DoneMessage>((resolveDone, reject) => {
    let result: DoneMessage | undefined;
    let exited = 0;
    let failed = false;
    const digests: string[] = [];
    const fail = (error: Error) => {
      if (failed) return;
      failed = true;
      stop?.removeEventListener('abort', onStop);
      Atomics.store(new Int32Array(sync), SYNC_ABORTED, 1);
      Atomics.notify(new Int32Array(sync), SYNC_GENERATION);
      for (const worker of workers) void worker.terminate();
      reject(error);
    };
    const onStop = () => {
      void journal.close().then(
        () => fail(new TrainingInterrupted(String(stop?.reason ?? 'stopped'), journal.savedEpoch)),
        (error: unknown) => fail(error instanceof Error ? error : new Error(String(error))),
      );
    };
    if (stop?.aborted) onStop();
    stop?.addEventListener('abort', onStop, { once: true });
    workers.forEach((worker, replica) => {
      worker.on('error', (error) => fail(new Error(`training replica ${replica} failed: ${error.message}`, { cause: error })));
      worker.on('exit', (code) => {
        if (code !== 0) return fail(new Error(`training replica ${replica} exited with code ${code}`));
        if (++exited < workers.length) return;
        stop?.removeEventListener('abort', onStop);
        if (result === undefined) fail(new Error('training replicas exited without a result'));
        // The replicas apply the same mean gradient, so they must end with the same weights, bit for bit.
        else if (new Set(digests).size !== 1) fail(new Error(`training replicas diverged: their weights differ (digests ${digests.map((d) => d.slice(0, 12)).join(', ')})`));
        else resolveDone(result);
      });
      worker.on('message', (message: ReplicaMessage) => {
        if (message.type === 'step') journal.showStep(message);
        else if (message.type === 'done') result = message;
        else if (message.type === 'digest') digests[message.replica] = message.digest;
        else if (message.type === 'checkpointed') journal.recordSaved(message);
        else journal.recordEpoch(message);
      });
    });
  });
}
