/**
 * Loads a UTKFace folder (`{age}_{gender}_{race}_{date&time}.jpg.chip.jpg`) into a Dataset: labels from the
 * file names, pixels decoded and preprocessed in worker threads. Malformed entries are skipped and reported.
 */
import type { Dirent } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { basename, extname, join } from 'node:path';
import type { Worker } from 'node:worker_threads';
import { MAX_AGE, MIN_AGE, type FaceLabels } from '../../contract/labels.ts';
import type { InputSpec } from '../../contract/preprocess.ts';
import type { Dataset, LoadOptions } from './dataset.ts';
import { loadFaceFile, type DecodeBatch, type DecodedBatch, type DecodeWorkerData } from './decode-worker.ts';
import { openAlignedCropper, servedDetectorFile, type ServedDetectorFile } from './aligned-crops.ts';
import { startTsWorker } from '../../node-shared/workers.ts';
import { compareNames, createProgress, DEFAULT_SUBSET_SEED, SkipCollector, subsetOrder, validateLimit } from './ingest.ts';

/** File extensions taken for images; anything else in the folder is skipped as "not an image file". */
export const IMAGE_EXTENSIONS: readonly string[] = ['.jpg', '.jpeg', '.png', '.bmp', '.gif', '.tif', '.tiff'];

const GENDER_COUNT = 2;
const RACE_COUNT = 5;
const EXPECTED_NAME = '{age}_{gender}_{race}_{date&time}.jpg.chip.jpg';

export type ParsedName = { labels: FaceLabels } | { reason: string; detail: string };

/**
 * The labels in a UTKFace file name, or why there are none. Only the three label fields are checked:
 * the date field varies in the real set (one name has a space in it, one lacks the dot before "jpg").
 */
export function parseUtkFaceName(name: string): ParsedName {
  const fields = name.split('_');
  if (fields.length === 3 && /^\d+$/.test(fields[0]) && /^\d+$/.test(fields[1]) && /^\d{8,}/.test(fields[2])) {
    // Three real files look like this: `{age}_{gender}_{date&time}.jpg.chip.jpg`.
    return { reason: 'missing race field', detail: `3 fields, expected ${EXPECTED_NAME}` };
  }
  if (fields.length < 4) return { reason: 'malformed name', detail: `expected ${EXPECTED_NAME}` };
  const [age, gender, race] = fields;
  const named = { age, gender, race };
  for (const [field, text] of Object.entries(named)) {
    if (!/^\d+$/.test(text)) return { reason: 'non-numeric label', detail: `${field} "${text}"` };
  }
  const labels: FaceLabels = { age: Number(age), gender: Number(gender), ethnicity: Number(race) };
  if (labels.age < MIN_AGE || labels.age > MAX_AGE) {
    return { reason: 'age out of range', detail: `${labels.age}, expected ${MIN_AGE} to ${MAX_AGE}` };
  }
  if (labels.gender >= GENDER_COUNT) return { reason: 'gender out of range', detail: `${labels.gender}, expected 0 or 1` };
  if (labels.ethnicity >= RACE_COUNT) return { reason: 'race out of range', detail: `${labels.ethnicity}, expected 0 to ${RACE_COUNT - 1}` };
  return { labels };
}

/**
 * Reads a UTKFace folder. With `limit`, decodes only a seeded random subset of the well-named files
 * (files that then fail to decode are replaced from further along the same shuffle); the faces come back
 * in file-name order. Name problems are reported for the whole folder, decode problems for the files tried.
 */
export async function loadUtkFace(folder: string, spec: InputSpec, options: LoadOptions = {}): Promise<Dataset> {
  validateLimit(options.limit);
  const workerCount = options.workers ?? availableParallelism();
  if (!(Number.isSafeInteger(workerCount) && workerCount >= 1)) {
    throw new RangeError(`workers must be a whole number of at least 1; got ${workerCount}`);
  }
  const skipped = new SkipCollector();
  const unaligned = new SkipCollector();
  const detector = options.crops === 'aligned' ? await servedDetectorFile() : undefined;
  const faces = listFaces(await readdir(folder, { withFileTypes: true }), skipped);

  const order = options.limit === undefined ? faces.map((_, i) => i) : subsetOrder(faces.map((f) => f.name), options.seed ?? DEFAULT_SUBSET_SEED);
  const wanted = Math.min(options.limit ?? faces.length, faces.length);
  const faceBytes = spec.height * spec.width * spec.channels;
  const decoded = new Map<number, Uint8Array>();
  const progress = createProgress({ label: `decoding ${basename(folder)}`, total: wanted, enabled: options.progress });
  let next = 0;
  let attempted = 0;
  while (decoded.size < wanted && next < order.length) {
    const round = order.slice(next, next + wanted - decoded.size);
    next += round.length;
    const before = attempted;
    const result = await decodeFiles(round.map((i) => join(folder, faces[i].name)), spec, workerCount, detector, (done) => progress.update(Math.min(before + done, wanted)));
    attempted += round.length;
    round.forEach((faceIndex, k) => {
      const failure = result.failures[k];
      if (failure === null) decoded.set(faceIndex, result.pixels.subarray(k * faceBytes, (k + 1) * faceBytes));
      else skipped.add(faces[faceIndex].name, failure.reason, failure.detail);
      const kept = result.unaligned[k];
      if (failure === null && kept !== null) unaligned.add(faces[faceIndex].name, kept.reason, kept.detail);
    });
  }
  progress.finish();

  const kept = [...decoded.keys()].sort((a, b) => a - b);
  const dataset: Dataset = {
    spec: { ...spec },
    count: kept.length,
    pixels: new Uint8Array(kept.length * faceBytes),
    ages: new Uint8Array(kept.length),
    genders: new Uint8Array(kept.length),
    ethnicities: new Uint8Array(kept.length),
    names: [],
    skipped: skipped.toReport(),
    ...(detector === undefined ? {} : { unaligned: unaligned.toReport() }),
  };
  kept.forEach((faceIndex, i) => {
    const face = faces[faceIndex];
    dataset.pixels.set(decoded.get(faceIndex)!, i * faceBytes);
    dataset.ages[i] = face.labels.age;
    dataset.genders[i] = face.labels.gender;
    dataset.ethnicities[i] = face.labels.ethnicity;
    dataset.names.push(face.name);
  });
  return dataset;
}

