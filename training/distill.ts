/**
 * Distillation's teachers (`npm run train -- --distill DIR[,DIR...]`): folders of exported models with their
 * manifest (models/, or runs/<run>/onnx), read and checked by the one model-set loader (contract/model-set.ts) and
 * run in onnxruntime-node, each model on the input spec its own metadata gives (a teacher at another input size reads
 * the same faces loaded at its size). Their answers for the faces a run fits are computed once, without
 * augmentation, averaged over the teachers, and cached under .cache/teachers, keyed by the teachers' file hashes and
 * the dataset's; the multitask replicas learn from them (fit-multitask-worker.ts, `teacherLosses`).
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { TASKS, type Task } from '../contract/labels.ts';
import { isClassifierEntry } from '../contract/metadata.ts';
import { answerFaces, checkModelFiles, MANIFEST_FILE, ModelLoadError, openModelSet, parseManifest, type CheckedModels } from '../contract/model-set.ts';
import { inputSpecKey, PREPROCESSING_VERSION, scaleBytes, type InputSpec } from '../contract/preprocess.ts';
import { UsageError } from '../node-shared/cli-args.ts';
import { writeFileAtomic } from '../node-shared/files.ts';
import { folderModelSource } from '../node-shared/model-files.ts';
import { nodeRuntime, run } from '../node-shared/onnxruntime-node.ts';
import { temperedProbabilities } from './calibrate.ts';
import { CheckpointError, datasetFingerprint } from './checkpoint.ts';
import type { Dataset } from './data/dataset.ts';
import type { TestSplitInfo } from './train-task.ts';
import { ProgressBar } from './report/progress.ts';

export const DEFAULT_TEACHER_CACHE_DIR = join('.cache', 'teachers');
/** Bumped when what a cache file holds, or how the answers are computed, changes. */
const CACHE_FORMAT_VERSION = 1;
/** Faces per teacher run. */
const TEACHER_BATCH = 256;

/** One teacher model file, as the checkpoint records it: a resume refuses teachers whose files changed. */
export interface TeacherFile {
  path: string;
  sha256: string;
}

/** A teacher folder's three classifiers, read and checked (sha256 against the manifest, metadata, labels). */
export interface Teacher {
  dir: string;
  models: CheckedModels;
}

/**
 * The teachers' mean answers per face, in dataset order; rows of faces not asked for are NaN. Class probabilities
 * are as the teachers give them, or softened by `softenedTargets`.
 */
export interface TeacherTargets {
  /** count x age groups: the probability of each age group */
  ageGroups: Float32Array;
  /** the mean predicted age in years */
  ageYears: Float32Array;
  /** count x ethnicities */
  ethnicity: Float32Array;
  /** the probability of the second gender label (female) */
  gender: Float32Array;
}

const TARGET_KEYS = ['ageGroups', 'ageYears', 'ethnicity', 'gender'] as const satisfies readonly (keyof TeacherTargets)[];

const EXPORT_HINT = 'a teacher is a folder of exported models with their manifest, as models/ or runs/<run>/onnx (npm run export -- --all --runs runs/<run> --out-dir runs/<run>/onnx)';

/**
 * Reads and checks each teacher folder: a manifest listing a classifier for every task, files matching their
 * sha256, labels those of the run (`labels`, the age scheme's groups included), and an age model that gives years.
 * Any fault is a UsageError naming the folder or file.
 */
export async function readTeachers(dirs: readonly string[], labels: Record<Task, string[]>): Promise<Teacher[]> {
  return Promise.all(dirs.map((dir) => readTeacher(resolve(dir), labels)));
}

