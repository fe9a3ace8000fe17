/**
 * The HTTP layer (express 5): routes, uploads, the per-request time limit, metrics per response, JSON errors,
 * and the web demo's static files. Routes are one table; a known path with another method is a 405.
 */
import { existsSync } from 'node:fs';
import { extname, isAbsolute, join, relative } from 'node:path';
import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import { IMAGE_FIELD, readMultipartImages, readRawBody } from './body.ts';
import { REPO_ROOT } from '../node-shared/paths.ts';
import type { ServeConfig } from './config.ts';
import {
  EmptyBodyError,
  HttpError,
  MalformedUrlError,
  MethodNotAllowedError,
  MissingImageFieldError,
  NotFoundError,
  NotReadyError,
  OverloadedError,
  RequestTimeoutError,
  ShuttingDownError,
  toErrorResponse,
  UnsupportedMediaTypeError,
  UploadTimeoutError,
} from './errors.ts';
import type { Logger } from './log.ts';
import { formatPrometheus, type RegistrySnapshot, type ServeMetrics } from './metrics.ts';
import type { ModelsReport } from './models.ts';
import { buildOpenApi } from './openapi.ts';
import type { Prediction, Predictor } from './predictor.ts';

/** What the app serves, filled in as start-up progresses. */
export interface ServeState {
  predictor?: Predictor;
  models?: ModelsReport;
  draining: boolean;
  /** The metrics of every process of the cluster; this process's own where there is no cluster. */
  collectMetrics: () => Promise<RegistrySnapshot>;
}

interface RequestContext {
  startedAt: number;
  route: string;
  bodyDone: boolean;
  abort: AbortController;
  /** Images this request holds in the predictor's queue. */
  admitted: number;
  /** The predictor that admitted it (on arrival, so that a request in flight at SIGTERM is still served). */
  predictor?: Predictor;
  /** Settles when the images' work is over (which can outlast the response, after a time-out). */
  work?: Promise<unknown>;
}

/** What an empty "image" file part is told (a raw empty body gets EmptyBodyError's own message). */
const EMPTY_PART = `This "${IMAGE_FIELD}" file part is empty (0 bytes); attach the image file's contents`;

/** Largest unread body discarded to keep a keep-alive connection (a 503 under load, say). */
const DISCARD_LIMIT_BYTES = 256 * 1024;

type Handler = (req: Request, res: Response, context: RequestContext) => Promise<void> | void;

const context = (res: Response): RequestContext => res.locals.context as RequestContext;

