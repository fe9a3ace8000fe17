/**
 * npm run evaluate:photos -- [--scenes .cache/scenes] [--crops N] [--url http://HOST:PORT] [--data DIR] [--models DIR]
 *
 * Issue #22's acceptance figures, measured through the running server (POST /v1/predict), so that what is measured
 * is what callers get:
 * - scenes (training/cli/make-scenes.ts): faces found (matching as training/data/faces.ts), false faces per 100
 *   scenes (duplicates / elsewhere), and per task the accuracy on the found faces, as judged in the scene, against
 *   the same faces' own UTKFace crops sent with detect=none (age MAE both ways too);
 * - crops: N test-split UTKFace crops sent whole with detection on: found, and accuracy against detect=none.
 * Without --url the server is started here (serve/main.ts on a free port) and stopped at the end.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { AGE_SCHEMES, ageGroupIndex, ageGroupLabels, classIndex, TASKS, type FaceLabels, type Task } from '../../contract/labels.ts';
import sharp from 'sharp';
import { fitSimilarity, warpToCrop } from '../../contract/face/align.ts';
import type { FacePrediction, PhotoPrediction } from '../../contract/face/photo.ts';
import { FACE_TEMPLATE } from '../../contract/face/template.ts';
import { isMain, parsePositiveInt, runCli, UsageError } from '../../node-shared/cli-args.ts';
import { defaultDataSource, REPO_ROOT } from '../../node-shared/paths.ts';
import { cropTruth, matchDetections, readRgb, TRAINING_SEED, utkFaceSplit, type FaceMatches, type FoundFace, type TrueFace } from '../data/faces.ts';
import { shuffledIndices } from '../data/split.ts';
import type { Scene, SceneFace } from './make-scenes.ts';
import { freePort } from '../../node-shared/ports.ts';

const USAGE = `Usage: npm run evaluate:photos -- [--scenes DIR] [--crops N] [--url URL] [--data DIR] [--models DIR] [--concurrency N]

  --scenes DIR      scenes made by training/cli/make-scenes.ts                        (default: .cache/scenes)
  --crops N         test-split UTKFace crops sent whole; 0 skips them                      (default: 1000)
  --url URL         a server already running; without it one is started here and stopped
  --data DIR        the UTKFace folder                                 (default: ../shared/data/utkface)
  --models DIR      the started server's --models                                         (default: models)
  --concurrency N   requests in flight at once                                                (default: 4)`;

const DEFAULT_CROPS = 1000;
const DEFAULT_CONCURRENCY = 4;
const SERVER_READY_TIMEOUT_MS = 120_000;
const READY_POLL_MS = 200;

interface EvaluationConfig {
  scenes: string;
  crops: number;
  url?: string;
  data: string;
  models: string;
  concurrency: number;
}

function parseConfig(argv: string[]): EvaluationConfig {
  const { values } = parseArgs({
    args: argv,
    options: { scenes: { type: 'string' }, crops: { type: 'string' }, url: { type: 'string' }, data: { type: 'string' }, models: { type: 'string' }, concurrency: { type: 'string' }, help: { type: 'boolean' } },
    strict: true,
  });
  if (values.help) throw new UsageError('');
  const data = values.data ?? defaultDataSource();
  if (data === undefined) throw new UsageError('no --data given and ../shared/data/utkface is absent');
  const scenes = resolve(values.scenes ?? '.cache/scenes');
  if (!existsSync(join(scenes, 'scenes.json'))) {
    throw new UsageError(`--scenes "${scenes}" has no scenes.json; make the scenes with \`npx tsx training/cli/make-scenes.ts --out ${values.scenes ?? '.cache/scenes'} --count 200 --seed 1\``);
  }
  if (values.url !== undefined && !/^https?:\/\/[^/]+\/?$/.test(values.url)) throw new UsageError(`--url "${values.url}" is invalid; expected http://HOST:PORT`);
  return {
    scenes,
    crops: values.crops === undefined ? DEFAULT_CROPS : parsePositiveInt('--crops', values.crops, 0),
    url: values.url?.replace(/\/$/, ''),
    data: resolve(data),
    models: resolve(values.models ?? join(REPO_ROOT, 'models')),
    concurrency: values.concurrency === undefined ? DEFAULT_CONCURRENCY : parsePositiveInt('--concurrency', values.concurrency),
  };
}

// ---- the server ----

/** serve/main.ts on a free port, ready; `stop` ends it. */
async function startServer(models: string): Promise<{ url: string; stop(): Promise<void> }> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const argv = [...process.execArgv, join(REPO_ROOT, 'serve', 'main.ts'), '--host', '127.0.0.1', '--port', String(port), '--models', models, '--log-level', 'warn'];
  const child = spawn(process.execPath, argv, { stdio: ['ignore', 'inherit', 'inherit'] });
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  };
  try {
    await waitReady(url, child);
  } catch (error) {
    await stop();
    throw error;
  }
  return { url, stop };
}