async function readTeacher(dir: string, labels: Record<Task, string[]>): Promise<Teacher> {
  if (!existsSync(dir)) throw new UsageError(`--distill ${dir} does not exist; ${EXPORT_HINT}`);
  const manifestPath = join(dir, MANIFEST_FILE);
  if (!existsSync(manifestPath)) throw new UsageError(`--distill ${dir} holds no ${MANIFEST_FILE}; ${EXPORT_HINT}`);
  let models: CheckedModels;
  try {
    const entries = parseManifest(await readFile(manifestPath, 'utf8'), manifestPath).models.filter(isClassifierEntry);
    const missing = TASKS.filter((task) => !entries.some((entry) => entry.task === task));
    if (missing.length > 0) throw new UsageError(`--distill ${dir}: ${manifestPath} lists no ${missing.join(' or ')} model; a teacher answers every task (${TASKS.join(', ')})`);
    models = await checkModelFiles(folderModelSource(dir), entries);
  } catch (error) {
    if (error instanceof ModelLoadError) throw new UsageError(`--distill ${dir}: ${error.message}`);
    throw error;
  }
  for (const model of models.classifiers) {
    const { metadata, path, task } = model;
    if (JSON.stringify(metadata.labels) !== JSON.stringify(labels[task])) {
      throw new UsageError(`--distill ${dir}: ${path} answers the labels ${metadata.labels.join(', ')}; this run trains ${labels[task].join(', ')} (another --age-scheme?)`);
    }
    if (task === 'age' && !metadata.outputs.some((output) => output.kind === 'years')) {
      throw new UsageError(`--distill ${dir}: ${path} gives no years output; the age target is the teachers' mean age`);
    }
  }
  return { dir, models };
}

/** The teachers' files, in the order their answers are averaged. */
export function teacherFiles(teachers: readonly Teacher[]): TeacherFile[] {
  return teachers.flatMap((teacher) => teacher.models.classifiers.map((model) => ({ path: model.path, sha256: model.sha256 })));
}

/** Refuses to resume a run whose teachers' files are not those it was started with. */
export function assertSameTeachers(recorded: readonly TeacherFile[] | undefined, loaded: readonly TeacherFile[], runDir: string): void {
  const recordedSha256 = new Map(recorded?.map((file) => [file.path, file.sha256]));
  const changed = loaded.find((file) => recordedSha256.get(file.path) !== file.sha256);
  if (changed === undefined) return;
  const was = recordedSha256.get(changed.path);
  throw new CheckpointError(
    `the run in ${runDir} was distilled from other teachers: ${changed.path} has sha256 ${changed.sha256.slice(0, 12)}..., ` +
      `${was === undefined ? 'and was not one of them' : `not ${was.slice(0, 12)}... as when the run started`}; restore the teachers the run started with, or start a new run`,
  );
}

/**
 * A warning for each teacher trained on another split of the faces (another --seed, --limit or folder), which may
 * have trained on this run's test faces: the student's test figures would then flatter it. Teachers from runs on the
 * same faces and seed share the run's test split.
 */
export function teacherSplitWarnings(teachers: readonly Teacher[], split: TestSplitInfo): string[] {
  const describe = (s: Partial<TestSplitInfo>) => `seed ${s.seed}, --limit ${s.limit ?? 'none'}, ${s.datasetCount} faces, test fraction ${s.testFraction}`;
  return teachers.flatMap((teacher) => {
    const model = teacher.models.classifiers[0];
    const own = (model.metadata.metrics?.split ?? {}) as Partial<TestSplitInfo>;
    const same = own.seed === split.seed && (own.limit ?? null) === split.limit && own.datasetCount === split.datasetCount && own.testFraction === split.testFraction;
    return same
      ? []
      : [`distill: warning: ${model.path} was trained on another split (${describe(own)}; this run: ${describe(split)}): its training faces may include this run's test faces, which would flatter the test figures`];
  });
}

export interface TeacherPassOptions {
  /** the run's faces loaded at another input spec (for a teacher that reads another size): the same faces, in the same order */
  datasetAt: (spec: InputSpec) => Promise<Dataset>;
  log: (line: string) => void;
  /** default DEFAULT_TEACHER_CACHE_DIR; false: neither read nor written */
  cacheDir?: string | false;
}

/**
 * The teachers' mean answers for the faces at `faces` (a run's fitted faces: never its test split), from the cache
 * or computed once, each face as it is (no augmentation) and each teacher as it answers (its own test-time flip and
 * temperature).
 */
