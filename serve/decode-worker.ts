/**
 * A decode thread: reads the image header first (format, size) and refuses a format it cannot decode, then an
 * image too large or too small, before any pixel is allocated; then decodes with the shared decoder and
 * preprocesses once per input spec.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { decodeImage, ImageDecodeError, readDecodableHeader, type ImageDecodeFailure, type ImageHeader } from '../imaging/decode.ts';
import { imageSizeProblem } from '../contract/limits.ts';
import { preprocess, type InputSpec } from '../contract/preprocess.ts';

export interface DecodeWorkerData {
  specs: InputSpec[];
  maxPixels: number;
  minImageSide: number;
}

export interface DecodeRequest {
  id: number;
  bytes: Uint8Array;
}

export type DecodeReply =
  | { id: number; ok: true; inputs: Float32Array[]; width: number; height: number; format: string; ms: number }
  | { id: number; ok: false; code: string; message: string };

/** The error code (see errors.ts) of each reason the decoder gives. */
const CODE_OF: Record<ImageDecodeFailure, string> = {
  empty: 'empty_body',
  'unsupported-format': 'unsupported_image_format',
  truncated: 'corrupt_image',
  corrupt: 'corrupt_image',
  'too-large': 'image_too_large',
};

class RefusedImage extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const { specs, maxPixels, minImageSide } = workerData as DecodeWorkerData;

async function decodeOne(bytes: Uint8Array): Promise<Omit<Extract<DecodeReply, { ok: true }>, 'id' | 'ok'>> {
  const started = performance.now();
  const { format, width, height }: ImageHeader = readDecodableHeader(bytes);
  const problem = imageSizeProblem(width, height, { maxPixels, minImageSide });
  if (problem !== undefined) throw new RefusedImage(problem.code, `The ${format} image ${problem.predicate}`);
  // The decoder checks the header against the limit again, before it allocates the pixels.
  const pixels = await decodeImage(bytes, { maxPixels });
  const inputs = specs.map((spec) => preprocess(pixels, spec));
  return { inputs, width: pixels.width, height: pixels.height, format, ms: performance.now() - started };
}

function describeFailure(error: unknown): { code: string; message: string } {
  if (error instanceof RefusedImage) return { code: error.code, message: error.message };
  if (error instanceof ImageDecodeError) {
    const message = error.reason === 'truncated' || error.reason === 'corrupt' ? `${error.message}; the file may be truncated or corrupted` : error.message;
    return { code: CODE_OF[error.reason], message };
  }
  return { code: 'internal', message: error instanceof Error ? error.message : String(error) };
}

const port = parentPort;
if (port === null) throw new Error('decode-worker.ts runs as a worker thread');
port.on('message', (request: DecodeRequest) => {
  decodeOne(request.bytes).then(
    (image) => port.postMessage({ id: request.id, ok: true, ...image } satisfies DecodeReply, image.inputs.map((input) => input.buffer as ArrayBuffer)),
    (error: unknown) => port.postMessage({ id: request.id, ok: false, ...describeFailure(error) } satisfies DecodeReply),
  );
});
port.postMessage('ready');