export function createApp(config: ServeConfig, state: ServeState, metrics: ServeMetrics, log: Logger): express.Express {
  const app = express();
  app.disable('x-powered-by');
  // Cross-origin isolation on every answer, so the demo's onnxruntime-web can use wasm threads.
  app.use((_req, res, next) => {
    res.set(ISOLATION_HEADERS);
    next();
  });
  // Responses are small and fresh: hashing them for an ETag costs more than it saves.
  app.set('etag', false);
  app.set('query parser', false);

  const predictor = (): Predictor => {
    if (state.draining) throw new ShuttingDownError('The server is shutting down; retry against another instance');
    if (state.predictor === undefined) throw new NotReadyError('The models are still loading; retry in a second');
    return state.predictor;
  };

  async function predictImages(images: Uint8Array[], ctx: RequestContext): Promise<Array<Prediction | Error>> {
    const served = ctx.predictor ?? predictor();
    // One image was admitted on arrival; the rest of a batch must fit now, or the whole request is refused.
    if (images.length > ctx.admitted) {
      served.admit(images.length - ctx.admitted);
      ctx.admitted = images.length;
    }
    const work = Promise.all(
      images.map((bytes) =>
        bytes.length === 0 ? new EmptyBodyError(EMPTY_PART) : served.predict(bytes, ctx.startedAt, ctx.abort.signal).catch((error: unknown) => error as Error),
      ),
    );
    ctx.work = work;
    return work;
  }

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

  const predictOne: Handler = async (req, res, ctx) => {
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
    const [result] = await predictImages(images, ctx);
    if (result instanceof Error) throw result;
    sendJson(res, 200, result);
  };

  const predictBatch: Handler = async (req, res, ctx) => {
    if (contentKind(req) !== 'multipart') {
      throw new UnsupportedMediaTypeError(`/v1/predict/batch takes multipart/form-data with one file field named "${IMAGE_FIELD}" per image`);
    }
    const images = await readMultipartImages(req, config.maxBodyBytes, config.maxBatchImages);
    ctx.bodyDone = true;
    if (images.length === 0) throw new MissingImageFieldError(`The multipart body has no file field named "${IMAGE_FIELD}"; send each image in a field of that name`);
    const results = await predictImages(images, ctx);
    sendJson(
      res,
      200,
      results.map((result) => {
        if (!(result instanceof Error)) return result;
        const { body } = toErrorResponse(result);
        metrics.errors.inc({ code: body.error.code });
        if (!(result instanceof HttpError)) log.error('batch item failed', result);
        return body;
      }),
    );
  };

  const routes: Record<string, Partial<Record<string, Handler>>> = {
    '/v1/predict': { POST: predictOne },
    '/v1/predict/batch': { POST: predictBatch },
    '/v1/models': {
      GET: (_req, res) => {
        if (state.models === undefined) throw new NotReadyError('The models are still loading; retry in a second');
        sendJson(res, 200, state.models);
      },
    },
    '/healthz': { GET: (_req, res) => sendJson(res, 200, { status: 'alive' }) },
    '/readyz': {
      GET: (_req, res) => {
        if (state.draining) throw new ShuttingDownError('The server is shutting down');
        if (state.predictor === undefined) throw new NotReadyError('The models are still loading');
        sendJson(res, 200, { status: 'ready' });
      },
    },
    '/metrics': {
      GET: async (_req, res) => {
        const text = formatPrometheus(await state.collectMetrics());
        res.status(200).type('text/plain; version=0.0.4; charset=utf-8').send(text);
      },
    },
    '/openapi.json': { GET: (_req, res) => sendJson(res, 200, buildOpenApi(config, state.models)) },
  };

  // Every request: its context, its time limit, and one metrics record when it is answered.
  app.use((req, res, next) => {
    const ctx: RequestContext = { startedAt: performance.now(), route: 'other', bodyDone: false, abort: new AbortController(), admitted: 0 };
    res.locals.context = ctx;
    const timer = setTimeout(() => {
      ctx.abort.abort(new RequestTimeoutError(`The request took longer than the limit of ${config.requestTimeoutMs} ms; retry, or send a smaller image`));
      if (res.headersSent) return;
      const error = ctx.bodyDone
        ? (ctx.abort.signal.reason as RequestTimeoutError)
        : new UploadTimeoutError(`The upload did not complete within ${config.requestTimeoutMs} ms; send it again on a faster connection`);
      sendError(res, error);
    }, config.requestTimeoutMs);
    res.on('close', () => {
      clearTimeout(timer);
      // A client gone before its answer: what it queued is skipped rather than decoded for no one.
      if (!res.writableFinished) ctx.abort.abort(new Error('The client closed the connection'));
      // The queue slots are freed when the work is over, not when the answer is: a timed-out image still holds one.
      const release = (): void => {
        if (ctx.admitted > 0) ctx.predictor?.release(ctx.admitted);
        ctx.admitted = 0;
      };
      if (ctx.work === undefined) release();
      else void ctx.work.finally(release);
      const seconds = (performance.now() - ctx.startedAt) / 1000;
      metrics.requests.inc({ route: ctx.route, method: req.method, status: String(res.statusCode) });
      metrics.latency.observe(seconds, { route: ctx.route });
      log.debug(`${req.method} ${ctx.route} ${res.statusCode} ${(seconds * 1000).toFixed(1)} ms`);
    });
    next();
  });

  // A path that is not valid percent-encoding names nothing: say so, rather than "no route" for a typo'd escape.
  app.use((req, _res, next) => {
    try {
      decodeURIComponent(req.path);
    } catch {
      throw new MalformedUrlError(`The path ${req.path.slice(0, 200)} is not valid percent-encoding (a "%" must be followed by two hex digits of UTF-8); encode it and try again`);
    }
    next();
  });

  for (const [path, methods] of Object.entries(routes)) {
    const allowed = Object.keys(methods);
    if (allowed.includes('GET')) allowed.push('HEAD');
    app.all(path, async (req: Request, res: Response) => {
      const ctx = context(res);
      ctx.route = path;
      const handler = methods[req.method === 'HEAD' ? 'GET' : req.method];
      if (handler === undefined) {
        if (req.method === 'OPTIONS') {
          res.status(204).set('Allow', allowed.join(', ')).end();
          return;
        }
        throw new MethodNotAllowedError(`${req.method} is not allowed on ${path}; use ${allowed.join(' or ')}`, allowed);
      }
      if (path.startsWith('/v1/predict')) {
        // A slot in the queue before the upload is read, so that a full server refuses at once.
        ctx.predictor = predictor();
        ctx.predictor.admit(1);
        ctx.admitted = 1;
      }
      await handler(req, res, ctx);
    });
  }

  // The shipped models, for the in-browser demo: the manifest and .onnx files only, nothing else in the folder.
  app.use(
    '/models',
    (req, res, next) => {
      context(res).route = 'models';
      if (!MODEL_FILE.test(req.path)) throw new NotFoundError(`No model file ${req.path.slice(0, 200)}; see /models/manifest.json`);
      next();
    },
    express.static(config.modelsDir, { dotfiles: 'ignore', index: false, redirect: false, fallthrough: true }),
  );

  // The web demo: static files confined to its folder (send refuses ".." after decoding, and NUL bytes).
  app.use(
    (_req, res, next) => {
      context(res).route = 'static';
      next();
    },
    precompressed(config.webDemoDir),
    express.static(config.webDemoDir, { dotfiles: 'ignore', index: 'index.html', redirect: false, fallthrough: true }),
  );
  app.get('/', (req, res) => {
    if (existsSync(join(config.webDemoDir, 'index.html'))) throw new NotFoundError('The web demo index could not be read');
    res.status(200).type('html').send(demoMissingPage(config.webDemoDir, `${req.protocol}://${req.get('host') ?? `localhost:${config.port}`}`));
  });

  app.use((req: Request) => {
    context(req.res as Response).route = 'not_found';
    throw new NotFoundError(`No route ${req.method} ${req.path.slice(0, 200)}; see /openapi.json for the API`);
  });

  app.use((error: unknown, _req: Request, res: Response, _next: NextFunction) => {
    const { status } = toErrorResponse(error);
    if (status >= 500 && !(error instanceof HttpError)) log.error('request failed', error);
    if (res.headersSent) {
      // Already answered (a time-out, say): nothing more to say. Half an answer: cut it.
      if (!res.writableEnded) res.destroy();
      return;
    }
    sendError(res, error);
  });

  function sendJson(res: Response, status: number, body: unknown): void {
    // A request answered already (by its time limit) gets no second answer when its work completes.
    if (res.headersSent) return;
    const text = JSON.stringify(body);
    res.status(status).set('Content-Type', 'application/json; charset=utf-8').set('Content-Length', String(Buffer.byteLength(text)));
    // While draining, keep-alive clients are told to reconnect (to another instance).
    if (state.draining) res.set('Connection', 'close');
    res.end(text);
  }

  function sendError(res: Response, error: unknown): void {
    const { status, body, retryAfterSeconds } = toErrorResponse(translateFrameworkError(error));
    metrics.errors.inc({ code: body.error.code });
    if (retryAfterSeconds !== undefined) res.set('Retry-After', String(retryAfterSeconds));
    if (error instanceof MethodNotAllowedError) res.set('Allow', error.allow.join(', '));
    // A body refused unread: Node discards a small one and keeps the connection; a large or unknown one closes it,
    // and so does a stalled upload, whose rest may never come. Shedding load closes it too, so that a client
    // retrying at once pays for a new connection each time.
    const declared = Number(res.req.headers['content-length'] ?? Number.NaN);
    const unread = !context(res).bodyDone && !res.req.complete;
    const close = error instanceof OverloadedError || error instanceof UploadTimeoutError || (unread && !(declared <= DISCARD_LIMIT_BYTES));
    if (close) res.set('Connection', 'close');
    sendJson(res, status, body);
  }

  return app;
}