export async function teacherTargets(teachers: readonly Teacher[], dataset: Dataset, faces: Int32Array, options: TeacherPassOptions): Promise<TeacherTargets> {
  const key = cacheKey(teachers, dataset, faces);
  const file = options.cacheDir === false ? undefined : join(resolve(options.cacheDir ?? DEFAULT_TEACHER_CACHE_DIR), `${key.slice(0, 16)}.bin`);
  const widths = targetWidths(teachers[0]);
  const cached = file === undefined ? undefined : await readCachedTargets(file, key, dataset.count, widths);
  if (cached !== undefined) {
    options.log(`distill: the ${teachers.length} teacher${teachers.length === 1 ? '\'s' : 's\''} answers for ${faces.length.toLocaleString('en-US')} faces read from ${file}`);
    return cached;
  }
  const started = performance.now();
  const targets = await computeTargets(teachers, dataset, faces, widths, options);
  const seconds = (performance.now() - started) / 1000;
  if (file !== undefined) await writeFileAtomic(file, encodeTargets(key, targets));
  options.log(`distill: the teacher pass took ${seconds.toFixed(1)} s (${teachers.length} teacher${teachers.length === 1 ? '' : 's'}, ${faces.length.toLocaleString('en-US')} faces)${file === undefined ? '' : `; cached in ${file}`}`);
  return targets;
}

/** Values per face of each target. */
function targetWidths(teacher: Teacher): Record<keyof TeacherTargets, number> {
  const classes = (task: Task) => teacher.models.classifiers.find((model) => model.task === task)!.metadata.labels.length;
  return { ageGroups: classes('age'), ageYears: 1, ethnicity: classes('ethnicity'), gender: 1 };
}

function cacheKey(teachers: readonly Teacher[], dataset: Dataset, faces: Int32Array): string {
  const hash = createHash('sha256');
  hash.update(JSON.stringify({ format: CACHE_FORMAT_VERSION, preprocessing: PREPROCESSING_VERSION, teachers: teacherFiles(teachers).map((f) => f.sha256), dataset: datasetFingerprint(dataset) }));
  hash.update(new Uint8Array(faces.buffer, faces.byteOffset, faces.byteLength));
  return hash.digest('hex');
}

async function computeTargets(teachers: readonly Teacher[], dataset: Dataset, faces: Int32Array, widths: Record<keyof TeacherTargets, number>, options: TeacherPassOptions): Promise<TeacherTargets> {
  const sums = Object.fromEntries(TARGET_KEYS.map((key) => [key, new Float64Array(dataset.count * widths[key]).fill(Number.NaN)])) as Record<keyof TeacherTargets, Float64Array>;
  for (const face of faces) for (const key of TARGET_KEYS) sums[key].fill(0, face * widths[key], (face + 1) * widths[key]);
  const bar = new ProgressBar(faces.length * teachers.length, { label: `distill: teachers' answers (${teachers.length} teacher${teachers.length === 1 ? '' : 's'})`, unit: 'faces' });
  // training has not started: every core is the teachers'
  const runtime = nodeRuntime({ provider: 'cpu', threads: availableParallelism() });
  for (const teacher of teachers) {
    const set = await openModelSet(teacher.models, runtime, { merge: true, log: { info: () => {}, warn: options.log } });
    try {
      const sources = await Promise.all(set.specs.map((spec) => facesAt(spec, dataset, teacher, options)));
      for (let start = 0; start < faces.length; start += TEACHER_BATCH) {
        const chunk = faces.subarray(start, start + TEACHER_BATCH);
        const inputs = Array.from(chunk, (face) => sources.map((source) => scaledFace(source, face)));
        (await answerFaces(set, run, inputs)).forEach((answer, k) => {
          const face = chunk[k];
          answer.age.probabilities.forEach((p, g) => (sums.ageGroups[face * widths.ageGroups + g] += p));
          sums.ageYears[face] += answer.age.years!;
          answer.ethnicity.probabilities.forEach((p, c) => (sums.ethnicity[face * widths.ethnicity + c] += p));
          sums.gender[face] += answer.gender.probabilities[1];
        });
        bar.tick(chunk.length);
      }
    } finally {
      await set.release();
    }
  }
  bar.done();
  const targets = Object.fromEntries(TARGET_KEYS.map((key) => [key, Float32Array.from(sums[key], (sum) => sum / teachers.length)])) as unknown as TeacherTargets;
  const broken = Array.from(faces).find((face) => TARGET_KEYS.some((key) => !Number.isFinite(targets[key][face * widths[key]])));
  if (broken !== undefined) throw new Error(`distill: the teachers' answer for ${dataset.names[broken]} is not a number: a teacher is broken (a diverged run?)`);
  return targets;
}

