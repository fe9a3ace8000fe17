/**
 * `npm run predict -- photo.jpg [more.jpg ...]`: what POST /v1/predict would answer for each photo, without a
 * server. It runs the server's own pipeline (serve/models.ts loads the models, one decode thread, serve/predictor.ts
 * finds and judges the faces) with the server's defaults, so the answers are the server's, timings aside.
 * Optionally draws each photo's faces on it (annotate.ts).
 */
import { mkdir, readFile, stat } from 'node:fs/promises';
import { basename, extname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_MAX_FACES, DEFAULT_MIN_SCORE, type PhotoPrediction } from '../../contract/face/photo.ts';
import { isMain, parseChoice, prepareOutputFile, runCli, UsageError } from '../../node-shared/cli-args.ts';
import { ConfigError, loadConfig, type ServeConfig } from '../config.ts';
import { DecodePool } from '../decode-pool.ts';
import { DETECT_MODES, MAX_FACES_LIMIT } from '../face-query.ts';
import { createLogger, type Logger } from '../log.ts';
import { ServeMetrics } from '../metrics.ts';
import { loadServingSet, type ServingSet } from '../reload.ts';
import { Predictor, type FaceQuery } from '../predictor.ts';
import { writeAnnotatedPhoto } from './annotate.ts';

const USAGE = `Usage: npm run predict -- PHOTO [PHOTO ...] [options]

Prints what the server's POST /v1/predict would answer for each photo, computed by the same code with the
server's defaults. One photo: its answer as the server sends it, indented. Several: JSON Lines, one answer per
photo in the order given, each with "file" (the path as given) first; a photo that fails has no line.

  --detect MODE        faces: find the faces; none: the whole photo is one face   (default: faces)
  --max-faces N        at most N faces, the largest; 1 to ${MAX_FACES_LIMIT}                     (default: ${DEFAULT_MAX_FACES})
  --min-score S        the detector's least confidence for a face, 0 to 1         (default: ${DEFAULT_MIN_SCORE})
  --models DIR         the models to run, with their manifest.json                (default: models/)
  --annotate FILE.png  (one photo) also write it with each face's box and caption
  --annotate-dir DIR   write each photo so drawn as DIR/<name>.annotated.png
  -h, --help           this text

Exit status: 0 when every photo was answered; 1 when any was not (each named on stderr, the others still
answered) or the models could not be loaded; 2 for a mistake in the options.`;

/** What a file is called in the folder of --annotate-dir. */
const ANNOTATED_SUFFIX = '.annotated.png';

interface PredictOptions {
  /** the photos as given on the command line, and where they are */
  photos: { given: string; path: string }[];
  query: FaceQuery;
  modelsDir: string;
  /** where each photo's drawing goes, by index in `photos`; empty without --annotate or --annotate-dir */
  annotateTo: Map<number, string>;
}

// npm runs scripts in the package's folder; paths a person typed are relative to where they typed them.
const callerPath = (path: string): string => resolve(process.env.INIT_CWD ?? process.cwd(), path);

function parseMinScore(value: string): number {
  const score = Number(value);
  if (value.trim() === '' || !Number.isFinite(score) || score < 0 || score > 1) throw new UsageError(`--min-score must be a number from 0 to 1 (the detector's confidence); got "${value}"`);
  return score;
}

function parseQuery(values: { detect?: string; 'max-faces'?: string; 'min-score'?: string }): FaceQuery {
  const detect = parseChoice('--detect', values.detect ?? 'faces', DETECT_MODES);
  if (detect === 'none') {
    for (const flag of ['max-faces', 'min-score'] as const) if (values[flag] !== undefined) throw new UsageError(`--${flag} applies to face detection; it cannot go with --detect none`);
    return { detect: false };
  }
  const maxFacesText = values['max-faces'];
  const maxFaces = maxFacesText === undefined ? DEFAULT_MAX_FACES : Number(maxFacesText);
  if (maxFacesText !== undefined && (!/^\d+$/.test(maxFacesText) || maxFaces < 1 || maxFaces > MAX_FACES_LIMIT)) {
    throw new UsageError(`--max-faces must be a whole number from 1 to ${MAX_FACES_LIMIT}; got "${maxFacesText}"`);
  }
  const minScore = values['min-score'] === undefined ? DEFAULT_MIN_SCORE : parseMinScore(values['min-score']);
  return { detect: true, maxFaces, minScore };
}

