/** The query parameters of the predict routes: whether to find faces, how many, and how sure the detector must be. */
import type { Request } from 'express';
import { DEFAULT_MAX_FACES, DEFAULT_MIN_SCORE } from '../contract/face/photo.ts';
import { InvalidParameterError } from './errors.ts';
import type { FaceQuery } from './predictor.ts';

export const DETECT_MODES = ['faces', 'none'] as const;
/** The most faces one image may ask for. */
export const MAX_FACES_LIMIT = 100;
const KNOWN_PARAMETERS = new Set(['detect', 'maxFaces', 'minScore']);

function single(params: URLSearchParams, name: string): string | undefined {
  const values = params.getAll(name);
  if (values.length > 1) throw new InvalidParameterError(`Query parameter "${name}" is given ${values.length} times; give it once`);
  return values[0];
}

/** The request's face query, with the defaults; unknown parameters and bad values are a 400 naming the parameter. */
export function parseFaceQuery(req: Request): FaceQuery {
  // The app keeps Express's query parser off (no nested objects); the predict routes read their few parameters here.
  const params = new URL(req.originalUrl, 'http://localhost').searchParams;
  for (const name of params.keys()) {
    if (!KNOWN_PARAMETERS.has(name)) throw new InvalidParameterError(`Unknown query parameter "${name}"; expected one of: ${[...KNOWN_PARAMETERS].join(', ')}`);
  }
  const detect = single(params, 'detect') ?? 'faces';
  if (!(DETECT_MODES as readonly string[]).includes(detect)) {
    throw new InvalidParameterError(`detect="${detect}" is not a mode; expected one of: ${DETECT_MODES.join(', ')} (none: the whole image is one face)`);
  }
  if (detect === 'none') {
    for (const name of ['maxFaces', 'minScore']) if (params.has(name)) throw new InvalidParameterError(`${name} applies to face detection; it cannot go with detect=none`);
    return { detect: false };
  }
  const maxFacesText = single(params, 'maxFaces');
  const maxFaces = maxFacesText === undefined ? DEFAULT_MAX_FACES : Number(maxFacesText);
  if (!Number.isInteger(maxFaces) || maxFaces < 1 || maxFaces > MAX_FACES_LIMIT) {
    throw new InvalidParameterError(`maxFaces="${maxFacesText}" must be a whole number from 1 to ${MAX_FACES_LIMIT}`);
  }
  const minScoreText = single(params, 'minScore');
  const minScore = minScoreText === undefined ? DEFAULT_MIN_SCORE : Number(minScoreText);
  if (minScoreText?.trim() === '' || !Number.isFinite(minScore) || minScore < 0 || minScore > 1) {
    throw new InvalidParameterError(`minScore="${minScoreText}" must be a number from 0 to 1 (the detector's confidence)`);
  }
  return { detect: true, maxFaces, minScore };
}
