/**
 * `npm run bench:web`: in headless Chromium (Debian's), the bytes the page transfers from its first request to
 * the end of its first prediction (empty cache); the median in-browser time of the three models on a whole
 * face crop over `--runs` predictions (detect 'none': timingsMs.inference, no decoding); the time per photo
 * with face detection (detector, alignment and the three models per face) on a photo of one face and one of
 * four; and the time per frame of the live webcam view, fed a face by Chromium's fake camera.
 *
 *   npm run bench:web                      page from the inference server if it can serve it, else the demo server
 *   npm run bench:web -- --url http://localhost:3000/   a page that is already being served
 *   npm run bench:web -- --runs 200 --threads 2 --camera-seconds 10
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import type { DemoInfo } from '../browser/main.ts';
import type { DetectMode, PhotoPrediction } from '../browser/models.ts';
import { reportUsageError } from '../../../node-shared/cli-args.ts';
import { REPO_ROOT } from '../../../node-shared/paths.ts';
import { chromiumMissing, fakeCameraArgs, launchChromium, recordRequests, writeFakeCamera } from './chromium.ts';
import { faceImages, type FaceImage } from './face-images.ts';
import { startHarness, type Harness } from './harness.ts';
import { cameraFrames, composeScene, sceneSpec } from './scenes.ts';

/** The fake camera's video, written under .cache/ (it holds face pixels). */
const CAMERA_FILE = join(REPO_ROOT, '.cache', 'bench-web-camera.y4m');
const CAMERA = { width: 640, height: 480, fps: 30, frames: 60 };
/** The photos timed with face detection: one face, and four faces. */
const PHOTO_SCENES = ['one-face-640x480', 'four-faces-1280x960'];
/** Frames judged before the webcam's figures are read, so that start-up is not counted. */
const CAMERA_WARM_UP_FRAMES = 10;

interface BenchConfig {
  runs: number;
  /** how long the webcam view runs before its frame rate is read */
  cameraSeconds: number;
  /** a page already served somewhere; default: start the harness */
  url?: string;
  /** page option `threads` (0 = onnxruntime's choice) */
  threads: number;
}

function parseArgs(argv: readonly string[]): BenchConfig {
  const config: BenchConfig = { runs: 50, threads: 0, cameraSeconds: 8 };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (value === undefined) throw new Error(`Option ${flag} needs a value`);
    i++;
    if (flag === '--camera-seconds') {
      const n = Number(value);
      if (!Number.isFinite(n) || n <= 0) throw new Error(`--camera-seconds must be a positive number; got "${value}"`);
      config.cameraSeconds = n;
    } else if (flag === '--runs' || flag === '--threads') {
      const n = Number(value);
      if (!Number.isInteger(n) || n < (flag === '--runs' ? 1 : 0)) throw new Error(`${flag} must be a whole number${flag === '--runs' ? ' of at least 1' : ''}; got "${value}"`);
      config[flag === '--runs' ? 'runs' : 'threads'] = n;
    } else if (flag === '--url') {
      config.url = new URL(value).href;
    } else {
      throw new Error(`Unknown argument "${flag}"; expected one of: --runs, --url, --threads, --camera-seconds`);
    }
  }
  return config;
}

const quantile = (values: readonly number[], q: number): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
};

const USAGE = 'Usage: npm run bench:web -- [--runs 50] [--threads 0] [--camera-seconds 8] [--url URL]\n';

const ms = (value: number): string => `${value.toFixed(2)} ms`;

function predictIn(page: Page, image: FaceImage, detect: DetectMode): Promise<PhotoPrediction> {
  return page.evaluate(
    ({ base64, type, mode }) => window.demo.predict(new Blob([Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))], { type }), { detect: mode }),
    { base64: Buffer.from(image.bytes).toString('base64'), type: image.type, mode: detect },
  );
}

function printQuantiles(title: string, rows: readonly (readonly [string, number[]])[]): void {
  console.log(`${title.padEnd(34)} median     p90       min`);
  for (const [name, values] of rows) {
    console.log(`  ${name.padEnd(30)} ${ms(quantile(values, 0.5)).padStart(9)} ${ms(quantile(values, 0.9)).padStart(9)} ${ms(Math.min(...values)).padStart(9)}`);
  }
}

/** The live webcam view on the fake camera for `seconds`: frames per second and ms per frame, as the page shows them. */
async function benchCamera(page: Page, seconds: number): Promise<{ fps: number; frameMs: number; judged: number; dropped: number; faces: number }> {
  await page.getByRole('button', { name: 'Use the webcam' }).click();
  await page.waitForFunction((frames) => Number(document.getElementById('camera-stats')?.dataset.judged ?? 0) >= frames, CAMERA_WARM_UP_FRAMES, { timeout: 120_000 });
  await page.waitForTimeout(seconds * 1000);
  const stats = await page.evaluate(() => {
    const { fps, frameMs, judged, dropped } = (document.getElementById('camera-stats') as HTMLElement).dataset;
    return { fps, frameMs, judged, dropped, boxes: (document.getElementById('camera-overlay') as HTMLElement).dataset.boxes ?? '[]' };
  });
  await page.getByRole('button', { name: 'Stop the webcam' }).click();
  return { fps: Number(stats.fps), frameMs: Number(stats.frameMs), judged: Number(stats.judged), dropped: Number(stats.dropped), faces: (JSON.parse(stats.boxes) as unknown[]).length };
}

