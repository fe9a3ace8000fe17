/**
 * From a decoded photo to the faces the attribute models read, and the answer's shape: the steps the server
 * and the page both take, so that the two find the same faces and cut the same crops.
 *
 *   const faces = await detectFaces(pixels, runDetector, { minScore, maxFaces });   // largest first
 *   const crops = faces.map((face) => cropFace(pixels, face, specs));                // per face: crops or why not
 *   ...run the attribute models on each crop...
 *   faceAnswer(face, scale, predictionsOrReason)                                     // in the photo's pixels
 */
import type { TaskPrediction, Timings } from '../prediction.ts';
import type { InputSpec, PixelBuffer } from '../preprocess.ts';
import { alignFace, alignmentProblem } from './align.ts';
import { BLAZEFACE_INPUT_SIZE, blazefaceInput, decodeDetections, DEFAULT_MAX_FACES, DEFAULT_MIN_SCORE, type Box, type DetectedFace, type FaceLandmarks, type InputTransform, type OutputTensor, type Point } from './blazeface.ts';

export { DEFAULT_MAX_FACES, DEFAULT_MIN_SCORE };

/** Runs the detector on its input ([1, size, size, 3] NHWC) and returns its outputs. */
export type RunDetector = (input: Float32Array, inputSize: number) => Promise<readonly OutputTensor[]>;

export interface FaceSearch {
  /** faces scoring below this are not reported */
  minScore: number;
  /** at most this many faces, the largest */
  maxFaces: number;
}

/** The detector's input for the whole photo, where it was prepared elsewhere (the server's decode thread). */
export interface PreparedDetectorInput {
  input: Float32Array;
  transform: InputTransform;
}

/** Boxes and landmarks are rounded to this many decimals in answers. */
const POSITION_DECIMALS = 1;

/** The faces in `pixels`, largest box first, in `pixels`' coordinates. */
export async function detectFaces(pixels: PixelBuffer, run: RunDetector, search: FaceSearch, prepared?: PreparedDetectorInput, inputSize = BLAZEFACE_INPUT_SIZE): Promise<DetectedFace[]> {
  const { input, transform } = prepared ?? blazefaceInput(pixels, { inputSize });
  // Suppression keeps the best-scored faces; the answer lists the largest first, which is the face a caller usually means.
  const faces = decodeDetections(await run(input, transform.inputSize), transform, { minScore: search.minScore, maxFaces: search.maxFaces });
  return faces.sort((a, b) => b.box.width * b.box.height - a.box.width * a.box.height);
}

/** A face's crop for each input spec (bytes as `preprocessToBytes` gives for a UTKFace crop), or why it is not judged. */
export type FaceCrops = { crops: Uint8Array[] } | { reason: string };

export function cropFace(pixels: PixelBuffer, face: DetectedFace, specs: readonly InputSpec[]): FaceCrops {
  const reason = alignmentProblem(face.landmarks, pixels);
  if (reason !== null) return { reason };
  return { crops: specs.map((spec) => alignFace(pixels, face.landmarks, spec)) };
}

/** Where a face is, in the photo's pixels. `score` and `landmarks` are null where no detector ran (`detect=none`). */
export interface FacePosition {
  box: Box;
  score: number | null;
  landmarks: Record<keyof FaceLandmarks, Point> | null;
}

/** One face's answer: its position, then each task's prediction, or `reason` where the face was not judged. */
export type FacePrediction = FacePosition & { reason?: string } & { [task: string]: TaskPrediction | unknown };

export interface PhotoTimings extends Timings {
  /** running the detector and decoding its outputs; 0 with `detect=none` */
  detect: number;
  /** cutting the faces out */
  align: number;
}

/** POST /v1/predict's answer and the page's: the photo's size, its faces (largest first) and the timings. */
export interface PhotoPrediction {
  image: { width: number; height: number };
  faces: FacePrediction[];
  timingsMs: PhotoTimings;
}

const round = (value: number): number => {
  const factor = 10 ** POSITION_DECIMALS;
  return Math.round(value * factor) / factor;
};

/** A detected face's position in the photo, whose pixels are `scale` times those the face was found in. */
export function facePosition(face: DetectedFace, scale: number): FacePosition {
  const point = ([x, y]: Point): Point => [round(x * scale), round(y * scale)];
  const landmarks = Object.fromEntries(Object.entries(face.landmarks).map(([name, p]) => [name, point(p)])) as Record<keyof FaceLandmarks, Point>;
  const { x, y, width, height } = face.box;
  return { box: { x: round(x * scale), y: round(y * scale), width: round(width * scale), height: round(height * scale) }, score: Math.round(face.score * 1e4) / 1e4, landmarks };
}

/** The position `detect=none` answers: the whole photo is the face. */
export function wholeImagePosition(width: number, height: number): FacePosition {
  return { box: { x: 0, y: 0, width, height }, score: null, landmarks: null };
}

/** A face's answer from its position and its tasks' predictions (in task order) or the reason it was not judged. */
export function faceAnswer(position: FacePosition, judged: Record<string, TaskPrediction> | { reason: string }): FacePrediction {
  return { ...position, ...judged };
}