async function waitReady(url: string, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + SERVER_READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`The server exited with code ${child.exitCode} before it was ready`);
    const ready = await fetch(`${url}/readyz`).then((r) => r.ok, () => false);
    if (ready) return;
    await new Promise((r) => setTimeout(r, READY_POLL_MS));
  }
  throw new Error(`The server at ${url} was not ready within ${SERVER_READY_TIMEOUT_MS / 1000} s`);
}

async function predict(url: string, bytes: Uint8Array, detect: boolean): Promise<PhotoPrediction> {
  const response = await fetch(`${url}/v1/predict${detect ? '' : '?detect=none'}`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: new Blob([new Uint8Array(bytes)]) });
  const body = await response.text();
  if (!response.ok) throw new Error(`POST /v1/predict${detect ? '' : '?detect=none'} answered ${response.status}: ${body.slice(0, 300)}`);
  return JSON.parse(body) as PhotoPrediction;
}

/** `work(item)` over `items`, at most `limit` at a time, results in order. */
async function mapBounded<T, R>(items: readonly T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      results[i] = await work(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return results;
}

// ---- scoring ----

/** One face's answer reduced to what is scored: each task's class index, and the age estimate in years. */
interface Judgement {
  index: Record<Task, number>;
  ageGroupOf: (age: number) => number;
  years?: number;
}

/** The task predictions of a judged face, or null where the server gave a reason instead. */
function judgement(face: FacePrediction): Judgement | null {
  if (face.reason !== undefined) return null;
  const tasks = face as unknown as Record<Task, { index: number; group?: string; years?: number }>;
  const scheme = AGE_SCHEMES.find((s) => ageGroupLabels(s)[tasks.age.index] === tasks.age.group);
  if (scheme === undefined) throw new Error(`The age group "${tasks.age.group}" (index ${tasks.age.index}) is in no known scheme: ${AGE_SCHEMES.join(', ')}`);
  const index = Object.fromEntries(TASKS.map((task) => [task, tasks[task].index])) as Record<Task, number>;
  return { index, ageGroupOf: (age) => ageGroupIndex(age, scheme), years: tasks.age.years };
}

/** Correct answers per task and age error, over faces judged both ways. */
class PairedScore {
  count = 0;
  private readonly correct = { detected: zeroPerTask(), whole: zeroPerTask() };
  private readonly ageError = { detected: 0, whole: 0 };

  add(labels: FaceLabels, detected: Judgement, whole: Judgement): void {
    this.count++;
    for (const [way, judged] of [['detected', detected], ['whole', whole]] as const) {
      for (const task of TASKS) {
        const truth = task === 'age' ? judged.ageGroupOf(labels.age) : classIndex(labels, task);
        if (judged.index[task] === truth) this.correct[way][task]++;
      }
      this.ageError[way] += judged.years === undefined ? Number.NaN : Math.abs(judged.years - labels.age);
    }
  }

  lines(detectedName: string, wholeName: string): string[] {
    const pct = (n: number): number => (100 * n) / this.count;
    const lines = TASKS.map((task) => {
      const [d, w] = [pct(this.correct.detected[task]), pct(this.correct.whole[task])];
      return `  ${task.padEnd(9)} accuracy ${detectedName} ${d.toFixed(2)}%, ${wholeName} ${w.toFixed(2)}%, difference ${(d - w).toFixed(2)} points`;
    });
    const [d, w] = [this.ageError.detected / this.count, this.ageError.whole / this.count];
    lines.push(`  age MAE   ${detectedName} ${d.toFixed(3)} years, ${wholeName} ${w.toFixed(3)} years, difference ${(d - w).toFixed(3)} years`);
    return lines;
  }
}

const zeroPerTask = (): Record<Task, number> => ({ age: 0, ethnicity: 0, gender: 0 });

/** The server's faces as the matcher reads them, best score first (the answer lists the largest first). */
function foundFaces(answer: PhotoPrediction): { faces: FacePrediction[]; positions: FoundFace[] } {
  const faces = answer.faces.filter((f) => f.landmarks !== null).sort((a, b) => (b.score ?? 0) - (a.score ?? 0));
  return { faces, positions: faces.map((f) => ({ box: f.box, landmarks: f.landmarks! })) };
}

/** The scene's pixels under a face's placement, as a PNG of the template's size: its UTKFace crop as the scene holds it. */
async function placedCrop(sceneFile: string, face: SceneFace): Promise<Uint8Array> {
  const scene = await readRgb(sceneFile);
  const template = cropTruth(FACE_TEMPLATE.size);
  const toScene = fitSimilarity([template.rightEye, template.leftEye], [face.rightEye, face.leftEye]);
  const side = FACE_TEMPLATE.size;
  const pixels = warpToCrop(scene, toScene, side, { width: side, height: side, channels: 3 });
  return new Uint8Array(await sharp(pixels, { raw: { width: side, height: side, channels: 3 } }).png().toBuffer());
}

/** A line per detection that matched no face or a face already taken, to look at. */
function falseFaceLines(scene: Scene, faces: FacePrediction[], matches: FaceMatches): string[] {
  const taken = new Set(matches.detectionOf);
  return faces.flatMap((face, d) => (taken.has(d) ? [] : [`  false face: ${scene.file} score ${face.score} box ${JSON.stringify(face.box)}`]));
}

// ---- the two evaluations ----

async function evaluateScenes(url: string, config: EvaluationConfig): Promise<string[]> {
  const { scenes, split, composition } = JSON.parse(await readFile(join(config.scenes, 'scenes.json'), 'utf8')) as { scenes: Scene[]; split?: string; composition?: string };
  const perScene = await mapBounded(scenes, config.concurrency, async (scene) => {
    const answer = await predict(url, await readFile(join(config.scenes, scene.file)), true);
    const { faces, positions } = foundFaces(answer);
    const matches = matchDetections(positions, scene.faces);
    return { scene, faces, matches };
  });
  const found = perScene.flatMap(({ scene, faces, matches }) => matches.detectionOf.flatMap((d, f) => (d < 0 ? [] : [{ scene, truth: scene.faces[f], answer: faces[d] }])));
  const wholeAnswers = await mapBounded(found, config.concurrency, async ({ truth }) => (await predict(url, await readFile(join(config.data, truth.source)), false)).faces[0]);
  // Where the gap comes from: the face cut from the scene exactly where it was placed, judged as a crop.
  const placedAnswers = await mapBounded(found, config.concurrency, async ({ scene, truth }) => (await predict(url, await placedCrop(join(config.scenes, scene.file), truth), false)).faces[0]);
  const score = new PairedScore();
  const placedScore = new PairedScore();
  let notJudged = 0;
  found.forEach(({ truth, answer }, i) => {
    const [detected, whole, placed] = [judgement(answer), judgement(wholeAnswers[i]), judgement(placedAnswers[i])];
    if (detected === null || whole === null || placed === null) notJudged++;
    else {
      score.add(truth.labels, detected, whole);
      placedScore.add(truth.labels, placed, whole);
    }
  });
  const faceCount = scenes.reduce((sum, s) => sum + s.faces.length, 0);
  const duplicates = perScene.reduce((sum, s) => sum + s.matches.duplicates, 0);
  const elsewhere = perScene.reduce((sum, s) => sum + s.matches.elsewhere, 0);
  const perHundred = (n: number): string => ((100 * n) / scenes.length).toFixed(2);
  return [
    // Scenes written before the composition was recorded are all ellipse ones.
    `scenes: ${scenes.length} from ${config.scenes} (${split ?? 'test'}-split faces, ${composition ?? 'ellipse'} crops)`,
    `  faces ${faceCount}, found ${found.length}, recall ${((100 * found.length) / faceCount).toFixed(2)}%`,
    `  false faces per 100 scenes ${perHundred(duplicates + elsewhere)} (duplicates ${perHundred(duplicates)} / elsewhere ${perHundred(elsewhere)})`,
    `  found faces judged both ways: ${score.count} (${notJudged} not judged: the server gave a reason)`,
    ...score.lines('in the scene', 'crop with detect=none'),
    `  the same faces cut from the scenes where they were placed (no detector, no alignment), detect=none:`,
    ...placedScore.lines('placed cut', 'crop with detect=none'),
    ...perScene.flatMap(({ scene, faces, matches }) => falseFaceLines(scene, faces, matches)),
  ];
}

async function evaluateCrops(url: string, config: EvaluationConfig): Promise<string[]> {
  const { test } = await utkFaceSplit(config.data);
  const chosen = Array.from(shuffledIndices(test.length, TRAINING_SEED).subarray(0, Math.min(config.crops, test.length)), (i) => test[i]);
  const results = await mapBounded(chosen, config.concurrency, async (file) => {
    const bytes = await readFile(join(config.data, file.name));
    const [detectedAnswer, wholeAnswer] = [await predict(url, bytes, true), await predict(url, bytes, false)];
    const truth: TrueFace = cropTruth(detectedAnswer.image.width);
    const { faces, positions } = foundFaces(detectedAnswer);
    const d = matchDetections(positions, [truth]).detectionOf[0];
    return { labels: file.labels, detected: d < 0 ? undefined : faces[d], whole: wholeAnswer.faces[0], falseFaces: faces.length - (d < 0 ? 0 : 1) };
  });
  const score = new PairedScore();
  let found = 0;
  let notJudged = 0;
  for (const result of results) {
    if (result.detected === undefined) continue;
    found++;
    const [detected, whole] = [judgement(result.detected), judgement(result.whole)];
    if (detected === null || whole === null) notJudged++;
    else score.add(result.labels, detected, whole);
  }
  const falseFaces = results.reduce((sum, r) => sum + r.falseFaces, 0);
  return [
    `crops: ${chosen.length} test-split UTKFace crops sent whole`,
    `  found ${found} (${((100 * found) / chosen.length).toFixed(2)}%), other faces reported ${falseFaces}`,
    `  found crops judged both ways: ${score.count} (${notJudged} not judged: the server gave a reason)`,
    ...score.lines('with detection', 'detect=none'),
  ];
}

async function main(argv: string[]): Promise<void> {
  const config = parseConfig(argv);
  const server = config.url === undefined ? await startServer(config.models) : undefined;
  const url = config.url ?? server!.url;
  try {
    const started = performance.now();
    for (const line of await evaluateScenes(url, config)) console.log(line);
    if (config.crops > 0) for (const line of await evaluateCrops(url, config)) console.log(line);
    console.log(`(${url}, ${config.concurrency} requests at a time, ${((performance.now() - started) / 1000).toFixed(0)} s)`);
  } finally {
    await server?.stop();
  }
}

if (isMain(import.meta.url)) runCli(USAGE, main);