/** Errors raised by express or its middleware (a malformed URL, say) carry a status; keep the 4xx ones. */
function translateFrameworkError(error: unknown): unknown {
  if (error instanceof HttpError || typeof error !== 'object' || error === null) return error;
  const status = (error as { status?: unknown }).status;
  if (typeof status === 'number' && status >= 400 && status < 500) return new NotFoundError('No such resource; see /openapi.json for the API');
  return error;
}

/** The build's precompressed siblings (app.js.br, app.js.gz), best first. */
const ENCODINGS = [
  { name: 'br', suffix: '.br' },
  { name: 'gzip', suffix: '.gz' },
] as const;

/**
 * Points a request at the build's precompressed copy of a file when the client accepts it (the onnxruntime
 * wasm is 13.6 MiB raw, 2.6 MiB as brotli). express.static still does the serving and the path confinement.
 */
function precompressed(root: string): RequestHandler {
  return (req, res, next) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return next();
    let path: string;
    try {
      path = decodeURIComponent(req.path);
    } catch {
      return next();
    }
    if (path.includes('\0') || path.split('/').includes('..')) return next();
    if (path.endsWith('/')) path += 'index.html';
    const encoding = ENCODINGS.find((e) => req.acceptsEncodings(e.name) === e.name && existsSync(join(root, path + e.suffix)));
    res.vary('Accept-Encoding');
    if (encoding === undefined) return next();
    res.type(extname(path));
    res.set('Content-Encoding', encoding.name);
    req.url = req.url.replace(/^[^?]*/, (urlPath) => (urlPath.endsWith('/') ? `${urlPath}index.html` : urlPath) + encoding.suffix);
    next();
  };
}

