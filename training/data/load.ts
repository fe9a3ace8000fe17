/**
 * The one entry point for training data: a UTKFace folder or a Kaggle CSV, preprocessed for an InputSpec,
 * through a binary cache so that the second run reads one file instead of decoding 20,000 images.
 */
import { createHash } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { PREPROCESSING_VERSION, type InputSpec } from '../../contract/preprocess.ts';
import { DEFAULT_UTKFACE } from '../../node-shared/paths.ts';
import type { Dataset, LoadOptions, SkipReport } from './dataset.ts';
import { DEFAULT_SUBSET_SEED, formatDuration, validateLimit } from './ingest.ts';
import { assertCsvServes, loadKaggleCsv } from './kaggle-csv.ts';
import { loadUtkFace } from './utkface.ts';
import { alignedCropsKey, servedDetectorFile } from './aligned-crops.ts';

export const DEFAULT_CACHE_DIR = join('.cache', 'datasets');

/**
 * The usage error of a program run without --data where the default folder is absent: where UTKFace comes from,
 * the layouts --data takes (`takesCsv`: whether this program reads the Kaggle CSV too), and how to point at it.
 */
export function missingDataMessage(takesCsv: boolean): string {
  return [
    `--data is required: there is no UTKFace folder at ${DEFAULT_UTKFACE} (the default: ../shared/data/utkface beside the repository).`,
    'UTKFace comes from the UTKFace project (https://susanqq.github.io/UTKFace/): its "Aligned & Cropped Faces" set.',
    '--data takes:',
    '  - a folder of {age}_{gender}_{race}_{date&time}.jpg.chip.jpg files (that set, unpacked), e.g. 26_1_2_20170116174525125.jpg.chip.jpg',
    ...(takesCsv
      ? [
          '  - Kaggle\'s age_gender.csv ("Age, Gender and Ethnicity (Face Data) CSV"): the same faces, 48x48 grayscale, for the',
          '    residual and seed presets (`npm run convert:csv` writes one from a folder)',
        ]
      : []),
    'Unpack the folder there, or pass --data PATH.',
  ].join('\n');
}

/** Bumped when the cache layout, or decoding (jimp), changes what a cache file holds. */
const CACHE_FORMAT_VERSION = 1;
const CACHE_MAGIC = 'FACEDSv1';

type SourceKind = 'utkface' | 'csv';

/**
 * Loads `source` (a UTKFace folder or a `.csv` in the Kaggle format) preprocessed for `spec`.
 * Prints a summary on stderr (or to `options.log`): faces loaded, skips by reason with examples, cache hit or miss.
 */
export async function loadDataset(source: string, spec: InputSpec, options: LoadOptions = {}): Promise<Dataset> {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  validateLimit(options.limit);
  const path = resolve(source);
  const kind = await sourceKind(source, path);
  if (kind === 'csv') assertCsvServes(spec, path);
  if (kind === 'csv' && options.crops === 'aligned') throw new Error(`Aligned crops are cut from UTKFace's images; ${path} is a CSV of 48x48 faces`);

  const started = performance.now();
  let dataset: Dataset | undefined;
  let status: NonNullable<Dataset['cache']>['status'] = 'off';
  let cacheFile: string | undefined;
  let key = '';
  if (options.cacheDir !== false) {
    key = await cacheKey(kind, path, spec, options);
    const name = options.crops === 'aligned' ? `${kind}-aligned` : kind;
    cacheFile = join(resolve(options.cacheDir ?? DEFAULT_CACHE_DIR), `${name}-${slug(basename(path))}-${key.slice(0, 16)}.bin`);
    const cached = await readCache(cacheFile, key, spec);
    if (cached.dataset !== undefined) {
      dataset = cached.dataset;
      status = 'hit';
    } else {
      status = cached.problem === undefined ? 'written' : 'rebuilt';
      if (cached.problem !== undefined) log(`dataset cache ${cacheFile} is unusable (${cached.problem}); rebuilding it`);
    }
  }
  if (dataset === undefined) {
    dataset = kind === 'csv' ? await loadKaggleCsv(path, spec, options) : await loadUtkFace(path, spec, options);
    if (dataset.count === 0) {
      throw new Error(`No faces could be loaded from ${path}: ${describeSkips(dataset.skipped) || 'it holds no entries'}`);
    }
    if (cacheFile !== undefined) {
      try {
        await writeCache(cacheFile, key, dataset);
      } catch (error) {
        status = 'off';
        log(`dataset cache not written (${(error as Error).message}); the next run decodes again`);
      }
    }
  }
  dataset.cache = cacheFile === undefined ? { status } : { status, file: cacheFile };
  summarize(dataset, path, (performance.now() - started) / 1000, log);
  return dataset;
}

