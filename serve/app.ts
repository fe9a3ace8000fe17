/**
 * The HTTP layer (express 5), as stages in the order a request meets them: cross-origin isolation, its context
 * and time limit (request-lifecycle.ts), the API routes (one table; a known path with another method is a 405;
 * prediction routes admit work on arrival, admission.ts), the web demo's static files (static-demo.ts), and
 * the JSON answers and errors (respond.ts).
 */
import express, { type Request, type Response } from 'express';
import { admitOnArrival } from './admission.ts';
import { requestContext, type RouteHandler, type ServeState } from './app-state.ts';
import type { ServeConfig } from './config.ts';
import { MethodNotAllowedError, NotReadyError, ShuttingDownError } from './errors.ts';
import type { Logger } from './log.ts';
import { formatPrometheus, type ServeMetrics } from './metrics.ts';
import { buildOpenApi } from './openapi.ts';
import { createPredictRoutes } from './predict-routes.ts';
import { rejectMalformedPath, trackRequests } from './request-lifecycle.ts';
import { createResponder, handleErrors, notFound, type Responder } from './respond.ts';
import { crossOriginIsolation, serveDemo } from './static-demo.ts';

export type { ServeState } from './app-state.ts';

/** Each API path with its handler per method. */
type RouteTable = Record<string, Partial<Record<string, RouteHandler>>>;

/** Routes whose requests take a slot in the prediction queue. */
const PREDICT_PREFIX = '/v1/predict';

export function createApp(config: ServeConfig, state: ServeState, metrics: ServeMetrics, log: Logger): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.use(crossOriginIsolation);
  // Responses are small and fresh: hashing them for an ETag costs more than it saves.
  app.set('etag', false);
  app.set('query parser', false);

  const responder = createResponder(state, metrics);
  app.use(trackRequests(config, metrics, log, responder));
  app.use(rejectMalformedPath);
  mountRoutes(app, apiRoutes(config, state, metrics, log, responder), state);
  serveDemo(app, config, state);
  app.use(notFound);
  app.use(handleErrors(responder, log));
  return app;
}

function apiRoutes(config: ServeConfig, state: ServeState, metrics: ServeMetrics, log: Logger, responder: Responder): RouteTable {
  const { predictOne, predictBatch } = createPredictRoutes(config, state, metrics, log, responder);
  const { sendJson } = responder;
  return {
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
}

/** Every path answers its methods (HEAD as GET), OPTIONS with what is allowed, and any other method with a 405. */
function mountRoutes(app: express.Express, routes: RouteTable, state: ServeState): void {
  for (const [path, methods] of Object.entries(routes)) {
    const allowed = Object.keys(methods);
    if (allowed.includes('GET')) allowed.push('HEAD');
    app.all(path, async (req: Request, res: Response) => {
      const ctx = requestContext(res);
      ctx.route = path;
      const handler = methods[req.method === 'HEAD' ? 'GET' : req.method];
      if (handler === undefined) {
        if (req.method === 'OPTIONS') {
          res.status(204).set('Allow', allowed.join(', ')).end();
          return;
        }
        throw new MethodNotAllowedError(`${req.method} is not allowed on ${path}; use ${allowed.join(' or ')}`, allowed);
      }
      // A slot in the queue before the upload is read, so that a full server refuses at once.
      if (path.startsWith(PREDICT_PREFIX)) admitOnArrival(ctx, state);
      await handler(req, res, ctx);
    });
  }
}