/** Where each photo's drawing goes; checks that it can be written, and that no drawing overwrites a photo or another drawing. */
async function annotationTargets(values: { annotate?: string; 'annotate-dir'?: string }, photos: PredictOptions['photos']): Promise<Map<number, string>> {
  const targets = new Map<number, string>();
  if (values.annotate !== undefined && values['annotate-dir'] !== undefined) throw new UsageError('Give --annotate FILE (one photo) or --annotate-dir DIR, not both');
  if (values.annotate !== undefined) {
    if (photos.length !== 1) throw new UsageError(`--annotate draws one photo and ${photos.length} were given; use --annotate-dir DIR for several`);
    if (extname(values.annotate).toLowerCase() !== '.png') throw new UsageError(`--annotate "${values.annotate}": the drawing is written as PNG; give a file name ending in .png`);
    targets.set(0, callerPath(values.annotate));
  } else if (values['annotate-dir'] !== undefined) {
    const dir = callerPath(values['annotate-dir']);
    const info = await stat(dir).catch(() => undefined);
    if (info !== undefined && !info.isDirectory()) throw new UsageError(`--annotate-dir "${values['annotate-dir']}" is a file; give a folder`);
    await mkdir(dir, { recursive: true }).catch((error: unknown) => {
      throw new UsageError(`--annotate-dir "${values['annotate-dir']}" cannot be created (${(error as Error).message})`);
    });
    const byTarget = new Map<string, string>();
    photos.forEach((photo, i) => {
      const target = join(dir, `${basename(photo.path, extname(photo.path))}${ANNOTATED_SUFFIX}`);
      const other = byTarget.get(target);
      if (other !== undefined && other !== photo.path) throw new UsageError(`"${other}" and "${photo.given}" would both be drawn to ${target}; annotate them in separate runs`);
      byTarget.set(target, photo.path);
      targets.set(i, target);
    });
  }
  for (const [, target] of targets) {
    if (photos.some((photo) => photo.path === target)) throw new UsageError(`The drawing ${target} would overwrite a photo given; choose another name or folder`);
    await prepareOutputFile(values.annotate !== undefined ? '--annotate' : '--annotate-dir', target);
  }
  return targets;
}

async function parseOptions(argv: string[]): Promise<PredictOptions> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      detect: { type: 'string' },
      'max-faces': { type: 'string' },
      'min-score': { type: 'string' },
      models: { type: 'string' },
      annotate: { type: 'string' },
      'annotate-dir': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) throw new UsageError('');
  if (positionals.length === 0) throw new UsageError('Give at least one photo: npm run predict -- photo.jpg');
  if (values.models === '') throw new UsageError('--models must not be empty');
  const photos = positionals.map((given) => ({ given, path: callerPath(given) }));
  const query = parseQuery(values);
  const annotateTo = await annotationTargets(values, photos);
  return { photos, query, modelsDir: values.models === undefined ? '' : callerPath(values.models), annotateTo };
}

/** The server's config, its defaults but for the models folder and a single decode thread. */
function serverConfig(modelsDir: string): ServeConfig {
  try {
    // The environment is not read: the SERVE_* variables configure servers, and this program has its own flags.
    return loadConfig([...(modelsDir === '' ? [] : ['--models', modelsDir]), '--decode-threads', '1'], {});
  } catch (error) {
    if (error instanceof ConfigError) throw new UsageError(error.message);
    throw error;
  }
}

/** The server's start-up without the HTTP part (serve/reload.ts): the models, the decode thread, the predictor. */
function startPipeline(config: ServeConfig, log: Logger): Promise<ServingSet> {
  const workerEntry = DecodePool.prepare();
  // An unobserved rejection would end the process before the models' own error is reported.
  workerEntry.catch(() => {});
  return loadServingSet(config, { metrics: new ServeMetrics(), log, workerEntry });
}

/** The photo's bytes, or an error that says in a person's words why there are none. */
async function readPhoto(path: string): Promise<Uint8Array> {
  try {
    const bytes = new Uint8Array(await readFile(path));
    if (bytes.length === 0) throw new Error('the file is empty (0 bytes)');
    return bytes;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new Error('no such file');
    if (code === 'EISDIR') throw new Error('is a folder; give the photos in it one by one (e.g. DIR/*.jpg)');
    if (code === 'EACCES') throw new Error('cannot be read (permission denied)');
    throw error;
  }
}

/** Answers one photo and draws it where asked; an error names nothing, the caller prefixes the file. */
async function answerPhoto(predictor: Predictor, path: string, query: FaceQuery, annotateTo: string | undefined): Promise<PhotoPrediction> {
  const bytes = await readPhoto(path);
  const answer = await predictor.predict(bytes, performance.now(), query);
  if (annotateTo !== undefined) await writeAnnotatedPhoto(bytes, answer, annotateTo);
  return answer;
}

async function main(argv: string[]): Promise<void> {
  const options = await parseOptions(argv);
  const config = serverConfig(options.modelsDir);
  const log = createLogger('warn');
  const pipeline = await startPipeline(config, log);
  let failed = 0;
  try {
    if (options.query.detect && !pipeline.predictor.detects) {
      throw new UsageError(`The models in ${config.modelsDir} include no face detector; add --detect none to take each photo as one face`);
    }
    const several = options.photos.length > 1;
    // One photo at a time, as one request each: the same batches the server would run, so the same numbers.
    for (const [i, photo] of options.photos.entries()) {
      try {
        const answer = await answerPhoto(pipeline.predictor, photo.path, options.query, options.annotateTo.get(i));
        process.stdout.write(several ? `${JSON.stringify({ file: photo.given, ...answer })}\n` : `${JSON.stringify(answer, null, 2)}\n`);
      } catch (error) {
        failed++;
        process.stderr.write(`error: ${photo.given}: ${error instanceof Error ? error.message : String(error)}\n`);
      }
    }
  } finally {
    await pipeline.close();
  }
  if (failed > 0) {
    if (options.photos.length > 1) process.stderr.write(`${failed} of ${options.photos.length} photos failed\n`);
    process.exitCode = 1;
  }
}

if (isMain(import.meta.url)) runCli(USAGE, main);
