/**
 * Worker thread of the UTKFace loader: reads image files, decodes them and runs `preprocessToBytes`,
 * and returns only the preprocessed bytes (a few KB a face instead of 160 KB of RGBA).
 * Started by `utkface.ts` with `DecodeWorkerData`; `decodeFaceFile` is also used on the main thread for a few files.
 */
import { readFile } from 'node:fs/promises';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { decodeImage } from '../../imaging/decode.ts';
import { preprocessToBytes, type InputSpec } from '../../contract/preprocess.ts';

export interface DecodeBatch {
  batch: number;
  paths: string[];
}

export interface DecodedBatch {
  batch: number;
  /** paths.length faces of height x width x channels bytes; a failed face's bytes are zeros */
  pixels: Uint8Array<ArrayBuffer>;
  /** per path: null when decoded, else why not */
  failures: ({ reason: string; detail: string } | null)[];
}

/** Reads, decodes and preprocesses one file; the bytes, or why there are none. */
export async function decodeFaceFile(path: string, spec: InputSpec): Promise<Uint8Array | { reason: string; detail: string }> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (error) {
    return { reason: 'unreadable file', detail: (error as Error).message };
  }
  try {
    return preprocessToBytes(await decodeImage(bytes), spec);
  } catch (error) {
    return { reason: 'undecodable image', detail: error instanceof Error ? error.message : String(error) };
  }
}

async function decodeBatch({ batch, paths }: DecodeBatch, spec: InputSpec): Promise<DecodedBatch> {
  const faceBytes = spec.height * spec.width * spec.channels;
  const pixels = new Uint8Array(paths.length * faceBytes);
  const failures: DecodedBatch['failures'] = [];
  for (let i = 0; i < paths.length; i++) {
    const result = await decodeFaceFile(paths[i], spec);
    if (result instanceof Uint8Array) pixels.set(result, i * faceBytes);
    failures.push(result instanceof Uint8Array ? null : result);
  }
  return { batch, pixels, failures };
}

/** What `workerData` holds in a decode worker; the role keeps this module inert when imported in any other thread. */
export interface DecodeWorkerData {
  role: 'utkface-decode';
  spec: InputSpec;
}

const data = workerData as DecodeWorkerData | null | undefined;
if (!isMainThread && parentPort !== null && data?.role === 'utkface-decode') {
  const port = parentPort;
  const spec = data.spec;
  port.on('message', (request: DecodeBatch) => {
    void decodeBatch(request, spec).then((result) => port.postMessage(result, [result.pixels.buffer]));
  });
}
