/**
 * From a decoded photo to the faces the attribute models read, and the answer's shape: the steps the server
 * and the page both take, so that the two find the same faces and cut the same crops.
 *
 *   const faces = await detectFaces(pixels, runDetector, { minScore, maxFaces });   // largest first
 *                                   // one detector pass on the photo as it is; a second, padded, when it finds no
 *                                   // face or a face filling the frame (a portrait); a photo no larger than the
 *                                   // detector's input is a face crop: one pass, padded, at a smaller side
 *                                   // (firstDetectorInput), again at the full side when it finds no face filling it
 *   const crops = faces.map((face) => cropFace(pixels, face, specs));                // per face: crops or why not
 *   ...run the attribute models on each crop...
 *   faceAnswer(face, scale, predictionsOrReason)                                     // in the photo's pixels
 */
import type { TaskPrediction, Timings } from '../prediction.ts';
import type { InputSpec, PixelBuffer } from '../preprocess.ts';
import { alignFace, alignmentProblem } from './align.ts';
import { BLAZEFACE_INPUT_SIZE, blazefaceInput, decodeDetections, DEFAULT_IOU_THRESHOLD, DEFAULT_MAX_FACES, DEFAULT_MIN_SCORE, padDetectorInput, weightedNonMaxSuppression, type Box, type DetectedFace, type FaceLandmarks, type InputTransform, type OutputTensor, type Point } from './blazeface.ts';

export { DEFAULT_MAX_FACES, DEFAULT_MIN_SCORE };

/**
 * Chosen on training-split crops and scenes (training/bench/face-detect.ts, face-scenes.ts). A face crop padded 2x:
 * its face is found as often as at 1.5x, with the eyes placed closer to the template. A larger photo's second pass
 * padded 1.5x: on 600 training-split scenes it finds 99.67% of the faces with no false one, where 2x finds 99.53%
 * with 0.2 false faces per 100 scenes. A face box of 0.45 of the shorter side calls for the second pass on nearly
 * every crop and leaves every scene face found.
 */
const CROP_PADDING = 2;
const SECOND_PASS_PADDING = 1.5;
const LARGE_FACE_FRACTION = 0.45;
/**
 * Photos no larger than the detector's input a side are taken as face crops (a UTKFace crop is 200x200): they get
 * one pass, padded as the second pass would pad them, which finds every training-split crop's face (face-detect.ts);
 * one detector run instead of two is what keeps a server of face crops fast.
 */
const CROP_SIZED_SIDE = BLAZEFACE_INPUT_SIZE;
/**
 * A face crop's pass runs the detector resized to this input side first (contract/face/detector-resize.ts), a
 * fraction of the 256 side's cost, which is most of a face crop's work in the server. It is trusted only when it
 * finds a face filling the photo (a box side of at least CROP_SIDE_TRUSTED_FRACTION of the shorter side, as in a
 * tight face crop); otherwise the photo is searched again at the detector's own side, which finds the smaller
 * faces of a crop-sized photo that the small side misses. Both chosen on training-split crops
 * (docs/benchmarks.md has the figures and the commands).
 */
export const CROP_DETECTOR_SIDE = 128;
const CROP_SIDE_TRUSTED_FRACTION = 0.8;
/** The detector sometimes reports part of a face (eyes and nose) as a second, smaller face inside it. */
const NESTED_FACE_RATIO = 1.5;

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

/**
 * When to look again with the photo padded: the detector misses many faces that fill the frame unpadded, and
 * finds small faces best unpadded (training/bench/face-detect.ts and face-scenes.ts measure both).
 */
export interface CropPass {
  /** the second pass's padding, a multiple of the photo's longer side */
  padding: number;
  /** the padding of a crop-sized photo's pass */
  cropPadding: number;
  /** the detector's input side for a crop-sized photo's first pass */
  cropInputSize: number;
  /** that pass is kept when it finds a face whose box side is at least this fraction of the shorter side; else the photo is searched again at the detector's own side */
  cropTrustedFraction: number;
  /** run it when the first pass finds no face, or a face whose box side is at least this fraction of the photo's shorter side */
  largeFaceFraction: number;
}

export const DEFAULT_CROP_PASS: CropPass = { padding: SECOND_PASS_PADDING, cropPadding: CROP_PADDING, cropInputSize: CROP_DETECTOR_SIDE, cropTrustedFraction: CROP_SIDE_TRUSTED_FRACTION, largeFaceFraction: LARGE_FACE_FRACTION };

