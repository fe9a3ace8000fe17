/**
 * The multitask preset's checkpoint: after every completed epoch, `<run>/checkpoint/` holds what an exact resume
 * needs. Each replica writes its network (weights and batch-normalization statistics) and momentum to
 * `replica-<r>.epoch-<e>.bin`, replica 0 the best epoch's weights to `best.epoch-<e>.bin`, and then the parent
 * writes `checkpoint.json` (options, progress, best epoch, history, each replica's random draws), which names the
 * epoch whose files are current: every file is written through a rename, and the old epoch's files are deleted
 * only after the new checkpoint.json is in place, so a run stopped at any moment leaves one consistent checkpoint.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { TASKS, type AgeScheme, type Task } from '../contract/labels.ts';
import { writeFileAtomic } from '../node-shared/files.ts';
import type { BackendName } from '../node-shared/tfjs/select.ts';
import type { Dataset } from './data/dataset.ts';
import type { History } from './fit.ts';
import type { RecipeOptions } from './recipe.ts';
import type { TeacherFile } from './distill.ts';

export const CHECKPOINT_FOLDER = 'checkpoint';
const META_FILE = 'checkpoint.json';
/** Bumped when the files' layout changes, so that an older checkpoint is refused rather than misread. */
export const CHECKPOINT_VERSION = 1;

/** The options a run was started with, resolved; a resume takes them all from here. */
export interface RunOptions {
  preset: string;
  /** the --data path as given (resolved); a resume may load the same faces from elsewhere */
  data: string;
  limit: number | null;
  seed: number;
  ageScheme: AgeScheme;
  epochs: number;
  backend: BackendName;
  replicas: number;
  /** the multitask levers; absent in a checkpoint written before they existed, which ran the defaults */
  recipe?: RecipeOptions;
}

/** Which faces a run trained on: a resume must load the same ones, in the same order. */
export interface DatasetFingerprint {
  count: number;
  /** SHA-256 of the file names in order */
  names: string;
  /** SHA-256 of the faces' bytes (absent in checkpoints written before it was recorded) */
  pixels?: string;
}

export interface ReplicaProgress {
  /** augmentation values drawn so far from the replica's stream */
  draws: number;
  /** the optimizer's step count */
  optimizerSteps: number;
}

export interface CheckpointMeta {
  version: number;
  options: RunOptions;
  dataset: DatasetFingerprint;
  /** with distillation (`options.recipe.distill`): the teachers' files, which a resume must find unchanged */
  teachers?: TeacherFile[];
  /** epochs completed; the files are those of this epoch */
  epochsDone: number;
  /** true once early stopping ended the run: a resume trains no further epoch */
  stopped: boolean;
  /** the epoch kept so far (0: none yet) and its validation score (null where it was not a number) */
  best: { epoch: number; score: number | null };
  history: Record<Task, History>;
  /** training time over every session so far */
  trainSeconds: number;
  replicas: ReplicaProgress[];
}

export function checkpointFolder(runDir: string): string {
  return join(runDir, CHECKPOINT_FOLDER);
}

/** A replica's network and momentum after `epoch`. */
export function replicaStateFile(folder: string, replica: number, epoch: number): string {
  return join(folder, `replica-${replica}.epoch-${epoch}.bin`);
}

/** The whole network's weights at the best epoch so far. */
export function bestWeightsFile(folder: string, epoch: number): string {
  return join(folder, `best.epoch-${epoch}.bin`);
}

export function datasetFingerprint(dataset: Pick<Dataset, 'count' | 'names' | 'pixels'>): DatasetFingerprint {
  const hash = createHash('sha256');
  for (const name of dataset.names) hash.update(name).update('\n');
  return { count: dataset.count, names: hash.digest('hex'), pixels: createHash('sha256').update(dataset.pixels).digest('hex') };
}

