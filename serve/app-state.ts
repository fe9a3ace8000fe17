/** What the HTTP stages share: the server's state as start-up progresses, and each request's own context. */
import type { Request, Response } from 'express';
import type { RegistrySnapshot } from './metrics.ts';
import type { ServedFile } from './model-files.ts';
import type { ModelsReport } from './models.ts';
import type { Predictor } from './predictor.ts';

/** What the app serves, filled in as start-up progresses. */
export interface ServeState {
  predictor?: Predictor;
  models?: ModelsReport;
  /** what /models/ serves: the files the predictor's models were loaded from, byte for byte */
  modelFiles?: ReadonlyMap<string, ServedFile>;
  draining: boolean;
  /** The metrics of every process of the cluster; this process's own where there is no cluster. */
  collectMetrics: () => Promise<RegistrySnapshot>;
}

export interface RequestContext {
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

/** The context the request-lifecycle stage attached to this response. */
export const requestContext = (res: Response): RequestContext => res.locals.context as RequestContext;

/** One method of one route, given the request's context. */
export type RouteHandler = (req: Request, res: Response, context: RequestContext) => Promise<void> | void;