/** Whether a photo is small enough to be taken as a face crop: one detector pass, padded (two when the first finds no face filling it). */
export function isCropSized(image: { width: number; height: number }): boolean {
  return Math.max(image.width, image.height) <= CROP_SIZED_SIDE;
}

/** The detector's first input for a photo: padded and at the crop pass's side for a crop-sized photo, as it is otherwise. */
export function firstDetectorInput(pixels: PixelBuffer, inputSize = BLAZEFACE_INPUT_SIZE, cropPass: CropPass | null = DEFAULT_CROP_PASS): PreparedDetectorInput {
  if (cropPass !== null && isCropSized(pixels)) return blazefaceInput(pixels, { inputSize: cropPass.cropInputSize, padding: cropPass.cropPadding });
  return blazefaceInput(pixels, { inputSize, padding: 1 });
}

/** The input sides a detector of side `inputSize` is run at: its own, and a face crop's first pass's. */
export function detectorSides(inputSize: number, cropPass: CropPass | null = DEFAULT_CROP_PASS): number[] {
  return cropPass === null || cropPass.cropInputSize === inputSize ? [inputSize] : [inputSize, cropPass.cropInputSize];
}

/**
 * One RunDetector over a session per input side (`detectorSides`), each made from the detector's bytes by
 * resizeDetectorGraph; `runSession` runs one with the input [1, side, side, 3].
 */
export function runnerBySide<S>(sessions: ReadonlyMap<number, S>, runSession: (session: S, input: Float32Array, side: number) => Promise<readonly OutputTensor[]>): RunDetector {
  return (input, side) => {
    const session = sessions.get(side);
    if (session === undefined) return Promise.reject(new Error(`No detector session reads a ${side}x${side} input; there are sessions for ${[...sessions.keys()].join(', ')}`));
    return runSession(session, input, side);
  };
}

/**
 * Why a manifest's detector cannot find faces with these steps, or undefined: they decode BlazeFace's outputs and
 * feed it a square NHWC RGB input. Checked at load, so that a wrong entry stops start-up instead of every request.
 */
export function detectorProblem(detector: { name: string; file: string; layout: 'nhwc' | 'nchw'; input: { height: number; width: number; channels: number } }): string | undefined {
  const { height, width, channels } = detector.input;
  if (detector.layout !== 'nhwc' || channels !== 3 || height !== width) {
    return `${detector.file} (detector "${detector.name}") reads ${detector.layout.toUpperCase()} [${height}, ${width}, ${channels}]; faces are found with a BlazeFace model that reads a square NHWC RGB image`;
  }
  return undefined;
}

/** Boxes and landmarks are rounded to this many decimals in answers, and the detector's score to this many. */
const POSITION_DECIMALS = 1;
const SCORE_DECIMALS = 4;

/**
 * The faces in `pixels`, largest box first, in `pixels`' coordinates: the detector on the photo as it is, and
 * again on it padded (`cropPass`) when that finds no face or one filling the frame; the passes' faces are merged
 * by the detector's own weighted suppression.
 */
export async function detectFaces(
  pixels: PixelBuffer,
  run: RunDetector,
  search: FaceSearch,
  prepared?: PreparedDetectorInput,
  inputSize = BLAZEFACE_INPUT_SIZE,
  cropPass: CropPass | null = DEFAULT_CROP_PASS,
): Promise<DetectedFace[]> {
  const first = prepared ?? firstDetectorInput(pixels, inputSize, cropPass);
  // Every face is decoded: maxFaces keeps the largest ones, chosen once the passes are merged and parts dropped.
  const options = { minScore: search.minScore, maxFaces: Number.POSITIVE_INFINITY };
  let faces = decodeDetections(await run(first.input, first.transform.inputSize), first.transform, options);
  if (cropPass !== null && isCropSized(pixels)) {
    // A face crop searched at the smaller side and not found filling it: searched again at the full side instead.
    const smallerSide = first.transform.inputSize !== inputSize;
    if (smallerSide && !faces.some((face) => fillsPhoto(face, pixels, cropPass.cropTrustedFraction))) {
      const full = blazefaceInput(pixels, { inputSize, padding: cropPass.cropPadding });
      faces = decodeDetections(await run(full.input, inputSize), full.transform, options);
    }
  } else if (cropPass !== null && needsCropPass(faces, pixels, cropPass)) {
    // Made from the first pass's input, not the photo's pixels again: a fraction of the cost, the same faces.
    const padded = padDetectorInput(first.input, first.transform, cropPass.padding);
    const framed = decodeDetections(await run(padded.input, padded.transform.inputSize), padded.transform, options);
    faces = weightedNonMaxSuppression([...framed, ...smallFacesApart(faces, framed, pixels, cropPass)], DEFAULT_IOU_THRESHOLD);
  }
  // The answer lists the largest first, which is the face a caller usually means, and keeps at most maxFaces of them.
  return withoutFacesInFaces(faces)
    .sort((a, b) => b.box.width * b.box.height - a.box.width * a.box.height)
    .slice(0, search.maxFaces);
}

