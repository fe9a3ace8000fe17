/**
 * Reading uploads with limits: a raw image body, or multipart/form-data file fields named "image".
 * Every failure is an HttpError a caller can act on; an upload cut off half-way is one too.
 */
import type { IncomingMessage } from 'node:http';
import busboy from 'busboy';
import { IncompleteUploadError, MalformedMultipartError, PayloadTooLargeError, TooManyImagesError } from './errors.ts';

export const IMAGE_FIELD = 'image';

/** One buffer from chunks (typed as Uint8Array: this project's Node typings do not let a Buffer stand for one). */
function concatBytes(chunks: readonly Uint8Array[], length: number): Uint8Array {
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(length);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

/** A byte count as people read it: "512 bytes", "7.8 KB", "10.0 MB" (units of 1024). */
function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

function tooLarge(limit: number): PayloadTooLargeError {
  return new PayloadTooLargeError(`The request body is larger than the limit of ${formatBytes(limit)}; send a smaller image`);
}

/** Refuses at once a body whose declared length is over the limit. */
function checkDeclaredLength(req: IncomingMessage, limit: number): void {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) throw tooLarge(limit);
}

function incomplete(): IncompleteUploadError {
  return new IncompleteUploadError('The upload ended before the whole body arrived; send it again');
}

/** The whole body as one buffer, refusing more than `limit` bytes. */
export function readRawBody(req: IncomingMessage, limit: number): Promise<Uint8Array> {
  checkDeclaredLength(req, limit);
  return new Promise<Uint8Array>((resolve, reject) => {
    const chunks: Uint8Array[] = [];
    let length = 0;
    const cleanup = (): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('close', onClose);
      req.off('error', onClose);
    };
    const onData = (chunk: Uint8Array): void => {
      length += chunk.length;
      if (length > limit) {
        cleanup();
        // Stop buffering; what is left of the upload is discarded.
        req.resume();
        reject(tooLarge(limit));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      cleanup();
      resolve(concatBytes(chunks, length));
    };
    const onClose = (): void => {
      cleanup();
      reject(incomplete());
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('close', onClose);
    req.on('error', onClose);
  });
}

/**
 * The files of the "image" fields of a multipart body, in order; other fields are ignored.
 * More than `maxImages` image files is an error rather than a silent truncation, and so is an "image" part
 * sent as a text field (no filename): skipping it would shift the answers of a batch against its parts.
 */
export function readMultipartImages(req: IncomingMessage, limit: number, maxImages: number): Promise<Uint8Array[]> {
  checkDeclaredLength(req, limit);
  return new Promise<Uint8Array[]>((resolve, reject) => {
    let parser: busboy.Busboy;
    try {
      parser = busboy({ headers: req.headers, limits: { fileSize: limit, fields: 100, parts: maxImages + 100 } });
    } catch (error) {
      reject(new MalformedMultipartError(`The multipart body cannot be read: ${(error as Error).message}`));
      return;
    }
    const images: Uint8Array[] = [];
    let received = 0;
    let imageFiles = 0;
    let settled = false;
    const fail = (error: Error): void => {
      if (settled) return;
      settled = true;
      req.unpipe(parser);
      req.resume();
      reject(error);
    };
    req.on('data', (chunk: Uint8Array) => {
      received += chunk.length;
      if (received > limit) fail(tooLarge(limit));
    });
    req.on('close', () => {
      if (!req.complete) fail(incomplete());
    });
    req.on('error', () => fail(incomplete()));
    parser.on('file', (name, stream) => {
      // A part cut off by the end of the body errors here as well as on the parser: handled there.
      stream.on('error', () => {});
      if (name !== IMAGE_FIELD) {
        stream.resume();
        return;
      }
      if (++imageFiles > maxImages) {
        stream.resume();
        fail(new TooManyImagesError(maxImages === 1 ? 'Send one image per request to /v1/predict, or several to /v1/predict/batch' : `Send at most ${maxImages} images in one request`));
        return;
      }
      const chunks: Uint8Array[] = [];
      let length = 0;
      stream.on('data', (chunk: Uint8Array) => {
        chunks.push(chunk);
        length += chunk.length;
      });
      stream.on('limit', () => fail(tooLarge(limit)));
      stream.on('end', () => images.push(concatBytes(chunks, length)));
    });
    parser.on('field', (name) => {
      if (name === IMAGE_FIELD) {
        fail(new MalformedMultipartError(`A part named "${IMAGE_FIELD}" is a text field, not a file (it has no filename); send each image as a file, e.g. curl -F ${IMAGE_FIELD}=@face.jpg`));
      }
    });
    parser.on('partsLimit', () => fail(new MalformedMultipartError('The multipart body has too many parts')));
    parser.on('fieldsLimit', () => fail(new MalformedMultipartError('The multipart body has too many fields')));
    parser.on('error', (error: Error) => fail(new MalformedMultipartError(`The multipart body is malformed (${error.message}); check the boundary and that the upload is complete`)));
    parser.on('close', () => {
      if (settled) return;
      settled = true;
      resolve(images);
    });
    req.pipe(parser);
  });
}
