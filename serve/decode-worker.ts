/**
 * A decode thread: decodes an upload with sharp (imaging/photo-decode.ts: header and size limits first, EXIF
 * orientation, shrink-on-load), then prepares what the models read: with detection, it finds the faces with its
 * own detector session (contract/face/photo.ts `detectFaces`, both passes), cuts each out for every input spec
 * (`cropFace`) and hands back the faces with their inputs; without, the whole image preprocessed once per input
 * spec, as one face.
 * onnxruntime-node runs a session on the thread that calls it, so the detector runs here, beside decoding,
 * rather than on the main thread that serves every request.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { DetectedFace } from '../contract/face/blazeface.ts';
import { cropFace, detectFaces, firstDetectorInput, type FaceSearch, type RunDetector } from '../contract/face/photo.ts';
import { ImageDecodeError, type ImageDecodeFailure } from '../contract/image-header.ts';
import { preprocess, scaleBytes, type InputSpec } from '../contract/preprocess.ts';
import { decodePhoto, ImageSizeError } from '../imaging/photo-decode.ts';
import { openDetectorSessions } from '../node-shared/detector-sessions.ts';

/** The face detector a thread runs: the model set's verified bytes, and what the main thread read from its session. */
export interface ThreadDetector {
  bytes: Uint8Array;
  inputName: string;
  /** its square input's side */
  inputSize: number;
}

export interface DecodeWorkerData {
  specs: InputSpec[];
  maxPixels: number;
  minImageSide: number;
  /** where the server has a detector; without one the thread creates no session */
  detector?: ThreadDetector;
}

export interface DecodeRequest {
  id: number;
  bytes: Uint8Array;
  /** find the faces with these limits; false: the image is one face */
  search: FaceSearch | false;
}

/** What a decoded photo gives the models. */
export type PhotoInputs =
  | { kind: 'whole'; inputs: Float32Array[] }
  /**
   * the faces found, in the decoded pixels' coordinates, largest first, each cut out and scaled for every input
   * spec or with why not; `detectMs` and `alignMs` are the detector's and the cutting's time here
   */
  | { kind: 'faces'; faces: FoundFaceInputs[]; detectMs: number; alignMs: number };

/** A found face with the models' inputs cut from it (cropFace, scaled), or the reason it is not judged. */
export type FoundFaceInputs = { face: DetectedFace; inputs: Float32Array[] } | { face: DetectedFace; reason: string };

export interface DecodedPhotoReply {
  /** the photo's size after EXIF orientation */
  width: number;
  height: number;
  /** photo pixels per decoded pixel */
  scale: number;
  format: string;
  /** decoding and preparing the model inputs (the detector's time is not counted here) */
  ms: number;
  prepared: PhotoInputs;
}

export type DecodeReply = ({ id: number; ok: true } & DecodedPhotoReply) | { id: number; ok: false; code: string; message: string };

/** The error code (see errors.ts) of each reason the decoder gives. */
const CODE_OF: Record<ImageDecodeFailure, string> = {
  empty: 'empty_body',
  'unsupported-format': 'unsupported_image_format',
  truncated: 'corrupt_image',
  corrupt: 'corrupt_image',
  'too-large': 'image_too_large',
};

/** One intra-op thread: the decode threads already take a core each. */
const DETECTOR_INTRA_OP_THREADS = 1;

const { specs, maxPixels, minImageSide, detector } = workerData as DecodeWorkerData;

/** The detector as this thread runs it. */
interface FaceFinder {
  runDetector: RunDetector;
  inputSize: number;
}

async function startDetector(spec: ThreadDetector): Promise<FaceFinder> {
  const { run: runDetector, inputSize } = await openDetectorSessions(spec.bytes, DETECTOR_INTRA_OP_THREADS);
  return { runDetector, inputSize };
}

async function decodeOne(bytes: Uint8Array, search: FaceSearch | false, finder: FaceFinder | undefined): Promise<DecodedPhotoReply> {
  const started = performance.now();
  const photo = await decodePhoto(bytes, { maxPixels, minImageSide });
  const reply = (ms: number, prepared: PhotoInputs): DecodedPhotoReply => ({ width: photo.width, height: photo.height, scale: photo.scale, format: photo.format, ms, prepared });
  if (search === false || finder === undefined) {
    return reply(performance.now() - started, { kind: 'whole', inputs: specs.map((spec) => preprocess(photo.pixels, spec)) });
  }
  const { pixels } = photo;
  const prepared = firstDetectorInput(pixels, finder.inputSize);
  const detectStarted = performance.now();
  const found = await detectFaces(pixels, finder.runDetector, search, prepared, finder.inputSize);
  // Cut here too, so that the main thread, which runs the attribute models for every request, only judges.
  const alignStarted = performance.now();
  const faces = found.map((face): FoundFaceInputs => {
    const crop = cropFace(pixels, face, specs, photo.scale);
    return 'reason' in crop ? { face, reason: crop.reason } : { face, inputs: crop.crops.map((bytes, i) => scaleBytes(bytes, specs[i])) };
  });
  return reply(detectStarted - started, { kind: 'faces', faces, detectMs: alignStarted - detectStarted, alignMs: performance.now() - alignStarted });
}

function describeFailure(error: unknown): { code: string; message: string } {
  if (error instanceof ImageSizeError) return { code: error.problem.code, message: error.message };
  if (error instanceof ImageDecodeError) {
    const message = error.reason === 'truncated' && !/truncated/.test(error.message) ? `${error.message}; the file may be truncated or corrupted` : error.message;
    return { code: CODE_OF[error.reason], message };
  }
  return { code: 'internal', message: error instanceof Error ? error.message : String(error) };
}

/** The buffers a reply hands over to the main thread rather than copying. */
function transferables(prepared: PhotoInputs): ArrayBuffer[] {
  if (prepared.kind === 'whole') return prepared.inputs.map((input) => input.buffer as ArrayBuffer);
  return prepared.faces.flatMap((face) => ('inputs' in face ? face.inputs.map((input) => input.buffer as ArrayBuffer) : []));
}

const port = parentPort;
if (port === null) throw new Error('decode-worker.ts runs as a worker thread');
// The thread reports ready once its detector session exists: a model that fails to open fails the pool's start.
const finder = detector === undefined ? undefined : await startDetector(detector);
port.on('message', (request: DecodeRequest) => {
  decodeOne(request.bytes, request.search, finder).then(
    (photo) => port.postMessage({ id: request.id, ok: true, ...photo } satisfies DecodeReply, transferables(photo.prepared)),
    (error: unknown) => port.postMessage({ id: request.id, ok: false, ...describeFailure(error) } satisfies DecodeReply),
  );
});
port.postMessage('ready');
