/**
 * Faces cut out as the server cuts them: a UTKFace file decoded as the server decodes an upload (sharp, EXIF
 * orientation, white under transparency), the detector the server loads (models/manifest.json's) run through
 * detectFaces, and the largest face aligned by cropFace (alignFace at the model's input size). Training on these
 * (`npm run train -- --crops aligned`) and measuring the shipped models on them (training/bench/aligned-crops.ts)
 * use this one function, so both see exactly what POST /v1/predict feeds the models.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cropFace, DEFAULT_CROP_PASS, DEFAULT_MAX_FACES, DEFAULT_MIN_SCORE, detectFaces, type CropPass } from '../../contract/face/photo.ts';
import { FACE_TEMPLATE } from '../../contract/face/template.ts';
import { DEFAULT_MAX_PIXELS, DEFAULT_MIN_IMAGE_SIDE } from '../../contract/limits.ts';
import { isDetectorEntry, type DetectorManifestEntry } from '../../contract/metadata.ts';
import { MANIFEST_FILE, parseManifest } from '../../contract/model-set.ts';
import { preprocessToBytes, type InputSpec, type PixelBuffer } from '../../contract/preprocess.ts';
import { decodePhoto } from '../../imaging/photo-decode.ts';
import { packageFilePath } from '../../node-shared/model-files.ts';
import { openDetectorSessions } from '../../node-shared/detector-sessions.ts';
import { REPO_ROOT } from '../../node-shared/paths.ts';

/** Which crops a run trains on: UTKFace's own, or the detector's aligned crops of them (as the server cuts faces). */
export type CropSource = 'utkface' | 'aligned';
export const CROP_SOURCES: readonly CropSource[] = ['utkface', 'aligned'];

/** The folder whose manifest names the detector the server loads. */
export const SERVED_MODELS_DIR = join(REPO_ROOT, 'models');

/**
 * The source files whose code makes an aligned crop (detection, its decoding, alignment, the template): their text
 * is part of the cache key, so that a change to any step the server takes makes the cached crops stale.
 */
const FACE_STEP_SOURCES = ['contract/face/photo.ts', 'contract/face/blazeface.ts', 'contract/face/align.ts', 'contract/face/template.ts', 'contract/face/detector-resize.ts', 'imaging/photo-decode.ts'];

/** The detector the server loads: its manifest entry, where its file is, and the file's bytes and sha256. */
export interface ServedDetectorFile {
  entry: DetectorManifestEntry;
  path: string;
  bytes: Uint8Array;
  sha256: string;
}

/** The first detector that `models/manifest.json` (or `dir`'s) lists, read from disk and hashed. */
export async function servedDetectorFile(dir = SERVED_MODELS_DIR): Promise<ServedDetectorFile> {
  const manifestPath = join(dir, MANIFEST_FILE);
  const entry = parseManifest(await readFile(manifestPath, 'utf8'), manifestPath).models.find(isDetectorEntry);
  if (entry === undefined) throw new Error(`${manifestPath} lists no detector; aligned crops need the one the server loads`);
  const path = entry.package !== undefined && entry.packagePath !== undefined ? packageFilePath(entry.package, entry.packagePath) : join(dir, entry.file);
  const buffer = await readFile(path);
  const bytes = new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  return { entry, path, bytes, sha256: createHash('sha256').update(bytes).digest('hex') };
}

/**
 * What the aligned crops of a folder depend on beyond the folder itself: the detector's sha256, the template, and
 * the text of the code that detects and aligns. A part of the dataset cache key.
 */
export async function alignedCropsKey(detector: Pick<ServedDetectorFile, 'sha256'>): Promise<string> {
  const hash = createHash('sha256');
  hash.update(JSON.stringify({ detector: detector.sha256, template: FACE_TEMPLATE, minScore: DEFAULT_MIN_SCORE, maxFaces: DEFAULT_MAX_FACES }));
  for (const file of FACE_STEP_SOURCES) hash.update(`\n${file}\n`).update(await readFile(join(REPO_ROOT, file)));
  return hash.digest('hex');
}

/** The served detector as `detectFaces` runs it, on one CPU thread, as each decode thread of the server does. */
export interface AlignedCropper {
  /** the crop at each of `specs` (one detection for all) */
  crop(image: PixelBuffer, specs: readonly InputSpec[]): Promise<AlignedCrops>;
  release(): Promise<void>;
}

/** A face's aligned crops, or its UTKFace crops (`preprocessToBytes`, the server's detect=none input) and why. */
export type AlignedCrops = { bytes: Uint8Array[]; aligned: true } | { bytes: Uint8Array[]; aligned: false; reason: typeof NO_FACE | typeof NOT_ALIGNED; detail?: string };

/** Why the UTKFace crop was kept: a count is kept per reason. */
export const NO_FACE = 'no face found';
export const NOT_ALIGNED = 'face not aligned';

export async function openAlignedCropper(detector: Pick<ServedDetectorFile, 'bytes' | 'entry'>, threads = 1, cropPass: CropPass = DEFAULT_CROP_PASS): Promise<AlignedCropper> {
  const sessions = await openDetectorSessions(detector.bytes, threads, cropPass);
  return {
    async crop(image, specs) {
      const whole = () => specs.map((spec) => preprocessToBytes(image, spec));
      const faces = await detectFaces(image, sessions.run, { minScore: DEFAULT_MIN_SCORE, maxFaces: DEFAULT_MAX_FACES }, undefined, detector.entry.input.height, cropPass);
      if (faces.length === 0) return { bytes: whole(), aligned: false, reason: NO_FACE };
      // The largest face, which detectFaces lists first: the one a caller of the server means.
      const cut = cropFace(image, faces[0], specs);
      if ('reason' in cut) return { bytes: whole(), aligned: false, reason: NOT_ALIGNED, detail: cut.reason };
      return { bytes: cut.crops, aligned: true };
    },
    release: () => sessions.release(),
  };
}

/** An image file's pixels as the server decodes an upload (imaging/photo-decode.ts with the server's default limits). */
export async function decodeAsServed(bytes: Uint8Array): Promise<PixelBuffer> {
  return (await decodePhoto(bytes, { maxPixels: DEFAULT_MAX_PIXELS, minImageSide: DEFAULT_MIN_IMAGE_SIDE })).pixels;
}