/** Writes `arrays` one after the other as little-endian float32, through a rename. */
export async function writeFloats(file: string, arrays: Float32Array[]): Promise<void> {
  const total = arrays.reduce((n, a) => n + a.length, 0);
  const bytes = new Float32Array(total);
  let offset = 0;
  for (const a of arrays) {
    bytes.set(a, offset);
    offset += a.length;
  }
  await writeFileAtomic(file, new Uint8Array(bytes.buffer));
}

/** Reads what `writeFloats` wrote, split into arrays of `sizes`; refuses a file of another length. */
export async function readFloats(file: string, sizes: number[]): Promise<Float32Array[]> {
  const bytes = await readFile(file);
  const expected = sizes.reduce((n, s) => n + s, 0) * Float32Array.BYTES_PER_ELEMENT;
  if (bytes.length !== expected) throw new Error(`checkpoint file ${file} holds ${bytes.length} bytes; expected ${expected} for this network: the checkpoint is damaged or from another network`);
  const all = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
  let offset = 0;
  return sizes.map((size) => all.slice(offset, (offset += size)));
}

/** Writes checkpoint.json through a rename, then deletes the files of earlier epochs. */
export async function writeCheckpointMeta(folder: string, meta: CheckpointMeta): Promise<void> {
  await writeFileAtomic(join(folder, META_FILE), JSON.stringify(meta, null, 2) + '\n');
  await deleteStaleFiles(folder, meta, { keepLaterEpochs: true });
}

/**
 * Deletes what `meta` does not name: earlier epochs' files, and with `keepLaterEpochs` false (no replica is
 * writing) also later epochs' files and half-written ones left by a run that was stopped.
 */
export async function deleteStaleFiles(folder: string, meta: CheckpointMeta, options: { keepLaterEpochs: boolean }): Promise<void> {
  const current = new Set([...meta.replicas.map((_, r) => replicaStateFile(folder, r, meta.epochsDone)), bestWeightsFile(folder, meta.best.epoch)]);
  for (const name of await readdir(folder)) {
    const file = join(folder, name);
    const epoch = /\.epoch-(\d+)\.bin(\.tmp-\d+)?$/.exec(name);
    const later = epoch !== null && Number(epoch[1]) > meta.epochsDone;
    if (name !== META_FILE && !current.has(file) && !(later && options.keepLaterEpochs)) await rm(file, { force: true });
  }
}

/** The checkpoint of the run in `runDir`, checked for what a resume relies on. */
export async function readCheckpoint(runDir: string): Promise<CheckpointMeta> {
  const file = join(checkpointFolder(runDir), META_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    throw new CheckpointError(
      `${runDir} holds no checkpoint (${file} is missing): only multitask runs write one, after their first epoch; ` +
        'a run that finished deletes its checkpoint, and a run stopped before its first epoch ended has nothing to resume: start it again',
    );
  }
  const meta = JSON.parse(text) as CheckpointMeta;
  if (meta.version !== CHECKPOINT_VERSION) throw new CheckpointError(`${file} is a version ${meta.version} checkpoint; this program resumes version ${CHECKPOINT_VERSION}: start the run again`);
  for (const task of TASKS) {
    if (meta.history?.[task]?.epoch?.length !== meta.epochsDone) throw new CheckpointError(`${file} is damaged: its ${task} history does not hold ${meta.epochsDone} epochs`);
  }
  return meta;
}

/** A checkpoint that cannot be resumed from: the message says why and what to do. */
export class CheckpointError extends Error {
  override name = 'CheckpointError';
}

/** The run was stopped (by a signal) and can be resumed from its checkpoint after `epochsDone` epochs (none if 0). */
export class TrainingInterrupted extends Error {
  override name = 'TrainingInterrupted';
  constructor(
    readonly reason: string,
    readonly epochsDone: number,
  ) {
    super(`training stopped (${reason}) after ${epochsDone} completed epoch${epochsDone === 1 ? '' : 's'}`);
  }
}

/** Deletes the checkpoint of a run whose models have been written. */
export async function removeCheckpoint(runDir: string): Promise<void> {
  await rm(checkpointFolder(runDir), { recursive: true, force: true });
}
