/**
 * The web demo end to end, in Debian's headless Chromium: the page from the inference server (or, while the
 * server cannot serve it, from the demo's own server), photos uploaded through the page, window.demo.predict
 * against the server's POST /v1/predict (faces found and aligned in both, or the whole image as one face with
 * detect=none) on UTKFace crops and on scenes composed from them, the webcam followed live from a fake camera,
 * and every request the page makes recorded. Screenshots go to test-artifacts/ (gitignored: they hold UTKFace pixels).
 */
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { existsSync } from 'node:fs';
import { Jimp } from 'jimp';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import type { FacePrediction, PhotoPrediction } from '../contract/face/photo.ts';
import { DEFAULT_MAX_PIXELS, DEFAULT_MIN_IMAGE_SIDE } from '../contract/limits.ts';
import { DEFAULT_WORKING_SIDE } from '../imaging/photo-decode.ts';
import { blackPng } from './helpers/serve-harness.ts';
import type { DemoInfo } from '../web-demo/src/browser/main.ts';
import type { DetectMode, TaskPrediction } from '../web-demo/src/browser/models.ts';
import { ORT_FILES } from '../web-demo/src/browser/runtime.ts';
import { WORKING_SIDE } from '../web-demo/src/browser/working-size.ts';
import { DEFAULT_UTKFACE as UTKFACE_DIR, REPO_ROOT } from '../node-shared/paths.ts';
import { chromiumMissing, fakeCameraArgs, launchChromium, recordRequests, writeFakeCamera, type RecordedRequest } from '../web-demo/src/node/chromium.ts';
import { faceImages, type FaceImage } from '../web-demo/src/node/face-images.ts';
import { startHarness, type Harness } from '../web-demo/src/node/harness.ts';
import { cameraFrames, composeScene, SCENES, sceneSpec } from '../web-demo/src/node/scenes.ts';

const ARTIFACTS = join(REPO_ROOT, 'test-artifacts');
/** Across runtimes on the same pixels (STYLE.md). */
const TOLERANCE = 1e-4;
const PARITY_FACES = 24;
/** Issue #23's bounds for the page against the server on the same file, faces found by each. */
const BOX_TOLERANCE_PX = 2;
const PROBABILITY_TOLERANCE = 0.01;
/** Classes must be equal unless the server's top two probabilities are this close. */
const NEAR_TIE = 0.02;
const FAKE_CAMERA_FILE = join(REPO_ROOT, 'test-artifacts', 'fake-camera.y4m');

const missing = chromiumMissing();
if (missing !== undefined) console.log(`# web-e2e skipped: ${missing}`);

/** The same image, re-encoded losslessly, so both runtimes decode exactly the same pixels. */
async function asPng(face: FaceImage): Promise<FaceImage> {
  const image = await Jimp.fromBuffer(Buffer.from(face.bytes));
  return { name: face.name.replace(/\.jpe?g(\.chip\.jpg)?$/i, '.png'), type: 'image/png', bytes: new Uint8Array(await image.getBuffer('image/png')) };
}

/** The server's refusal of an image: its status and {"error": {"code", "message"}}. */
async function serverRefusal(apiUrl: string, bytes: Buffer, type: string): Promise<{ status: number; code: string; message: string }> {
  const response = await fetch(`${apiUrl}/v1/predict`, { method: 'POST', body: new Uint8Array(bytes), headers: { 'Content-Type': type } });
  const body = (await response.json()) as { error: { code: string; message: string } };
  return { status: response.status, ...body.error };
}

/** The server's answer for a file: faces found (`detect` 'faces'), or the image as one face ('none'). */
async function serverPredict(apiUrl: string, face: FaceImage, detect: DetectMode = 'none'): Promise<PhotoPrediction> {
  const response = await fetch(`${apiUrl}/v1/predict?detect=${detect}`, { method: 'POST', body: face.bytes, headers: { 'Content-Type': face.type } });
  const body = (await response.json()) as PhotoPrediction;
  assert.equal(response.status, 200, `POST /v1/predict ${face.name}: ${JSON.stringify(body)}`);
  if (detect === 'none') assert.equal(body.faces.length, 1, 'detect=none answers one face');
  return body;
}

async function browserPredict(page: Page, face: FaceImage, detect: DetectMode = 'none'): Promise<PhotoPrediction> {
  return page.evaluate(
    ({ base64, name, type, detect: mode }) => window.demo.predict(new File([Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))], name, { type }), { detect: mode }),
    { base64: Buffer.from(face.bytes).toString('base64'), name: face.name, type: face.type, detect },
  );
}

const TASK_NAMES = ['age', 'ethnicity', 'gender'];
const tasksOf = (face: FacePrediction): string[] => Object.keys(face).filter((key) => TASK_NAMES.includes(key)).sort();
const taskOf = (face: FacePrediction, task: string): TaskPrediction => face[task] as TaskPrediction;

/** Asserts the answer's JSON shape: the server's keys, timings in milliseconds. */
function assertShape(server: PhotoPrediction, browser: PhotoPrediction, what: string): void {
  assert.deepEqual(Object.keys(browser).sort(), Object.keys(server).sort(), `${what}: the same top-level keys`);
  assert.deepEqual(browser.image, server.image, `${what}: the photo's size`);
  assert.deepEqual(Object.keys(browser.timingsMs).sort(), Object.keys(server.timingsMs).sort(), `${what}: timingsMs keys`);
  for (const value of Object.values(browser.timingsMs)) assert.ok(Number.isFinite(value) && value >= 0, `${what}: timings are milliseconds`);
}

/** Two faces' task answers: the same fields; returns the largest probability difference (and relative difference in years). */
function compareTasks(server: FacePrediction, browser: FacePrediction, what: string): number {
  assert.deepEqual(tasksOf(browser), tasksOf(server), `${what}: the same tasks`);
  let worst = 0;
  for (const task of tasksOf(server)) {
    const s = taskOf(server, task);
    const b = taskOf(browser, task);
    assert.deepEqual(Object.keys(b).sort(), Object.keys(s).sort(), `${what} ${task}: the same fields`);
    assert.equal(b.probabilities.length, s.probabilities.length, `${what} ${task}: one probability per class`);
    s.probabilities.forEach((p, i) => (worst = Math.max(worst, Math.abs(p - b.probabilities[i]))));
    // An age in years (where a model predicts one) counts by its relative difference.
    if (s.years !== undefined) worst = Math.max(worst, Math.abs(s.years - (b.years as number)) / Math.max(1, Math.abs(s.years)));
  }
  return worst;
}