const ISOLATION_HEADERS = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

/** What /models/ serves: the manifest and the model files, by plain names. */
const MODEL_FILE = /^\/(manifest\.json|[A-Za-z0-9_-]+\.onnx)$/;

const escapeHtml = (text: string): string => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/**
 * The page at / while the demo is not built, naming the folder the server looks in (relative to the repository
 * when inside it: no absolute path goes to a caller) and the address it was reached at.
 */
function demoMissingPage(webDemoDir: string, origin: string): string {
  const inRepo = relative(REPO_ROOT, webDemoDir);
  const folder = inRepo !== '' && !inRepo.startsWith('..') && !isAbsolute(inRepo) ? `<code>${escapeHtml(inRepo)}</code>` : 'the folder given by <code>--web-demo</code>';
  const build = inRepo === join('web-demo', 'dist') ? 'npm run build:web' : 'npm run build:web   # writes web-demo/dist; point --web-demo there, or copy it';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Face attributes server</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:44rem;margin:3rem auto;padding:0 1rem}code,pre{background:#f3f3f3;padding:.1rem .3rem}</style></head>
<body>
<h1>The server is running; the web demo is not built</h1>
<p>The web demo is served from ${folder}, which holds no <code>index.html</code>. Build it with</p>
<pre>${escapeHtml(build)}</pre>
<p>then reload this page; the server does not need a restart.</p>
<p>Meanwhile, the API works:</p>
<pre>curl --data-binary @face.jpg -H 'Content-Type: image/jpeg' ${escapeHtml(origin)}/v1/predict</pre>
<p>See <a href="/openapi.json">/openapi.json</a> for every route, <a href="/v1/models">/v1/models</a> for the models in use,
and <a href="/metrics">/metrics</a> for metrics.</p>
</body></html>
`;
}