/** The run's faces at `spec`: the loaded dataset, or the same faces loaded at the teacher's size. */
async function facesAt(spec: InputSpec, dataset: Dataset, teacher: Teacher, options: TeacherPassOptions): Promise<Dataset> {
  if (inputSpecKey(spec) === inputSpecKey(dataset.spec)) return dataset;
  const other = await options.datasetAt(spec);
  if (other.count !== dataset.count || other.names.some((name, i) => name !== dataset.names[i])) {
    throw new Error(`distill: ${teacher.dir} reads ${spec.height}x${spec.width}x${spec.channels} faces, and the faces loaded at that size are not the run's (${other.count} faces, not ${dataset.count})`);
  }
  return other;
}

function scaledFace(dataset: Dataset, face: number): Float32Array {
  const { height, width, channels } = dataset.spec;
  const size = height * width * channels;
  return scaleBytes(dataset.pixels.subarray(face * size, (face + 1) * size), dataset.spec);
}

/*
 * Cache file: header length (u32 LE) | header JSON (key, count) | payload: each of TARGET_KEYS as float32, in order.
 */
function encodeTargets(key: string, targets: TeacherTargets): Uint8Array {
  const header = new TextEncoder().encode(JSON.stringify({ key, count: targets.ageYears.length }));
  const parts = TARGET_KEYS.map((name) => new Uint8Array(targets[name].buffer, targets[name].byteOffset, targets[name].byteLength));
  const bytes = new Uint8Array(4 + header.length + parts.reduce((n, part) => n + part.length, 0));
  new DataView(bytes.buffer).setUint32(0, header.length, true);
  bytes.set(header, 4);
  let at = 4 + header.length;
  for (const part of parts) {
    bytes.set(part, at);
    at += part.length;
  }
  return bytes;
}

/** The cached targets, or undefined where there is no file or it was written for other teachers, faces or code. */
async function readCachedTargets(file: string, key: string, count: number, widths: Record<keyof TeacherTargets, number>): Promise<TeacherTargets | undefined> {
  const bytes = await readFile(file).catch(() => undefined);
  if (bytes === undefined || bytes.length < 4) return undefined;
  const headerLength = bytes.readUInt32LE(0);
  let header: { key?: string; count?: number };
  try {
    header = JSON.parse(bytes.subarray(4, 4 + headerLength).toString('utf8')) as typeof header;
  } catch {
    return undefined;
  }
  const floats = TARGET_KEYS.reduce((n, name) => n + count * widths[name], 0);
  if (header.key !== key || header.count !== count || bytes.length !== 4 + headerLength + floats * Float32Array.BYTES_PER_ELEMENT) return undefined;
  const all = new Float32Array(bytes.buffer.slice(bytes.byteOffset + 4 + headerLength, bytes.byteOffset + bytes.length));
  let at = 0;
  return Object.fromEntries(TARGET_KEYS.map((name) => [name, all.slice(at, (at += count * widths[name]))])) as unknown as TeacherTargets;
}

/**
 * The targets with every class probability softened at `temperature` (p^(1/T), normalized, as the student's are in
 * the loss); the mean age is left as it is.
 */
export function softenedTargets(targets: TeacherTargets, temperature: number): TeacherTargets {
  const count = targets.ageYears.length;
  const soften = (values: Float32Array) => {
    const width = values.length / count;
    const out = new Float32Array(values.length);
    for (let face = 0; face < count; face++) {
      const row = Array.from(values.subarray(face * width, (face + 1) * width));
      if (row.every(Number.isFinite)) out.set(temperedProbabilities([row], temperature)[0], face * width);
      else out.fill(Number.NaN, face * width, (face + 1) * width);
    }
    return out;
  };
  const gender = soften(Float32Array.from({ length: 2 * count }, (_, i) => (i % 2 === 0 ? 1 - targets.gender[i >> 1] : targets.gender[i >> 1])));
  return {
    ageGroups: soften(targets.ageGroups),
    ageYears: targets.ageYears,
    ethnicity: soften(targets.ethnicity),
    gender: Float32Array.from({ length: count }, (_, face) => gender[2 * face + 1]),
  };
}
