/**
 * A decode thread: decodes an upload with sharp (imaging/photo-decode.ts: header and size limits first, EXIF
 * orientation, shrink-on-load), then prepares what the models read: with detection, the detector's input and
 * the decoded pixels (the faces are cut from them once found); without, the whole image preprocessed once per
 * input spec, as one face.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { InputTransform } from '../contract/face/blazeface.ts';
import { firstDetectorInput } from '../contract/face/photo.ts';
import { ImageDecodeError, type ImageDecodeFailure } from '../contract/image-header.ts';
import { preprocess, type InputSpec, type PixelBuffer } from '../contract/preprocess.ts';
import { decodePhoto, ImageSizeError } from '../imaging/photo-decode.ts';

export interface DecodeWorkerData {
  specs: InputSpec[];
  maxPixels: number;
  minImageSide: number;
  /** the detector's square input side, where the server has a detector */
  detectorInputSize?: number;
}

export interface DecodeRequest {
  id: number;
  bytes: Uint8Array;
  /** whether to prepare the detector's input (else the image is one face) */
  detect: boolean;
}

/** What a decoded photo gives the models. */
export type PhotoInputs =
  | { kind: 'whole'; inputs: Float32Array[] }
  | { kind: 'detect'; detectorInput: Float32Array; transform: InputTransform; pixels: PixelBuffer & { data: Uint8Array } };

export interface DecodedPhotoReply {
  /** the photo's size after EXIF orientation */
  width: number;
  height: number;
  /** photo pixels per decoded pixel */
  scale: number;
  format: string;
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

const { specs, maxPixels, minImageSide, detectorInputSize } = workerData as DecodeWorkerData;

async function decodeOne(bytes: Uint8Array, detect: boolean): Promise<DecodedPhotoReply> {
  const started = performance.now();
  const photo = await decodePhoto(bytes, { maxPixels, minImageSide });
  let prepared: PhotoInputs;
  if (detect && detectorInputSize !== undefined) {
    const { input, transform } = firstDetectorInput(photo.pixels, detectorInputSize);
    prepared = { kind: 'detect', detectorInput: input, transform, pixels: { ...photo.pixels, data: Uint8Array.from(photo.pixels.data) } };
  } else {
    prepared = { kind: 'whole', inputs: specs.map((spec) => preprocess(photo.pixels, spec)) };
  }
  return { width: photo.width, height: photo.height, scale: photo.scale, format: photo.format, ms: performance.now() - started, prepared };
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
  return [prepared.detectorInput.buffer as ArrayBuffer, prepared.pixels.data.buffer as ArrayBuffer];
}

const port = parentPort;
if (port === null) throw new Error('decode-worker.ts runs as a worker thread');
port.on('message', (request: DecodeRequest) => {
  decodeOne(request.bytes, request.detect).then(
    (photo) => port.postMessage({ id: request.id, ok: true, ...photo } satisfies DecodeReply, transferables(photo.prepared)),
    (error: unknown) => port.postMessage({ id: request.id, ok: false, ...describeFailure(error) } satisfies DecodeReply),
  );
});
port.postMessage('ready');