async function sourceKind(source: string, path: string): Promise<SourceKind> {
  let info;
  try {
    info = await stat(path);
  } catch {
    throw new Error(`Data source "${source}" does not exist (looked at ${path}); expected a UTKFace folder or a Kaggle age_gender.csv file`);
  }
  if (info.isDirectory()) return 'utkface';
  if (info.isFile() && extname(path).toLowerCase() === '.csv') return 'csv';
  throw new Error(`Data source "${source}" is neither a folder nor a .csv file; expected a UTKFace folder or a Kaggle age_gender.csv file`);
}

function summarize(dataset: Dataset, path: string, seconds: number, log: (line: string) => void): void {
  const { status, file } = dataset.cache ?? { status: 'off' };
  const how = status === 'off' ? 'cache off' : `cache ${status === 'written' ? 'miss, written' : status}: ${file}`;
  const took = seconds < 60 ? `${seconds.toFixed(1)} s` : formatDuration(seconds);
  log(`loaded ${dataset.count.toLocaleString('en-US')} faces from ${path} in ${took} (${how})`);
  if (dataset.skipped.count > 0) {
    log(`skipped ${dataset.skipped.count.toLocaleString('en-US')}: ${describeSkips(dataset.skipped)}`);
    for (const { entry, reason } of dataset.skipped.examples) log(`  e.g. ${entry}: ${reason}`);
  }
  if (dataset.unaligned !== undefined) {
    const kept = dataset.unaligned.count;
    log(`aligned crops: ${(dataset.count - kept).toLocaleString('en-US')} faces cut out as the server cuts them; ${kept.toLocaleString('en-US')} kept their UTKFace crop${kept === 0 ? '' : ` (${describeSkips(dataset.unaligned)})`}`);
    for (const { entry, reason } of dataset.unaligned.examples.slice(0, 3)) log(`  e.g. ${entry}: ${reason}`);
  }
}

function describeSkips(skipped: SkipReport): string {
  return Object.entries(skipped.byReason)
    .map(([reason, count]) => `${count} ${reason}`)
    .join(', ');
}

/** A hash of everything the cached bytes depend on. */
async function cacheKey(kind: SourceKind, path: string, spec: InputSpec, options: LoadOptions): Promise<string> {
  const hash = createHash('sha256');
  const limit = options.limit ?? null;
  hash.update(JSON.stringify({
    format: CACHE_FORMAT_VERSION,
    preprocessing: PREPROCESSING_VERSION,
    kind,
    path,
    spec: { height: spec.height, width: spec.width, channels: spec.channels, scaling: spec.scaling },
    limit,
    seed: limit === null ? null : (options.seed ?? DEFAULT_SUBSET_SEED),
    // absent for UTKFace's own crops, so that their caches keep their keys
    ...(options.crops === 'aligned' ? { crops: 'aligned', aligned: await alignedCropsKey(await servedDetectorFile()) } : {}),
  }));
  if (kind === 'csv') {
    const { size, mtimeMs } = await stat(path);
    hash.update(`\n${size} ${mtimeMs}`);
  } else {
    const names = (await readdir(path)).sort();
    const STAT_CONCURRENCY = 64;
    for (let i = 0; i < names.length; i += STAT_CONCURRENCY) {
      const chunk = names.slice(i, i + STAT_CONCURRENCY);
      const infos = await Promise.all(chunk.map((name) => stat(join(path, name)).catch(() => undefined)));
      chunk.forEach((name, k) => {
        const info = infos[k];
        hash.update(`\n${name}\0${info === undefined ? 'missing' : `${info.isDirectory() ? 'dir' : info.size} ${info.mtimeMs}`}`);
      });
    }
  }
  return hash.digest('hex');
}

function slug(name: string): string {
  return name.replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 40) || 'data';
}

/*
 * Cache file layout: magic (8 bytes) | header length (u32 LE) | header JSON | payload.
 * Payload: pixels (count x face bytes) | ages | genders | ethnicities (count bytes each) | names JSON.
 * The header holds the key, spec, count, skip report, names length and the payload's SHA-256, so that a
 * truncated, extended or corrupted file is recognised and rebuilt.
 */