/**
 * The unpadded pass's faces worth keeping beside the padded pass's: it is trusted for small faces only (on a face
 * filling the frame it reports parts of it), and not for one whose centre lies in a face the padded pass found.
 */
function smallFacesApart(unpadded: readonly DetectedFace[], framed: readonly DetectedFace[], image: { width: number; height: number }, cropPass: CropPass): DetectedFace[] {
  return unpadded.filter((face) => !isLargeFace(face, image, cropPass) && !framed.some((other) => centreInside(face, other)));
}

/** Faces don't nest: a face whose centre lies in the box of a face at least `NESTED_FACE_RATIO` times its side is a part of it. */
function withoutFacesInFaces(faces: DetectedFace[]): DetectedFace[] {
  const side = (face: DetectedFace): number => Math.max(face.box.width, face.box.height);
  return faces.filter((face) => !faces.some((other) => other !== face && side(other) >= NESTED_FACE_RATIO * side(face) && centreInside(face, other)));
}

function centreInside(face: DetectedFace, { box }: DetectedFace): boolean {
  const [x, y] = [face.box.x + face.box.width / 2, face.box.y + face.box.height / 2];
  return x >= box.x && x <= box.x + box.width && y >= box.y && y <= box.y + box.height;
}

function isLargeFace(face: DetectedFace, image: { width: number; height: number }, cropPass: CropPass): boolean {
  return fillsPhoto(face, image, cropPass.largeFaceFraction);
}

function fillsPhoto(face: DetectedFace, image: { width: number; height: number }, fraction: number): boolean {
  return Math.max(face.box.width, face.box.height) >= fraction * Math.min(image.width, image.height);
}

/** Whether the first pass's faces call for the padded pass: none, or one whose box fills most of the photo. */
export function needsCropPass(faces: readonly DetectedFace[], image: { width: number; height: number }, cropPass: CropPass): boolean {
  return faces.length === 0 || faces.some((face) => isLargeFace(face, image, cropPass));
}

/** A face's crop for each input spec (bytes as `preprocessToBytes` gives for a UTKFace crop), or why it is not judged. */
export type FaceCrops = { crops: Uint8Array[] } | { reason: string };

/** `scale` is photo pixels per pixel of `pixels` (a shrunk photo), so that "too small" is judged in the photo's pixels. */
export function cropFace(pixels: PixelBuffer, face: DetectedFace, specs: readonly InputSpec[], scale = 1): FaceCrops {
  const reason = alignmentProblem(face.landmarks, pixels, scale);
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

const roundTo = (value: number, decimals: number): number => {
  const factor = 10 ** decimals;
  return Math.round(value * factor) / factor;
};
const round = (value: number): number => roundTo(value, POSITION_DECIMALS);

/** A detected face's position in the photo, whose pixels are `scale` times those the face was found in. */
export function facePosition(face: DetectedFace, scale: number): FacePosition {
  const point = ([x, y]: Point): Point => [round(x * scale), round(y * scale)];
  const landmarks = Object.fromEntries(Object.entries(face.landmarks).map(([name, p]) => [name, point(p)])) as Record<keyof FaceLandmarks, Point>;
  const { x, y, width, height } = face.box;
  return { box: { x: round(x * scale), y: round(y * scale), width: round(width * scale), height: round(height * scale) }, score: roundTo(face.score, SCORE_DECIMALS), landmarks };
}

/** The position `detect=none` answers: the whole photo is the face. */
export function wholeImagePosition(width: number, height: number): FacePosition {
  return { box: { x: 0, y: 0, width, height }, score: null, landmarks: null };
}

/** A face's answer from its position and its tasks' predictions (in task order) or the reason it was not judged. */
export function faceAnswer(position: FacePosition, judged: Record<string, TaskPrediction> | { reason: string }): FacePrediction {
  return { ...position, ...judged };
}
