/**
 * How every answer is written: JSON with its length, errors as {"error": {...}} with their headers, and the
 * last-resort handlers (no route, a thrown error).
 */
import type { ErrorRequestHandler, NextFunction, Request, Response } from 'express';
import { requestContext, type ServeState } from './app-state.ts';
import { HttpError, MethodNotAllowedError, NotFoundError, OverloadedError, toErrorResponse, UploadTimeoutError } from './errors.ts';
import type { Logger } from './log.ts';
import type { ServeMetrics } from './metrics.ts';

/** Largest unread body discarded to keep a keep-alive connection (a 503 under load, say). */
const DISCARD_LIMIT_BYTES = 256 * 1024;

export interface Responder {
  sendJson(res: Response, status: number, body: unknown): void;
  sendError(res: Response, error: unknown): void;
}

export function createResponder(state: ServeState, metrics: ServeMetrics): Responder {
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
    const unread = !requestContext(res).bodyDone && !res.req.complete;
    const close = error instanceof OverloadedError || error instanceof UploadTimeoutError || (unread && !(declared <= DISCARD_LIMIT_BYTES));
    if (close) res.set('Connection', 'close');
    sendJson(res, status, body);
  }

  return { sendJson, sendError };
}

/** The last route: whatever matched nothing else. */
export function notFound(req: Request): never {
  requestContext(req.res as Response).route = 'not_found';
  throw new NotFoundError(`No route ${req.method} ${req.path.slice(0, 200)}; see /openapi.json for the API`);
}

/** express's error handler: 5xx that are not ours are logged; every error is answered once, as JSON. */
export function handleErrors(responder: Responder, log: Logger): ErrorRequestHandler {
  return (error: unknown, _req: Request, res: Response, _next: NextFunction): void => {
    const { status } = toErrorResponse(error);
    if (status >= 500 && !(error instanceof HttpError)) log.error('request failed', error);
    if (res.headersSent) {
      // Already answered (a time-out, say): nothing more to say. Half an answer: cut it.
      if (!res.writableEnded) res.destroy();
      return;
    }
    responder.sendError(res, error);
  };
}

/** Errors raised by express or its middleware (a malformed URL, say) carry a status; keep the 4xx ones. */
function translateFrameworkError(error: unknown): unknown {
  if (error instanceof HttpError || typeof error !== 'object' || error === null) return error;
  const status = (error as { status?: unknown }).status;
  if (typeof status === 'number' && status >= 400 && status < 500) return new NotFoundError('No such resource; see /openapi.json for the API');
  return error;
}