async function main(): Promise<void> {
  if (process.argv.includes('--help') || process.argv.includes('-h')) {
    process.stdout.write(USAGE);
    return;
  }
  let config: BenchConfig;
  try {
    config = parseArgs(process.argv.slice(2));
  } catch (error) {
    reportUsageError((error as Error).message, USAGE);
    process.exit(2);
  }
  const missing = chromiumMissing();
  if (missing !== undefined) {
    process.stderr.write(`${missing}\n`);
    process.exit(1);
  }
  let harness: Harness | undefined;
  if (config.url === undefined) harness = await startHarness((line) => console.log(line));
  const pageUrl = new URL(config.threads > 0 ? `?threads=${config.threads}` : '', config.url ?? harness?.pageUrl).href;
  const { faces, source } = await faceImages(10);
  const photos = await Promise.all(PHOTO_SCENES.map((name) => composeScene(sceneSpec(name), faces.slice(1), 'png')));
  await mkdir(join(REPO_ROOT, '.cache'), { recursive: true });
  await writeFakeCamera(CAMERA_FILE, await cameraFrames(faces[0], CAMERA), CAMERA.fps);
  const browser = await launchChromium(fakeCameraArgs(CAMERA_FILE));
  try {
    // A fresh context: an empty cache, as a first visit.
    const context = await browser.newContext();
    const page = await context.newPage();
    const recorder = recordRequests(page);
    const started = performance.now();
    await page.goto(pageUrl);
    const info: DemoInfo = await page.evaluate(() => window.demo.ready);
    const readyMs = performance.now() - started;
    const firstFace = faces[0];
    await predictIn(page, firstFace, 'faces');
    const firstPredictionMs = performance.now() - started;
    await recorder.settled();
    const fetched = recorder.requests.filter((r) => !r.url.startsWith('blob:') && !r.url.startsWith('data:'));
    const transferred = fetched.reduce((sum, r) => sum + (r.transferred ?? 0), 0);

    const inference: number[] = [];
    const decode: number[] = [];
    const total: number[] = [];
    for (let i = 0; i < config.runs; i++) {
      const { timingsMs } = await predictIn(page, faces[(i + 1) % faces.length], 'none');
      inference.push(timingsMs.inference);
      decode.push(timingsMs.decode);
      total.push(timingsMs.total);
    }

    const photoRows: [string, number[]][] = [];
    const photoFaces: number[] = [];
    for (const photo of photos) {
      const found: number[] = [];
      const models: number[] = [];
      const all: number[] = [];
      for (let i = 0; i < config.runs; i++) {
        const { timingsMs, faces: answered } = await predictIn(page, photo, 'faces');
        found.push(timingsMs.detect + timingsMs.align + timingsMs.inference);
        models.push(timingsMs.inference);
        all.push(timingsMs.total);
        if (i === 0) photoFaces.push(answered.length);
      }
      const name = photo.name.replace(/\.png$/, '');
      photoRows.push([`${name}: detect+align+models`, found], [`${name}: models only`, models], [`${name}: total`, all]);
    }

    const camera = await benchCamera(page, config.cameraSeconds);

    console.log('');
    console.log(`page: ${pageUrl} (${harness === undefined ? 'given' : `from the ${harness.pageServer === 'serve' ? 'inference' : 'demo'} server; ${harness.modelsSource} models`})`);
    console.log(`browser: ${browser.version()} headless; onnxruntime-web ${info.version}, ${info.backend}, ${info.threads} thread(s), cross-origin isolated: ${info.crossOriginIsolated}`);
    console.log(`images: ${faces.length} ${source} faces, JPEG as stored; photos composed from them (PNG): ${photos.map((p, i) => `${p.name} (${photoFaces[i]} faces found)`).join(', ')}`);
    console.log('');
    console.log(`bytes transferred before the first prediction: ${transferred.toLocaleString('en')} (${(transferred / 1024 / 1024).toFixed(2)} MiB) in ${fetched.length} requests`);
    for (const r of [...fetched].sort((a, b) => (b.transferred ?? 0) - (a.transferred ?? 0))) {
      console.log(`  ${String(r.transferred ?? '?').padStart(10)}  ${new URL(r.url).pathname}`);
    }
    console.log(`time to models ready: ${Math.round(readyMs)} ms; to the first prediction (with detection): ${Math.round(firstPredictionMs)} ms`);
    console.log('');
    printQuantiles(`face crop as one face, ${config.runs} runs:`, [['inference (3 models)', inference], ['decode + preprocess', decode], ['total', total]]);
    console.log('');
    printQuantiles(`photos with detection, ${config.runs} runs:`, photoRows);
    console.log('');
    console.log(`webcam (fake camera ${CAMERA.width}x${CAMERA.height} at ${CAMERA.fps} frames/s, one face; ${config.cameraSeconds} s after ${CAMERA_WARM_UP_FRAMES} frames): ${camera.fps.toFixed(1)} frames/s judged, median ${camera.frameMs.toFixed(1)} ms per frame; ${camera.judged} judged, ${camera.dropped} dropped; ${camera.faces} face(s) in the last frame`);
    console.log('');
    const median = (values: number[]): number => quantile(values, 0.5);
    console.log(
      JSON.stringify({
        runs: config.runs,
        threads: info.threads,
        medianInferenceMs: median(inference),
        medianDecodeMs: median(decode),
        medianTotalMs: median(total),
        medianPhotoOneFaceMs: median(photoRows[0][1]),
        medianPhotoFourFacesMs: median(photoRows[3][1]),
        webcamFps: camera.fps,
        webcamMedianFrameMs: camera.frameMs,
        bytesBeforeFirstPrediction: transferred,
        requestsBeforeFirstPrediction: fetched.length,
      }),
    );
  } finally {
    await browser.close();
    await harness?.close();
  }
}

await main();