/** The whole-image answers (detect=none): the same shape, one face covering the image; returns the largest difference. */
function compareWhole(server: PhotoPrediction, browser: PhotoPrediction, what: string): number {
  assertShape(server, browser, what);
  assert.equal(browser.faces.length, 1, `${what}: one face`);
  const { box, score, landmarks } = browser.faces[0];
  assert.deepEqual({ box, score, landmarks }, { box: server.faces[0].box, score: null, landmarks: null }, `${what}: the whole image is the face`);
  return compareTasks(server.faces[0], browser.faces[0], what);
}

const top2Margin = (probabilities: readonly number[]): number => {
  const sorted = [...probabilities].sort((a, b) => b - a);
  return sorted[0] - (sorted[1] ?? 0);
};

interface FacesDifference {
  box: number;
  probability: number;
  faces: number;
  /** task answers compared (classes checked where not a near tie) */
  classes: number;
}

const boxDistance = (a: FacePrediction, b: FacePrediction): number => Math.max(Math.abs(a.box.x - b.box.x), Math.abs(a.box.y - b.box.y), Math.abs(a.box.width - b.box.width), Math.abs(a.box.height - b.box.height));

/**
 * Faces found by each on the same file: the same number, each server face paired with the page's nearest box
 * (the largest-first order can swap two faces of nearly one size); boxes, judged or not, and classes checked.
 */
function compareFaces(server: PhotoPrediction, browser: PhotoPrediction, what: string): FacesDifference {
  assertShape(server, browser, what);
  assert.equal(browser.faces.length, server.faces.length, `${what}: the same number of faces (server ${JSON.stringify(server.faces.map((f) => f.box))}, page ${JSON.stringify(browser.faces.map((f) => f.box))})`);
  const difference: FacesDifference = { box: 0, probability: 0, faces: server.faces.length, classes: 0 };
  for (const [i, s] of server.faces.entries()) {
    const b = [...browser.faces].sort((x, y) => boxDistance(s, x) - boxDistance(s, y))[0];
    const face = `${what} face ${i + 1}`;
    difference.box = Math.max(difference.box, boxDistance(s, b));
    assert.ok(boxDistance(s, b) <= BOX_TOLERANCE_PX, `${face}: box ${JSON.stringify(b.box)} within ${BOX_TOLERANCE_PX} px of the server's ${JSON.stringify(s.box)}`);
    assert.equal(b.reason === undefined, s.reason === undefined, `${face}: judged by both or neither (server: ${s.reason}, page: ${b.reason})`);
    if (s.reason !== undefined) continue;
    difference.probability = Math.max(difference.probability, compareTasks(s, b, face));
    for (const task of tasksOf(s)) {
      if (top2Margin(taskOf(s, task).probabilities) <= NEAR_TIE) continue;
      difference.classes++;
      assert.equal(taskOf(b, task).index, taskOf(s, task).index, `${face} ${task}: same class`);
    }
  }
  return difference;
}

const worstOf = (a: FacesDifference, b: FacesDifference): FacesDifference => ({
  box: Math.max(a.box, b.box),
  probability: Math.max(a.probability, b.probability),
  faces: a.faces + b.faces,
  classes: a.classes + b.classes,
});
const NO_DIFFERENCE: FacesDifference = { box: 0, probability: 0, faces: 0, classes: 0 };

const CAMERA_WIDTH = 640;
const CAMERA_HEIGHT = 480;
const CAMERA_FPS = 30;
const CAMERA_FRAMES = 60;

/** The fake camera: 640x480 looking at one face on a gradient, the face sliding left and right over two seconds. */
async function writeCameraVideo(face: FaceImage): Promise<void> {
  await writeFakeCamera(FAKE_CAMERA_FILE, await cameraFrames(face, { width: CAMERA_WIDTH, height: CAMERA_HEIGHT, fps: CAMERA_FPS, frames: CAMERA_FRAMES }), CAMERA_FPS);
}