interface NamedFace {
  name: string;
  labels: FaceLabels;
}

/** The well-named image files of a folder listing, in name order; everything else goes to `skipped`. */
function listFaces(entries: Dirent[], skipped: SkipCollector): NamedFace[] {
  const faces: NamedFace[] = [];
  const sorted = [...entries].sort((a, b) => compareNames(a.name, b.name));
  for (const entry of sorted) {
    const { name } = entry;
    if (entry.isDirectory()) {
      skipped.add(`${name}/`, 'subfolder');
      continue;
    }
    if (!entry.isFile() && !entry.isSymbolicLink()) {
      skipped.add(name, 'not a regular file');
      continue;
    }
    if (!IMAGE_EXTENSIONS.includes(extname(name).toLowerCase())) {
      skipped.add(name, 'not an image file', `extension "${extname(name)}", expected one of: ${IMAGE_EXTENSIONS.join(', ')}`);
      continue;
    }
    const parsed = parseUtkFaceName(name);
    if ('reason' in parsed) skipped.add(name, parsed.reason, parsed.detail);
    else faces.push({ name, labels: parsed.labels });
  }
  return faces;
}

const BATCH_SIZE = 32;
/** Fewer files than this are decoded on the calling thread: starting a worker (tsx, jimp) costs more. */
export const MIN_FILES_FOR_WORKERS = 2 * BATCH_SIZE;
/** Batches queued per worker, so that none waits for the main thread between batches. */
const IN_FLIGHT_PER_WORKER = 2;

interface DecodedFiles {
  /** paths.length faces, in the order of `paths` */
  pixels: Uint8Array;
  failures: DecodedBatch['failures'];
  unaligned: DecodedBatch['unaligned'];
}

/**
 * Decodes and preprocesses files in `workerCount` worker threads (on this thread when there are only a few); with
 * `detector`, cuts each face out as the server does.
 */
async function decodeFiles(paths: string[], spec: InputSpec, workerCount: number, detector: ServedDetectorFile | undefined, onProgress: (done: number) => void): Promise<DecodedFiles> {
  const faceBytes = spec.height * spec.width * spec.channels;
  const result: DecodedFiles = { pixels: new Uint8Array(paths.length * faceBytes), failures: new Array(paths.length).fill(null), unaligned: new Array(paths.length).fill(null) };
  if (paths.length < MIN_FILES_FOR_WORKERS) {
    const cropper = detector === undefined ? undefined : await openAlignedCropper(detector);
    try {
      for (let i = 0; i < paths.length; i++) {
        const loaded = await loadFaceFile(paths[i], spec, cropper);
        if ('bytes' in loaded) {
          result.pixels.set(loaded.bytes, i * faceBytes);
          result.unaligned[i] = loaded.unaligned;
        } else {
          result.failures[i] = loaded;
        }
        onProgress(i + 1);
      }
    } finally {
      await cropper?.release();
    }
    return result;
  }
  const batchCount = Math.ceil(paths.length / BATCH_SIZE);
  const workers: Worker[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      let nextBatch = 0;
      let done = 0;
      let finished = false;
      const feed = (worker: Worker): void => {
        if (nextBatch >= batchCount) return;
        const start = nextBatch * BATCH_SIZE;
        const request: DecodeBatch = { batch: nextBatch++, paths: paths.slice(start, start + BATCH_SIZE) };
        worker.postMessage(request);
      };
      for (let w = 0; w < Math.min(workerCount, batchCount); w++) {
        const worker = startDecodeWorker(spec, detector);
        workers.push(worker);
        worker.on('message', (reply: DecodedBatch) => {
          const start = reply.batch * BATCH_SIZE;
          result.pixels.set(reply.pixels, start * faceBytes);
          reply.failures.forEach((failure, k) => (result.failures[start + k] = failure));
          reply.unaligned.forEach((kept, k) => (result.unaligned[start + k] = kept));
          done += reply.failures.length;
          onProgress(done);
          if (done === paths.length) {
            finished = true;
            resolve();
          } else {
            feed(worker);
          }
        });
        worker.on('error', (error) => reject(new Error(`A decode worker failed: ${error.message}`, { cause: error })));
        worker.on('exit', (code) => {
          if (!finished) reject(new Error(`A decode worker exited with code ${code} before finishing`));
        });
        for (let k = 0; k < IN_FLIGHT_PER_WORKER; k++) feed(worker);
      }
    });
  } finally {
    await Promise.all(workers.map((worker) => worker.terminate()));
  }
  return result;
}

function startDecodeWorker(spec: InputSpec, detector: ServedDetectorFile | undefined): Worker {
  const workerData: DecodeWorkerData = { role: 'utkface-decode', spec, ...(detector === undefined ? {} : { detector: { bytes: detector.bytes, entry: detector.entry } }) };
  return startTsWorker(new URL('./decode-worker.ts', import.meta.url), workerData);
}
