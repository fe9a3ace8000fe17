/**
 * Worker thread of the UTKFace loader: reads image files, decodes them and runs `preprocessToBytes` (or, for
 * aligned crops, cuts the face out as the server does: training/data/aligned-crops.ts), and returns only the
 * preprocessed bytes (a few KB a face instead of 160 KB of RGBA).
 * Started by `utkface.ts` with `DecodeWorkerData`; `decodeFaceFile` is also used on the main thread for a few files.
 */
import { readFile } from 'node:fs/promises';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { decodeImage } from '../../imaging/decode.ts';
import { preprocessToBytes, type InputSpec } from '../../contract/preprocess.ts';
import { decodeAsServed, openAlignedCropper, type AlignedCropper, type ServedDetectorFile } from './aligned-crops.ts';

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
  /** aligned crops, per path: null when aligned (or failed), else why the UTKFace crop was kept */
  unaligned: Unaligned[];
}

export type Unaligned = { reason: string; detail?: string } | null;

/** Reads, decodes (as the server does) and aligns one file; its bytes and why it kept its UTKFace crop, or why there are none. */
export async function alignFaceFile(path: string, spec: InputSpec, cropper: AlignedCropper): Promise<{ bytes: Uint8Array; unaligned: Unaligned } | { reason: string; detail: string }> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (error) {
    return { reason: 'unreadable file', detail: (error as Error).message };
  }
  let pixels;
  try {
    pixels = await decodeAsServed(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  } catch (error) {
    return { reason: 'undecodable image', detail: error instanceof Error ? error.message : String(error) };
  }
  const crop = await cropper.crop(pixels, [spec]);
  return { bytes: crop.bytes[0], unaligned: crop.aligned ? null : { reason: crop.reason, ...(crop.detail === undefined ? {} : { detail: crop.detail }) } };
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

/** One file's bytes, and with a cropper why it kept its UTKFace crop; or why there are none. */
export async function loadFaceFile(path: string, spec: InputSpec, cropper: AlignedCropper | undefined): Promise<{ bytes: Uint8Array; unaligned: Unaligned } | { reason: string; detail: string }> {
  if (cropper !== undefined) return alignFaceFile(path, spec, cropper);
  const decoded = await decodeFaceFile(path, spec);
  return decoded instanceof Uint8Array ? { bytes: decoded, unaligned: null } : decoded;
}

async function decodeBatch({ batch, paths }: DecodeBatch, spec: InputSpec, cropper: AlignedCropper | undefined): Promise<DecodedBatch> {
  const faceBytes = spec.height * spec.width * spec.channels;
  const pixels = new Uint8Array(paths.length * faceBytes);
  const failures: DecodedBatch['failures'] = [];
  const unaligned: Unaligned[] = [];
  for (let i = 0; i < paths.length; i++) {
    const result = await loadFaceFile(paths[i], spec, cropper);
    if ('bytes' in result) pixels.set(result.bytes, i * faceBytes);
    failures.push('bytes' in result ? null : result);
    unaligned.push('bytes' in result ? result.unaligned : null);
  }
  return { batch, pixels, failures, unaligned };
}

/** What `workerData` holds in a decode worker; the role keeps this module inert when imported in any other thread. */
export interface DecodeWorkerData {
  role: 'utkface-decode';
  spec: InputSpec;
  /** for aligned crops: the detector the server loads */
  detector?: Pick<ServedDetectorFile, 'bytes' | 'entry'>;
}

const data = workerData as DecodeWorkerData | null | undefined;
if (!isMainThread && parentPort !== null && data?.role === 'utkface-decode') {
  const port = parentPort;
  const spec = data.spec;
  const cropper = data.detector === undefined ? undefined : openAlignedCropper(data.detector);
  port.on('message', (request: DecodeBatch) => {
    void (async () => {
      const result = await decodeBatch(request, spec, await cropper);
      port.postMessage(result, [result.pixels.buffer]);
    })();
  });
}
