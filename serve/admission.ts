/**
 * Admission control: which predictor takes new work, and the queue slots a request holds. A request is admitted
 * for one image on arrival, before its upload is read, so that a full server refuses at once.
 */
import type { RequestContext, ServeState } from './app-state.ts';
import { NotReadyError, ShuttingDownError } from './errors.ts';
import type { Predictor } from './predictor.ts';

/** The predictor that takes new work, or an error that says why none does (draining, still loading). */
export function servingPredictor(state: ServeState): Predictor {
  if (state.draining) throw new ShuttingDownError('The server is shutting down; retry against another instance');
  if (state.predictor === undefined) throw new NotReadyError('The models are still loading; retry in a second');
  return state.predictor;
}

/** A slot in the queue for the request's first image, taken on arrival. */
export function admitOnArrival(ctx: RequestContext, state: ServeState): void {
  ctx.predictor = servingPredictor(state);
  ctx.predictor.admit(1);
  ctx.admitted = 1;
}

/** Slots for all of a request's images: the ones beyond the first must fit now, or the whole request is refused. */
export function admitImages(ctx: RequestContext, state: ServeState, images: number): Predictor {
  const served = ctx.predictor ?? servingPredictor(state);
  if (images > ctx.admitted) {
    served.admit(images - ctx.admitted);
    ctx.admitted = images;
  }
  return served;
}
