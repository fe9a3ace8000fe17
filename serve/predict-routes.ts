/** POST /v1/predict (one image, raw or multipart) and POST /v1/predict/batch (multipart, one part per image). */
import type { Request } from 'express';
import { admitImages } from './admission.ts';
import type { RequestContext, RouteHandler, ServeState } from './app-state.ts';
import { IMAGE_FIELD, readMultipartImages, readRawBody } from './body.ts';
import type { ServeConfig } from './config.ts';
import { EmptyBodyError, HttpError, MissingImageFieldError, toErrorResponse, UnsupportedMediaTypeError, type ErrorBody } from './errors.ts';
import type { Logger } from './log.ts';
import type { ServeMetrics } from './metrics.ts';
import { parseFaceQuery } from './face-query.ts';
import type { FaceQuery, PhotoPrediction } from './predictor.ts';
import type { Responder } from './respond.ts';

/** What an empty "image" file part is told (a raw empty body gets EmptyBodyError's own message). */
const EMPTY_PART = `This "${IMAGE_FIELD}" file part is empty (0 bytes); attach the image file's contents`;

export interface PredictRoutes {
  predictOne: RouteHandler;
  predictBatch: RouteHandler;
}

export function createPredictRoutes(config: ServeConfig, state: ServeState, metrics: ServeMetrics, log: Logger, responder: Responder): PredictRoutes {
  async function predictImages(images: Uint8Array[], query: FaceQuery, ctx: RequestContext): Promise<Array<PhotoPrediction | Error>> {
    const served = admitImages(ctx, state, images.length);
    const work = Promise.all(
      images.map((bytes) =>
        bytes.length === 0 ? new EmptyBodyError(EMPTY_PART) : served.predict(bytes, ctx.startedAt, query, ctx.abort.signal).catch((error: unknown) => error as Error),
      ),
    );
    ctx.work = work;
    return work;
  }

  const predictOne: RouteHandler = async (req, res, ctx) => {
    const query = parseFaceQuery(req);
    const kind = contentKind(req);
    let images: Uint8Array[];
    if (kind === 'raw') {
      images = [await readRawBody(req, config.maxBodyBytes)];
    } else {
      images = await readMultipartImages(req, config.maxBodyBytes, 1);
      if (images.length === 0) throw new MissingImageFieldError(`The multipart body has no file field named "${IMAGE_FIELD}"; send the image in a field of that name`);
    }
    ctx.bodyDone = true;
    if (images[0].length === 0) throw kind === 'raw' ? new EmptyBodyError() : new EmptyBodyError(EMPTY_PART);
    const [result] = await predictImages(images, query, ctx);
    if (result instanceof Error) throw result;
    responder.sendJson(res, 200, result);
  };

  const predictBatch: RouteHandler = async (req, res, ctx) => {
    const query = parseFaceQuery(req);
    if (contentKind(req) !== 'multipart') {
      throw new UnsupportedMediaTypeError(`/v1/predict/batch takes multipart/form-data with one file field named "${IMAGE_FIELD}" per image`);
    }
    const images = await readMultipartImages(req, config.maxBodyBytes, config.maxBatchImages);
    ctx.bodyDone = true;
    if (images.length === 0) throw new MissingImageFieldError(`The multipart body has no file field named "${IMAGE_FIELD}"; send each image in a field of that name`);
    const results = await predictImages(images, query, ctx);
    responder.sendJson(res, 200, results.map(batchItem));
  };

  /** A batch answers every image: a prediction, or the error body that image alone would have got. */
  function batchItem(result: PhotoPrediction | Error): PhotoPrediction | ErrorBody {
    if (!(result instanceof Error)) return result;
    const { body } = toErrorResponse(result);
    metrics.errors.inc({ code: body.error.code });
    if (!(result instanceof HttpError)) log.error('batch item failed', result);
    return body;
  }

  return { predictOne, predictBatch };
}

/** How the image is sent: the body itself, or multipart/form-data; anything else (or compressed) is refused by name. */
function contentKind(req: Request): 'multipart' | 'raw' {
  const encoding = (req.headers['content-encoding'] ?? '').trim().toLowerCase();
  if (encoding !== '' && encoding !== 'identity') {
    throw new UnsupportedMediaTypeError(`Content-Encoding "${encoding}" is not accepted; send the image bytes as they are (image files are compressed already)`);
  }
  const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if (type === 'multipart/form-data') return 'multipart';
  if (type === '' || type === 'application/octet-stream' || type.startsWith('image/')) return 'raw';
  throw new UnsupportedMediaTypeError(
    `Content-Type "${type}" is not accepted; send the image bytes with an image/* Content-Type, or multipart/form-data with a file field named "${IMAGE_FIELD}"`,
  );
}