interface CacheHeader {
  key: string;
  spec: InputSpec;
  count: number;
  skipped: SkipReport;
  namesBytes: number;
  payloadSha256: string;
  /** aligned crops only: the faces that kept their UTKFace crop */
  unaligned?: SkipReport;
}

async function writeCache(file: string, key: string, dataset: Dataset): Promise<void> {
  const utf8 = new TextEncoder();
  const names = utf8.encode(JSON.stringify(dataset.names));
  const parts = [dataset.pixels, dataset.ages, dataset.genders, dataset.ethnicities, names];
  const digest = createHash('sha256');
  for (const part of parts) digest.update(part);
  const header: CacheHeader = {
    key,
    spec: dataset.spec,
    count: dataset.count,
    skipped: dataset.skipped,
    namesBytes: names.length,
    payloadSha256: digest.digest('hex'),
    ...(dataset.unaligned === undefined ? {} : { unaligned: dataset.unaligned }),
  };
  const headerBytes = utf8.encode(JSON.stringify(header));
  const prefix = new Uint8Array(12);
  prefix.set(utf8.encode(CACHE_MAGIC));
  new DataView(prefix.buffer).setUint32(8, headerBytes.length, true);

  await mkdir(dirname(file), { recursive: true });
  // Written aside and renamed, so a crash or a concurrent reader never sees half a file.
  const partial = `${file}.${process.pid}.partial`;
  const handle = await open(partial, 'w');
  try {
    for (const part of [prefix, headerBytes, ...parts]) await handle.write(part);
  } finally {
    await handle.close();
  }
  try {
    await rename(partial, file);
  } catch (error) {
    await rm(partial, { force: true });
    throw error;
  }
}

/** The cached dataset, or undefined with the reason the file cannot be used (no reason: no file). */
async function readCache(file: string, key: string, spec: InputSpec): Promise<{ dataset?: Dataset; problem?: string }> {
  let bytes: Uint8Array;
  try {
    const contents = await readFile(file);
    bytes = new Uint8Array(contents.buffer, contents.byteOffset, contents.byteLength);
  } catch {
    return {};
  }
  const utf8 = new TextDecoder();
  if (bytes.length < 12 || utf8.decode(bytes.subarray(0, 8)) !== CACHE_MAGIC) return { problem: 'not a dataset cache file' };
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset, 12).getUint32(8, true);
  if (12 + headerLength > bytes.length) return { problem: 'truncated header' };
  let header: CacheHeader;
  try {
    header = JSON.parse(utf8.decode(bytes.subarray(12, 12 + headerLength))) as CacheHeader;
  } catch {
    return { problem: 'unreadable header' };
  }
  if (header.key !== key) return { problem: 'made for other data or settings' };
  const faceBytes = spec.height * spec.width * spec.channels;
  const { count, namesBytes } = header;
  if (!Number.isSafeInteger(count) || !Number.isSafeInteger(namesBytes) || count < 0 || namesBytes < 0) {
    return { problem: 'bad header' };
  }
  const payloadStart = 12 + headerLength;
  const expected = payloadStart + count * (faceBytes + 3) + namesBytes;
  if (bytes.length !== expected) return { problem: `${bytes.length} bytes, expected ${expected}` };
  const payload = bytes.subarray(payloadStart);
  if (createHash('sha256').update(payload).digest('hex') !== header.payloadSha256) return { problem: 'checksum mismatch' };

  // Copies that own their memory, so that the file's buffer can be freed and arrays transferred.
  let at = 0;
  const take = (length: number): Uint8Array => new Uint8Array(payload.subarray(at, (at += length)));
  const pixels = take(count * faceBytes);
  const ages = take(count);
  const genders = take(count);
  const ethnicities = take(count);
  let names: unknown;
  try {
    names = JSON.parse(utf8.decode(payload.subarray(at, at + namesBytes)));
  } catch {
    return { problem: 'unreadable names' };
  }
  if (!Array.isArray(names) || names.length !== count || !names.every((name) => typeof name === 'string')) {
    return { problem: 'names do not match the count' };
  }
  const unaligned = header.unaligned === undefined ? {} : { unaligned: header.unaligned };
  return { dataset: { spec: { ...spec }, count, pixels, ages, genders, ethnicities, names: names as string[], skipped: header.skipped, ...unaligned } };
}
