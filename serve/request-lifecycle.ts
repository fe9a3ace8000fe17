/** What every request goes through first: its context, its time limit, one metrics record when answered, and a path check. */
import type { RequestHandler } from 'express';
import type { RequestContext } from './app-state.ts';
import type { ServeConfig } from './config.ts';
import { ClientClosedError, MalformedUrlError, RequestTimeoutError, UploadTimeoutError } from './errors.ts';
import type { Logger } from './log.ts';
import type { ServeMetrics } from './metrics.ts';
import type { Responder } from './respond.ts';

/** Gives each request its context and time limit; on close frees its queue slots and records its metrics. */
export function trackRequests(config: ServeConfig, metrics: ServeMetrics, log: Logger, responder: Responder): RequestHandler {
  return (req, res, next) => {
    const ctx: RequestContext = { startedAt: performance.now(), route: 'other', bodyDone: false, abort: new AbortController(), admitted: 0 };
    res.locals.context = ctx;
    const timer = setTimeout(() => {
      ctx.abort.abort(new RequestTimeoutError(`The request took longer than the limit of ${config.requestTimeoutMs} ms; retry, or send a smaller image`));
      if (res.headersSent) return;
      const error = ctx.bodyDone
        ? (ctx.abort.signal.reason as RequestTimeoutError)
        : new UploadTimeoutError(`The upload did not complete within ${config.requestTimeoutMs} ms; send it again on a faster connection`);
      responder.sendError(res, error);
    }, config.requestTimeoutMs);
    res.on('close', () => {
      clearTimeout(timer);
      // A client gone before its answer: what it queued is skipped rather than decoded for no one.
      if (!res.writableFinished) ctx.abort.abort(new ClientClosedError('The client closed the connection before its answer'));
      releaseWhenWorkEnds(ctx);
      const seconds = (performance.now() - ctx.startedAt) / 1000;
      metrics.requests.inc({ route: ctx.route, method: req.method, status: String(res.statusCode) });
      metrics.latency.observe(seconds, { route: ctx.route });
      log.debug(`${req.method} ${ctx.route} ${res.statusCode} ${(seconds * 1000).toFixed(1)} ms`);
    });
    next();
  };
}

/** The queue slots are freed when the work is over, not when the answer is: a timed-out image still holds one. */
function releaseWhenWorkEnds(ctx: RequestContext): void {
  const release = (): void => {
    if (ctx.admitted > 0) ctx.predictor?.release(ctx.admitted);
    ctx.admitted = 0;
  };
  if (ctx.work === undefined) release();
  else void ctx.work.finally(release);
}

/** A path that is not valid percent-encoding names nothing: say so, rather than "no route" for a typo'd escape. */
export const rejectMalformedPath: RequestHandler = (req, _res, next) => {
  try {
    decodeURIComponent(req.path);
  } catch {
    throw new MalformedUrlError(`The path ${req.path.slice(0, 200)} is not valid percent-encoding (a "%" must be followed by two hex digits of UTF-8); encode it and try again`);
  }
  next();
};