describe('web demo in headless Chromium', { skip: missing }, () => {
  let harness: Harness;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let info: DemoInfo;
  let faces: FaceImage[] = [];
  let facesSource = '';
  const recorders: ReturnType<typeof recordRequests>[] = [];
  const pageErrors: string[] = [];

  /** Every request of every page so far, once their sizes are known. */
  async function allRequests(): Promise<RecordedRequest[]> {
    for (const recorder of recorders) await recorder.settled();
    return recorders.flatMap((recorder) => recorder.requests);
  }

  async function openPage(query = '', viewport = { width: 1280, height: 900 }): Promise<Page> {
    const opened = await context.newPage();
    await opened.setViewportSize(viewport);
    recorders.push(recordRequests(opened));
    opened.on('pageerror', (error) => pageErrors.push(`${error.name}: ${error.message}`));
    opened.on('console', (message) => {
      if (message.type() === 'error') pageErrors.push(`console.error: ${message.text()}`);
    });
    await opened.goto(`${harness.pageUrl}${query}`);
    return opened;
  }

  before(async () => {
    harness = await startHarness((line) => console.log(`# ${line}`));
    if (harness.pageServer === 'demo') console.log(`# TODO: the page is served by the demo server because: ${harness.serveShortfalls.join('; ')}`);
    const picked = await faceImages(PARITY_FACES);
    faces = picked.faces;
    facesSource = picked.source;
    console.log(`# faces: ${faces.length} from ${facesSource}; models: ${harness.modelsSource}; page from: ${harness.pageServer}`);
    await mkdir(ARTIFACTS, { recursive: true });
    await writeCameraVideo(faces[0]);
    browser = await launchChromium(fakeCameraArgs(FAKE_CAMERA_FILE));
    context = await browser.newContext();
    page = await openPage();
    info = await page.evaluate(() => window.demo.ready);
  });

  after(async () => {
    await browser?.close();
    await harness?.close();
  });

  it('loads every model from its own origin with onnxruntime-web on WebAssembly, cross-origin isolated', async () => {
    assert.equal(info.backend, 'wasm');
    assert.equal(info.version, '1.30.0');
    assert.deepEqual(info.models.map((m) => m.task).sort(), ['age', 'ethnicity', 'gender']);
    for (const model of info.models) assert.ok(model.labels.length >= 2, `${model.task} labels come from its metadata`);
    // Models that read the same input run as one merged graph, as on the server.
    const specs = new Set(info.models.map((m) => JSON.stringify(m.input)));
    assert.equal(info.graphs.length, specs.size, `one session per input spec: ${JSON.stringify(info.graphs)}`);
    assert.deepEqual(info.graphs.flatMap((g) => g.tasks).sort(), ['age', 'ethnicity', 'gender']);
    for (const graph of info.graphs.filter((g) => g.tasks.length > 1)) assert.ok(graph.nodes !== undefined && graph.nodes.merged <= graph.nodes.separate);
    assert.deepEqual(info.detectors.map((d) => d.file), ['face_detection_back_256x256_barracuda.onnx'], 'the manifest\'s face detector, through the same loader');
    assert.equal(WORKING_SIDE, DEFAULT_WORKING_SIDE, 'the page finds faces at the server\'s working size');
    assert.equal(info.crossOriginIsolated, true, 'COOP/COEP make the page cross-origin isolated');
    assert.ok(info.threads >= 1);
    const status = await page.locator('#status').textContent();
    assert.match(status ?? '', new RegExp(`Ready: 3 models on WebAssembly \\(CPU\\), ${info.threads} threads?`));
    // Said once through the live region; the status line itself is not one (it changes around every answer).
    await page.waitForFunction(() => /^Ready: 3 models/.test(document.getElementById('announcer')?.textContent ?? ''));
    assert.deepEqual(await page.locator('#status').evaluate((node) => [node.getAttribute('role'), node.getAttribute('aria-live')]), [null, null]);
  });

  it('fetches only the WebAssembly build of onnxruntime-web (no WebGPU, JSEP or JSPI files)', async () => {
    const ortRequests = (await allRequests()).filter((r) => r.url.includes('/ort/')).map((r) => new URL(r.url).pathname.replace('/ort/', ''));
    assert.deepEqual([...new Set(ortRequests)].sort(), [...ORT_FILES.wasm].sort());
  });

  it('outlines and labels the face found in a crop chosen with the file input, and shows its aligned crop, each task’s top label with a bar per class, and the times', async () => {
    // Lossless, so the server's answer is the page's to the last digit.
    const face = await asPng(faces[1]);
    const expected = await serverPredict(harness.apiUrl, face, 'faces');
    assert.equal(expected.faces.length, 1, 'the server finds the one face');
    await page.setInputFiles('#file-input', { name: face.name, mimeType: face.type, buffer: Buffer.from(face.bytes) });
    await page.locator('#results').waitFor({ state: 'visible' });
    assert.equal(await page.locator('#face-boxes button').count(), 1, 'one box over the photo');
    assert.equal(await page.locator('#face-boxes button').getAttribute('aria-pressed'), 'true', 'the only face is selected');
    const label = (await page.locator('#face-boxes .face-label').textContent()) ?? '';
    for (const model of info.models) {
      const top = taskOf(expected.faces[0], model.task);
      assert.ok(label.includes(top.group ?? top.label ?? '?'), `the box's label names ${model.task} "${top.group ?? top.label}": "${label}"`);
      const card = page.locator(`.task[data-task="${model.task}"]`);
      assert.equal(await card.locator('.bars li').count(), model.labels.length, `${model.task}: one bar per class`);
      const names = await card.locator('.bars .name').allTextContents();
      assert.deepEqual(names, model.labels, `${model.task}: bars named by the metadata's labels, in order`);
      const answer = await card.locator('.answer').textContent();
      assert.ok(answer?.startsWith(top.group ?? top.label ?? '?'), `${model.task}: shows "${top.group ?? top.label}", got "${answer}"`);
      // An answer close to a guess says so, as the API marks it; a sure one does not.
      assert.equal(await card.evaluate((el) => el.classList.contains('uncertain')), top.uncertain, `${model.task}: marked uncertain exactly when the API says so`);
      assert.equal(answer?.includes('uncertain'), top.uncertain, `${model.task}: says "uncertain" exactly when the API says so`);
    }
    const crop = await page.locator('#crop-canvas').evaluate((canvas: HTMLCanvasElement) => ({ width: canvas.width, height: canvas.height }));
    assert.deepEqual(crop, { width: info.models[0].input.width, height: info.models[0].input.height }, 'the crop is the model input, drawn at its own size');
    assert.match((await page.locator('#crop-caption').textContent()) ?? '', /aligned by its eyes, nose and mouth/);
    assert.match((await page.locator('#timings').textContent()) ?? '', /Inference \d+\.\d ms · face detection \d+\.\d ms/);
    assert.match((await page.locator('#faces-summary').textContent()) ?? '', /^1 face found\.$/);
    await page.screenshot({ path: join(ARTIFACTS, 'web-demo.png'), fullPage: true });
  });

  it(`finds the same faces as POST /v1/predict in ${PARITY_FACES} UTKFace crops decoded to the same pixels: boxes within ${BOX_TOLERANCE_PX} px, probabilities within ${PROBABILITY_TOLERANCE}`, async () => {
    let worst = NO_DIFFERENCE;
    for (const face of await Promise.all(faces.map(asPng))) {
      worst = worstOf(worst, compareFaces(await serverPredict(harness.apiUrl, face, 'faces'), await browserPredict(page, face, 'faces'), face.name));
    }
    console.log(`# ${faces.length} ${facesSource} crops (PNG), faces found: ${worst.faces}; largest box difference ${worst.box.toFixed(1)} px, probability difference ${worst.probability.toExponential(2)}; ${worst.classes} classes compared`);
    assert.ok(worst.probability <= PROBABILITY_TOLERANCE, `largest difference ${worst.probability} exceeds ${PROBABILITY_TOLERANCE}`);
  });

  for (const format of ['png', 'jpeg'] as const) {
    it(`finds the same faces as POST /v1/predict in scenes composed from UTKFace crops (${format.toUpperCase()}, 640x480 to 2400x1800): boxes within ${BOX_TOLERANCE_PX} px, probabilities within ${PROBABILITY_TOLERANCE}`, async (t) => {
      if (facesSource !== 'utkface' || !existsSync(UTKFACE_DIR)) {
        t.skip(`UTKFace is not at ${UTKFACE_DIR}: the scenes are composed from its crops`);
        return;
      }
      let worst = NO_DIFFERENCE;
      const scenes = SCENES.filter((scene) => scene.faces.length > 1);
      for (const spec of scenes) {
        const scene = await composeScene(spec, faces.slice(4), format);
        const server = await serverPredict(harness.apiUrl, scene, 'faces');
        const browserAnswer = await browserPredict(page, scene, 'faces');
        const difference = compareFaces(server, browserAnswer, scene.name);
        console.log(`#   ${scene.name}: ${difference.faces} faces (${spec.faces.length} placed); box ${difference.box.toFixed(1)} px, probability ${difference.probability.toExponential(2)}`);
        worst = worstOf(worst, difference);
      }
      console.log(`# ${scenes.length} ${format.toUpperCase()} scenes: ${worst.faces} faces; largest box difference ${worst.box.toFixed(1)} px, probability difference ${worst.probability.toExponential(2)}; ${worst.classes} classes compared`);
      assert.ok(worst.probability <= PROBABILITY_TOLERANCE, `largest difference ${worst.probability} exceeds ${PROBABILITY_TOLERANCE}`);
    });
  }

  it(`answers like POST /v1/predict?detect=none with detect 'none' on ${PARITY_FACES} faces decoded to the same pixels: same classes, probabilities within ${TOLERANCE}`, async () => {
    assert.ok(faces.length >= 20);
    let worst = 0;
    for (const face of await Promise.all(faces.map(asPng))) {
      const server = await serverPredict(harness.apiUrl, face);
      const browserAnswer = await browserPredict(page, face);
      worst = Math.max(worst, compareWhole(server, browserAnswer, face.name));
      for (const task of tasksOf(server.faces[0])) assert.equal(taskOf(browserAnswer.faces[0], task).index, taskOf(server.faces[0], task).index, `${face.name} ${task}: same class`);
    }
    console.log(`# largest probability difference over ${faces.length} ${facesSource} faces (lossless): ${worst.toExponential(2)}`);
    assert.ok(worst <= TOLERANCE, `largest difference ${worst} exceeds ${TOLERANCE}`);
  });

  it('answers like POST /v1/predict?detect=none on PNGs with transparent pixels (both composite them over white)', async () => {
    // A canvas reads a transparent pixel back as black, jimp as the colour the file stored under it: a border
    // with alpha 0 over the face's own colours tells the two apart unless both ignore that colour.
    let worst = 0;
    for (const face of faces.slice(0, 4)) {
      const image = await Jimp.fromBuffer(Buffer.from(face.bytes));
      const { width, height, data } = image.bitmap;
      for (let y = 0; y < height; y++) {
        for (let x = 0; x < width; x++) if (Math.min(x, y, width - 1 - x, height - 1 - y) < width / 5) data[(y * width + x) * 4 + 3] = 0;
      }
      const png: FaceImage = { name: face.name.replace(/\.jpe?g(\.chip\.jpg)?$/i, '-transparent.png'), type: 'image/png', bytes: new Uint8Array(await image.getBuffer('image/png')) };
      const server = await serverPredict(harness.apiUrl, png);
      const browserAnswer = await browserPredict(page, png);
      worst = Math.max(worst, compareWhole(server, browserAnswer, png.name));
      for (const task of tasksOf(server.faces[0])) assert.equal(taskOf(browserAnswer.faces[0], task).index, taskOf(server.faces[0], task).index, `${png.name} ${task}: same class`);
    }
    assert.ok(worst <= TOLERANCE, `largest difference ${worst} exceeds ${TOLERANCE}`);
  });

  it('agrees with POST /v1/predict?detect=none on the JPEG files as they are wherever the class is not a near tie (the two JPEG decoders differ slightly)', async () => {
    // Chromium decodes JPEG with libjpeg-turbo, the server with sharp (libvips, mozjpeg), and their colour can differ
    // by a level or two on many pixels. Same pixels agree within 1e-4 (the test above).
    const DECODER_BOUND = 0.05;
    let worst = 0;
    let compared = 0;
    for (const face of faces) {
      const server = await serverPredict(harness.apiUrl, face);
      const browserAnswer = await browserPredict(page, face);
      const difference = compareWhole(server, browserAnswer, face.name);
      worst = Math.max(worst, difference);
      for (const task of tasksOf(server.faces[0])) {
        const s = taskOf(server.faces[0], task);
        if (top2Margin(s.probabilities) <= 2 * DECODER_BOUND) continue;
        compared++;
        assert.equal(taskOf(browserAnswer.faces[0], task).index, s.index, `${face.name} ${task}: same class (server margin ${top2Margin(s.probabilities).toFixed(3)})`);
      }
    }
    console.log(`# JPEG as is: largest probability difference ${worst.toExponential(2)}; ${compared} clear-cut answers compared`);
    assert.ok(worst <= DECODER_BOUND, `largest difference ${worst} exceeds the decoder bound ${DECODER_BOUND}`);
  });

  it('honours the EXIF orientation of a JPEG, as the server does', async () => {
    // Stored 96x48 with the left half dark; orientation 6 (rotate 90° clockwise) makes it 48x96 with the top half dark.
    const stored = new Jimp({ width: 96, height: 48, color: 0xf0f0f0ff });
    stored.scan(0, 0, 48, 48, (_x, _y, at) => stored.bitmap.data.fill(20, at, at + 3));
    const jpeg = new Uint8Array(await stored.getBuffer('image/jpeg', { quality: 95 }));
    const exif = [0xff, 0xe1, 0x00, 0x22, ...Buffer.from('Exif\0\0MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0', 'latin1')];
    const rotated: FaceImage = { name: 'rotated.jpg', type: 'image/jpeg', bytes: new Uint8Array([...jpeg.subarray(0, 2), ...exif, ...jpeg.subarray(2)]) };
    // No face in it: judged whole, as a face crop, so that the crop shown is the whole upright image.
    await page.getByLabel('The photo is a face crop').check();
    await page.setInputFiles('#file-input', { name: rotated.name, mimeType: rotated.type, buffer: Buffer.from(rotated.bytes) });
    await page.locator('#results').waitFor({ state: 'visible' });
    await page.waitForFunction(() => (document.querySelector('#source-image') as HTMLImageElement).naturalHeight === 96);
    const [topLeft, bottomLeft] = await page.locator('#crop-canvas').evaluate((canvas: HTMLCanvasElement) => {
      const context = canvas.getContext('2d') as CanvasRenderingContext2D;
      return [context.getImageData(4, 4, 1, 1).data[0], context.getImageData(4, canvas.height - 5, 1, 1).data[0]];
    });
    assert.ok(topLeft < 60 && bottomLeft > 200, `upright crop: dark top (${topLeft}), light bottom (${bottomLeft})`);
    assert.equal(await page.locator('#faces-summary').textContent(), 'The whole photo taken as one face.');
    await page.getByLabel('The photo is a face crop').uncheck();
    const server = await serverPredict(harness.apiUrl, rotated);
    const browserAnswer = await browserPredict(page, rotated);
    assert.deepEqual(browserAnswer.image, { width: 48, height: 96 }, 'the upright size');
    for (const task of tasksOf(server.faces[0])) {
      const s = taskOf(server.faces[0], task);
      if (top2Margin(s.probabilities) > 0.04) assert.equal(taskOf(browserAnswer.faces[0], task).index, s.index, `${task}: same class as the server for the rotated file`);
    }
    // Looking for faces in it finds none, and says so.
    await page.waitForFunction(() => /^No face found in this photo/.test(document.getElementById('faces-summary')?.textContent ?? ''));
    assert.equal(await page.locator('#face-boxes button').count(), 0);
    assert.equal(await page.locator('.task').count(), 0, 'no bars without a face');
    assert.deepEqual((await browserPredict(page, rotated, 'faces')).faces, (await serverPredict(harness.apiUrl, rotated, 'faces')).faces);
  });

  it('takes a face dropped on the page or pasted from the clipboard', async () => {
    for (const [event, face] of [['drop', faces[6]], ['paste', faces[7]]] as const) {
      const previous = await page.locator('#source-image').getAttribute('src');
      await page.evaluate(
        ({ event: type, base64, name, mime }) => {
          const transfer = new DataTransfer();
          transfer.items.add(new File([Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))], name, { type: mime }));
          const init = { bubbles: true, cancelable: true };
          const target = document.getElementById('drop-zone') as HTMLElement;
          target.dispatchEvent(type === 'drop' ? new DragEvent('drop', { ...init, dataTransfer: transfer }) : new ClipboardEvent('paste', { ...init, clipboardData: transfer }));
        },
        { event, base64: Buffer.from(face.bytes).toString('base64'), name: face.name, mime: face.type },
      );
      await page.waitForFunction((before) => (document.querySelector('#source-image') as HTMLImageElement).src !== before, previous);
      assert.equal(await page.locator('#message').isVisible(), false, `${event}: no message`);
    }
  });

  it('states on the page, before any photo, that the models are for non-commercial research and must not be used for decisions about people', async () => {
    const notice = page.locator('#notice');
    assert.equal(await notice.isVisible(), true);
    const text = (await notice.textContent())?.replace(/\s+/g, ' ') ?? '';
    for (const words of ['UTKFace', 'non-commercial research purposes only', 'ethnicity', 'decisions about people', 'models/MODEL_CARD.md in the repository']) {
      assert.ok(text.includes(words), `the notice says "${words}": ${text}`);
    }
    // Neither server serves the model card, so the notice names it without a link that would be dead.
    assert.equal(await notice.locator('a').count(), 0);
  });

  it('reads each answer line with separators, announces a summary after a prediction, and labels the years as the expected age', async () => {
    const face = await asPng(faces[8]);
    const expected = (await serverPredict(harness.apiUrl, face, 'faces')).faces[0];
    assert.ok(expected !== undefined && expected.reason === undefined, 'the server finds and judges the face');
    await page.evaluate(() => window.scrollTo(0, 0));
    const before = await page.locator('#source-image').getAttribute('src');
    await page.setInputFiles('#file-input', { name: face.name, mimeType: face.type, buffer: Buffer.from(face.bytes) });
    await page.waitForFunction((previous) => (document.querySelector('#source-image') as HTMLImageElement).getAttribute('src') !== previous, before);
    const announcer = page.locator('#announcer');
    await page.waitForFunction(() => /^Age group: /.test(document.getElementById('announcer')?.textContent ?? ''));
    const said = (await announcer.textContent()) ?? '';
    const pct = (p: number): string => `${(p * 100).toFixed(1)}%`;
    for (const model of info.models) {
      const top = taskOf(expected, model.task);
      const label = top.group ?? top.label ?? '?';
      const years = top.years === undefined ? '' : `, expected age ${Math.round(top.years)} years`;
      const line = `${label}, ${pct(top.probabilities[top.index])}${years}`;
      assert.ok(said.includes(`: ${line}.`), `the summary says "${line}" for ${model.task}: "${said}"`);
      // What a screen reader reads: the parts of the answer line apart, not "21-4075.9%".
      const answer = page.locator(`.task[data-task="${model.task}"] .answer`);
      assert.equal((await answer.textContent())?.trim(), line);
      // (Chromium's tree puts a space before each hidden ", " as it is positioned apart; a pause either way.)
      assert.equal((await answer.ariaSnapshot()).replace(/ ,/g, ','), `- paragraph: ${line}`);
      if (top.years !== undefined) assert.match((await answer.locator('small[title]').getAttribute('title')) ?? '', /mean of the predicted distribution over ages/);
    }
    assert.ok(await announcer.evaluate((node) => node.getAttribute('aria-live') === 'polite' && node.closest('[hidden]') === null), 'the live region is always on the page');
    assert.equal(await page.evaluate(() => window.scrollY), 0, 'answers already in view: the page does not scroll');
  });

  it(`refuses a 2x2 PNG in the server's words (both sides must be at least ${DEFAULT_MIN_IMAGE_SIDE} pixels) and takes the previous answers off the page`, async () => {
    await page.setInputFiles('#file-input', { name: faces[9].name, mimeType: faces[9].type, buffer: Buffer.from(faces[9].bytes) });
    await page.locator('#results').waitFor({ state: 'visible' });
    const tiny = Buffer.from(await new Jimp({ width: 2, height: 2, color: 0x808080ff }).getBuffer('image/png'));
    const server = await serverRefusal(harness.apiUrl, tiny, 'image/png');
    assert.equal(server.status, 422);
    assert.equal(server.code, 'image_too_small');
    await page.setInputFiles('#file-input', { name: 'tiny.png', mimeType: 'image/png', buffer: tiny });
    const message = page.locator('#message');
    await message.waitFor({ state: 'visible' });
    const text = (await message.textContent()) ?? '';
    assert.ok(text.startsWith('"tiny.png" (of type image/png'), text);
    const words = server.message.slice(server.message.indexOf(' is ') + 1);
    assert.ok(text.includes(words), `the page says what the server says ("${words}"): "${text}"`);
    assert.match(text, new RegExp(`is 2x2; both sides must be at least ${DEFAULT_MIN_IMAGE_SIDE} pixels`));
    // The previous photo's answers are gone, not left beside the message.
    assert.equal(await page.locator('#results').isVisible(), false);
    assert.equal(await page.locator('#results-empty').isVisible(), true);
    assert.equal(await page.locator('.task').count(), 0);
    assert.equal(await page.locator('#source-image').getAttribute('src'), null);
    await page.waitForFunction((said) => document.getElementById('announcer')?.textContent === said, text);
    const rejection = await page.evaluate(
      (base64) => window.demo.predict(new Blob([Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))], { type: 'image/png' })).then(
        () => 'resolved',
        (error: Error & { code?: string }) => `${error.name} ${error.code}`,
      ),
      tiny.toString('base64'),
    );
    assert.equal(rejection, 'ImageSizeError image_too_small');
  });

  it('takes the previous answers off the page when the next file is not an image', async () => {
    await page.setInputFiles('#file-input', { name: faces[10].name, mimeType: faces[10].type, buffer: Buffer.from(faces[10].bytes) });
    await page.locator('#results').waitFor({ state: 'visible' });
    const corrupt = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.from('not the rest of a JPEG')]);
    await page.setInputFiles('#file-input', { name: 'broken.jpg', mimeType: 'image/jpeg', buffer: corrupt });
    await page.locator('#message').waitFor({ state: 'visible' });
    assert.match((await page.locator('#message').textContent()) ?? '', /"broken\.jpg" \(of type image\/jpeg, 26 bytes\) is not an image/);
    assert.equal(await page.locator('#results').isVisible(), false, 'no answers shown next to the message');
    assert.equal(await page.locator('.task').count(), 0);
  });

  it(`refuses a PNG of 6000x6000 (over ${DEFAULT_MAX_PIXELS} pixels) in the server's words, before decoding it`, async () => {
    const huge = Buffer.from(blackPng(6000, 6000));
    const server = await serverRefusal(harness.apiUrl, huge, 'image/png');
    assert.equal(server.status, 413);
    assert.equal(server.code, 'image_too_large');
    // Count what would decode or read out the image at full size.
    await page.evaluate(() => {
      const counts = { bitmaps: 0, reads: 0 };
      (window as unknown as { decodeCounts: typeof counts }).decodeCounts = counts;
      const create = window.createImageBitmap.bind(window);
      window.createImageBitmap = ((...args: Parameters<typeof create>) => {
        counts.bitmaps++;
        return create(...args);
      }) as typeof window.createImageBitmap;
      const read = OffscreenCanvasRenderingContext2D.prototype.getImageData;
      OffscreenCanvasRenderingContext2D.prototype.getImageData = function (this: OffscreenCanvasRenderingContext2D, ...args: Parameters<typeof read>) {
        counts.reads++;
        return read.apply(this, args);
      };
    });
    await page.setInputFiles('#file-input', { name: 'huge.png', mimeType: 'image/png', buffer: huge });
    const message = page.locator('#message');
    await message.waitFor({ state: 'visible' });
    const text = (await message.textContent()) ?? '';
    const words = server.message.slice(server.message.indexOf(' is ') + 1);
    assert.ok(text.includes(words), `the page says what the server says ("${words}"): "${text}"`);
    assert.match(text, new RegExp(`is 6000x6000 = 36000000 pixels; the limit is ${DEFAULT_MAX_PIXELS}`));
    const counts = await page.evaluate(() => (window as unknown as { decodeCounts: { bitmaps: number; reads: number } }).decodeCounts);
    assert.deepEqual(counts, { bitmaps: 0, reads: 0 }, 'refused from its size alone: never decoded to a bitmap nor read from a canvas');
    // The next good image is decoded as before.
    await page.setInputFiles('#file-input', { name: faces[0].name, mimeType: faces[0].type, buffer: Buffer.from(faces[0].bytes) });
    await message.waitFor({ state: 'hidden' });
    await page.locator('#results').waitFor({ state: 'visible' });
    assert.equal((await page.evaluate(() => (window as unknown as { decodeCounts: { bitmaps: number } }).decodeCounts)).bitmaps, 1);
  });

  it('says on the page that the models are missing with ?models=nope/, without an unhandled rejection', async () => {
    // Not through openPage: its 404 is the point here, not a failure for the last test to report.
    const missingModels = await context.newPage();
    const errors: string[] = [];
    missingModels.on('pageerror', (error) => errors.push(`${error.name}: ${error.message}`));
    await missingModels.goto(`${harness.pageUrl}?models=nope/`);
    await missingModels.waitForFunction(() => document.getElementById('status')?.dataset.state === 'error');
    assert.match((await missingModels.locator('#status').textContent()) ?? '', /The models could not be loaded: GET \/nope\/manifest\.json answered 404/);
    await missingModels.waitForFunction(() => /^The models could not be loaded/.test(document.getElementById('announcer')?.textContent ?? ''));
    // Unhandled rejections are reported after the task that left them; give that time to arrive.
    await missingModels.evaluate(() => new Promise((resolve) => setTimeout(resolve, 300)));
    assert.deepEqual(errors, []);
    await missingModels.close();
  });

  it('says on the page that a file is not an image, without an exception', async () => {
    const errorsBefore = pageErrors.length;
    await page.setInputFiles('#file-input', { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('not a face\n') });
    const message = page.locator('#message');
    await message.waitFor({ state: 'visible' });
    assert.match((await message.textContent()) ?? '', /"notes\.txt" \(of type text\/plain, 11 bytes\) is not an image/);
    assert.deepEqual(pageErrors.slice(errorsBefore), [], 'no exception and no console error');
    const rejection = await page.evaluate(() => window.demo.predict(new Blob(['plain text'], { type: 'text/plain' })).then(() => 'resolved', (error: Error) => error.name));
    assert.equal(rejection, 'NotAnImageError', 'demo.predict rejects with a named error');
    // The next good image clears the message.
    await page.setInputFiles('#file-input', { name: faces[0].name, mimeType: faces[0].type, buffer: Buffer.from(faces[0].bytes) });
    await message.waitFor({ state: 'hidden' });
  });

  it('works by keyboard: labelled controls, and Tab then Space or Enter on the file input opens the file chooser', async () => {
    const keyboardPage = await openPage();
    // Chromium opens a file chooser only for the page that has focus; the suite's other pages share the browser.
    await keyboardPage.bringToFront();
    await keyboardPage.evaluate(() => window.demo.ready);
    assert.equal(await keyboardPage.getByLabel('Runtime').count(), 1, 'the runtime select has a label');
    assert.equal(await keyboardPage.getByLabel('Choose a photo…').count(), 1, 'the file input has a label');
    assert.equal(await keyboardPage.getByRole('button', { name: 'Use the webcam' }).count(), 1);
    // Listen before tabbing: Playwright turns file chooser interception on with a message it does not wait for, so a
    // listener added just before Space can lose the race with the key press (CI saw the chooser never arrive once).
    const chooser = keyboardPage.waitForEvent('filechooser');
    chooser.catch(() => {}); // awaited below; this only keeps an early assertion failure from leaving it unhandled
    const visited: string[] = [];
    for (let i = 0; i < 8 && !visited.includes('file-input'); i++) {
      await keyboardPage.keyboard.press('Tab');
      visited.push(await keyboardPage.evaluate(() => document.activeElement?.id || document.activeElement?.tagName || ''));
    }
    assert.ok(visited.includes('file-input'), `Tab reaches the file input (focus went: ${visited.join(' → ')})`);
    await keyboardPage.keyboard.press('Space');
    await (await chooser).setFiles({ name: faces[2].name, mimeType: faces[2].type, buffer: Buffer.from(faces[2].bytes) });
    await keyboardPage.locator('#results').waitFor({ state: 'visible' });
    // Enter opens it too, as it does any button.
    const second = keyboardPage.waitForEvent('filechooser');
    second.catch(() => {});
    await keyboardPage.locator('#file-input').focus();
    await keyboardPage.keyboard.press('Enter');
    await (await second).setFiles({ name: faces[3].name, mimeType: faces[3].type, buffer: Buffer.from(faces[3].bytes) });
    await keyboardPage.waitForFunction(() => /^Age group: /.test(document.getElementById('announcer')?.textContent ?? ''));
    // One button in the accessibility tree, not a button and a label saying the same.
    assert.equal(await keyboardPage.getByRole('button', { name: 'Choose a photo…' }).count(), 1);
    const tree = await keyboardPage.locator('#drop-zone').ariaSnapshot();
    assert.equal(tree.split('Choose a photo…').length - 1, 1, `"Choose a photo…" once in the accessibility tree:\n${tree}`);
    await keyboardPage.close();
  });

  it('fits a phone-sized screen without sideways scrolling, and scrolls the photo with its boxes into view', async () => {
    const phone = await openPage('', { width: 375, height: 740 });
    await phone.evaluate(() => window.demo.ready);
    await phone.setInputFiles('#file-input', { name: faces[3].name, mimeType: faces[3].type, buffer: Buffer.from(faces[3].bytes) });
    await phone.locator('#results').waitFor({ state: 'visible' });
    // One column: the answers are below the input, out of sight until the page scrolls to them (smoothly).
    await phone.waitForFunction(() => {
      const { top, bottom } = (document.getElementById('photo-frame') as HTMLElement).getBoundingClientRect();
      return window.scrollY > 0 && top >= 0 && bottom <= window.innerHeight;
    });
    const widths = await phone.evaluate(() => ({ page: document.documentElement.scrollWidth, screen: window.innerWidth }));
    assert.ok(widths.page <= widths.screen, `page ${widths.page}px wide on a ${widths.screen}px screen`);
    await phone.screenshot({ path: join(ARTIFACTS, 'web-demo-phone.png'), fullPage: true });
    await phone.close();
  });

  it('labels every face of a group photo and selects a face by keyboard (Tab, then Enter or Space) to show its crop and bars', async (t) => {
    if (facesSource !== 'utkface') {
      t.skip(`UTKFace is not at ${UTKFACE_DIR}: the group photo is composed from its crops`);
      return;
    }
    const spec = sceneSpec('four-faces-1280x960');
    const scene = await composeScene(spec, faces.slice(4), 'png');
    const expected = await serverPredict(harness.apiUrl, scene, 'faces');
    assert.equal(expected.faces.length, spec.faces.length, 'the server finds every face placed');
    const group = await openPage();
    await group.evaluate(() => window.demo.ready);
    await group.setInputFiles('#file-input', { name: scene.name, mimeType: scene.type, buffer: Buffer.from(scene.bytes) });
    await group.locator('#results').waitFor({ state: 'visible' });
    const boxes = group.locator('#face-boxes button');
    assert.equal(await boxes.count(), expected.faces.length, 'a box per face');
    const labels = await group.locator('#face-boxes .face-label').allTextContents();
    for (const [i, label] of labels.entries()) {
      const age = taskOf(expected.faces[i], 'age');
      assert.ok(label.includes(`(${age.group})`) && label.includes(taskOf(expected.faces[i], 'gender').label ?? '?'), `face ${i + 1}'s label names its age group and gender: "${label}"`);
      if (age.years !== undefined) assert.ok(label.startsWith(`${Math.round(age.years)} y`), `face ${i + 1}'s label starts with the years: "${label}"`);
    }
    assert.match((await group.locator('#faces-summary').textContent()) ?? '', /^4 faces found\. Select a face/);
    await group.locator('#photo-frame').scrollIntoViewIfNeeded();
    await group.screenshot({ path: join(ARTIFACTS, 'web-demo-group.png'), fullPage: true });

    // By keyboard: Tab from the file input reaches the faces' boxes in order, largest first.
    await group.bringToFront();
    await group.locator('#file-input').focus();
    const visited: string[] = [];
    for (let i = 0; i < 12 && visited.at(-1) !== 'face 1'; i++) {
      await group.keyboard.press('Tab');
      visited.push(await group.evaluate(() => (document.activeElement as HTMLElement | null)?.dataset.face === undefined ? document.activeElement?.id || document.activeElement?.tagName || '' : `face ${document.activeElement?.getAttribute('data-face')}`));
    }
    assert.equal(visited.at(-1), 'face 1', `Tab reaches the second face's box (focus went: ${visited.join(' → ')})`);
    assert.ok(visited.includes('face 0') && visited.indexOf('face 0') === visited.length - 2, 'the first face comes just before it');
    await group.keyboard.press('Enter');
    await group.waitForFunction(() => document.querySelector('#face-boxes button[data-face="1"]')?.getAttribute('aria-pressed') === 'true');
    assert.equal(await group.locator('#face-title').textContent(), 'Face 2 of 4');
    assert.equal(await group.locator('#face-boxes button[aria-pressed="true"]').count(), 1, 'one face selected at a time');
    const second = expected.faces[1];
    for (const model of info.models) {
      const top = taskOf(second, model.task);
      assert.ok(((await group.locator(`.task[data-task="${model.task}"] .answer`).textContent()) ?? '').startsWith(top.group ?? top.label ?? '?'), `face 2's ${model.task} bars`);
    }
    await group.waitForFunction(() => /^Face 2 of 4\. Age group: /.test(document.getElementById('announcer')?.textContent ?? ''));
    await group.keyboard.press('Tab');
    await group.keyboard.press('Space');
    await group.waitForFunction(() => document.getElementById('face-title')?.textContent === 'Face 3 of 4');
    await group.close();
  });

  it('follows the faces of the webcam frame by frame with boxes and labels, no guide square, and shows the frame rate', async () => {
    await page.getByRole('button', { name: 'Use the webcam' }).click();
    await page.locator('#camera-view').waitFor({ state: 'visible' });
    assert.equal(await page.getByRole('button', { name: 'Use the webcam' }).isVisible(), false, 'the start button gives way to Capture and Stop');
    assert.equal(await page.locator('#camera-guide, .guide').count(), 0, 'no guide square');
    await page.waitForFunction(() => Number(document.getElementById('camera-stats')?.dataset.judged ?? 0) >= 10, undefined, { timeout: 60_000 });
    const video = await page.locator('#camera-video').evaluate((v: HTMLVideoElement) => ({ width: v.videoWidth, height: v.videoHeight }));
    assert.deepEqual(video, { width: CAMERA_WIDTH, height: CAMERA_HEIGHT }, 'the fake camera plays the generated video');
    const overlay = page.locator('#camera-overlay');
    assert.deepEqual(await overlay.evaluate((c: HTMLCanvasElement) => ({ width: c.width, height: c.height })), video, 'boxes are drawn in the video\'s pixels');
    // The face slides across the frame: its box moves with it.
    const xs = new Set<number>();
    for (let i = 0; i < 8; i++) {
      const boxes = JSON.parse((await overlay.getAttribute('data-boxes')) ?? '[]') as { x: number }[];
      if (facesSource === 'utkface') assert.equal(boxes.length, 1, `one face in the frame: ${JSON.stringify(boxes)}`);
      for (const box of boxes) xs.add(Math.round(box.x));
      await page.waitForTimeout(150);
    }
    if (facesSource === 'utkface') assert.ok(xs.size >= 3, `the box followed the face: x ${[...xs].join(', ')}`);
    const stats = (await page.locator('#camera-stats').textContent()) ?? '';
    assert.match(stats, /^\d+\.\d frames\/s · \d+ ms per frame · \d+ camera frames dropped$/);
    console.log(`# webcam under test load: ${stats}`);
    await page.locator('#camera-view').scrollIntoViewIfNeeded();
    await page.screenshot({ path: join(ARTIFACTS, 'web-demo-webcam.png') });
    // Capture takes the whole frame into the photo view.
    const previous = await page.locator('#source-image').getAttribute('src');
    await page.getByRole('button', { name: 'Capture' }).click();
    await page.waitForFunction((before) => {
      const src = (document.querySelector('#source-image') as HTMLImageElement).getAttribute('src');
      return src !== null && src !== before;
    }, previous);
    const size = await page.locator('#source-image').evaluate(async (img: HTMLImageElement) => {
      await img.decode();
      return { width: img.naturalWidth, height: img.naturalHeight };
    });
    assert.deepEqual(size, video, 'the capture is the whole frame');
    await page.getByRole('button', { name: 'Stop the webcam' }).click();
    await page.locator('#camera-view').waitFor({ state: 'hidden' });
    assert.equal(await page.getByRole('button', { name: 'Use the webcam' }).isVisible(), true);
  });

  it('runs with 2 WebAssembly threads when asked, and answers the same', async () => {
    const threaded = await openPage('?threads=2');
    const threadedInfo = await threaded.evaluate(() => window.demo.ready);
    assert.equal(threadedInfo.threads, 2);
    const face = await asPng(faces[4]);
    const one = await browserPredict(page, face, 'faces');
    const two = await browserPredict(threaded, face, 'faces');
    assert.equal(two.faces.length, one.faces.length);
    assert.deepEqual(two.faces.map((f) => f.box), one.faces.map((f) => f.box));
    for (const [i, f] of one.faces.entries()) assert.ok(compareTasks(f, two.faces[i], face.name) <= 1e-5, 'the same arithmetic within 1e-5');
    await threaded.close();
  });

  it('runs on WebGPU when asked and the browser has a GPU adapter, else says so and uses WebAssembly', async () => {
    const gpuPage = await openPage('?backend=webgpu');
    const gpuInfo = await gpuPage.evaluate(() => window.demo.ready);
    const hasAdapter = await gpuPage.evaluate(async () => {
      const gpu = (navigator as unknown as { gpu?: { requestAdapter(): Promise<object | null> } }).gpu;
      return gpu !== undefined && (await gpu.requestAdapter()) !== null;
    });
    const face = await asPng(faces[5]);
    if (hasAdapter) {
      assert.equal(gpuInfo.backend, 'webgpu');
    } else {
      assert.equal(gpuInfo.backend, 'wasm');
      assert.match((await gpuPage.locator('#message').textContent()) ?? '', /WebGPU gives this page no GPU adapter here; using WebAssembly instead/);
    }
    const difference = compareWhole(await serverPredict(harness.apiUrl, face), await browserPredict(gpuPage, face), face.name);
    assert.ok(difference <= TOLERANCE, `${gpuInfo.backend}: largest difference ${difference}`);
    await gpuPage.close();
  });

  it('names an unknown page option instead of ignoring it', async () => {
    const wrong = await openPage('?backend=tpu');
    await wrong.evaluate(() => window.demo.ready);
    assert.match((await wrong.locator('#message').textContent()) ?? '', /Unsupported backend "tpu"; expected one of: wasm, webgpu/);
    await wrong.close();
  });

  it('made no request outside its own origin, and raised no error', async () => {
    const requests = await allRequests();
    const origin = new URL(harness.pageUrl).origin;
    assert.ok(requests.length > 10, `${requests.length} requests recorded`);
    const outside = requests.filter((r) => !r.url.startsWith('blob:') && !r.url.startsWith('data:') && new URL(r.url).origin !== origin);
    assert.deepEqual(outside.map((r) => r.url), []);
    const failed = requests.filter((r) => r.failure !== undefined || (r.status !== undefined && r.status >= 400));
    assert.deepEqual(failed.map((r) => `${r.url} ${r.status ?? r.failure}`), []);
    assert.deepEqual(pageErrors, []);
  });
});
