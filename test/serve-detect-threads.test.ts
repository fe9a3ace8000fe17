/**
 * The face detector runs in the decode threads, each with its own session: the answer is the one detectFaces and
 * cropFace give on the main thread (same faces, bit for bit, and the same crops), the main thread's detector session
 * is never run, the detect timing and metric are the thread's, maxFaces and minScore reach the thread, and a reload
 * gives the new decode threads the new set's detector.
 */
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp, { type OverlayOptions } from 'sharp';
import { loadConfig, type ServeConfig } from '../serve/config.ts';
import { DecodePool, type DecodedImage } from '../serve/decode-pool.ts';
import { ServeMetrics } from '../serve/metrics.ts';
import { loadServingSet, type ServingSet } from '../serve/reload.ts';
import { decodePhoto } from '../imaging/photo-decode.ts';
import { run } from '../node-shared/onnxruntime-node.ts';
import { DEFAULT_UTKFACE } from '../node-shared/paths.ts';
import { cropFace, detectFaces, facePosition, type FaceSearch, type RunDetector } from '../contract/face/photo.ts';
import { scaleBytes } from '../contract/preprocess.ts';
import { writeFixtureModels } from './helpers/fixture-models.ts';
import { memoryLogger, startTestServer } from './helpers/serve-harness.ts';

/** UTKFace crops with a clear frontal face each (as test/serve-api.test.ts uses). */
const FACE_FILES = ['25_1_2_20170104021412148.jpg.chip.jpg', '28_0_3_20170113153014880.jpg.chip.jpg', '35_0_4_20170103234956580.jpg.chip.jpg'];
const missingFaces = FACE_FILES.filter((file) => !existsSync(join(DEFAULT_UTKFACE, file)));
const NO_FACES = missingFaces.length > 0 && `UTKFace crops not found in ${DEFAULT_UTKFACE} (missing ${missingFaces.join(', ')}): these tests need real faces`;
/** Probabilities of a face judged in a batch with others against the same face alone: the same arithmetic. */
const PROBABILITY_ATOL = 1e-5;
const SCENE_FACE_SIDES = [180, 150, 120];
const SCENE_MARGIN = 40;

/** The crops side by side on grey, the largest first, with a margin around each. */
async function faceScene(): Promise<Buffer> {
  const layers: OverlayOptions[] = [];
  let left = SCENE_MARGIN;
  for (const [i, side] of SCENE_FACE_SIDES.entries()) {
    layers.push({ input: await sharp(join(DEFAULT_UTKFACE, FACE_FILES[i])).resize(side, side).toBuffer(), left, top: SCENE_MARGIN });
    left += side + SCENE_MARGIN;
  }
  const height = SCENE_FACE_SIDES[0] + 2 * SCENE_MARGIN;
  return sharp({ create: { width: left, height, channels: 3, background: { r: 128, g: 128, b: 128 } } }).composite(layers).jpeg({ quality: 92 }).toBuffer();
}

const round2 = (ms: number): number => Math.round(ms * 100) / 100;

describe('serve: the face detector in the decode threads', { skip: NO_FACES }, () => {
  let modelsDir = '';
  let config: ServeConfig;
  let set: ServingSet;
  let metrics: ServeMetrics;
  /** The images the pool handed back, as the predictor got them. */
  const decoded: DecodedImage[] = [];
  /** Runs of the main thread's own detector session. */
  let mainThreadDetectorRuns = 0;

  before(async () => {
    modelsDir = mkdtempSync(join(tmpdir(), 'serve-detect-threads-'));
    await writeFixtureModels(modelsDir);
    config = loadConfig(['--models', modelsDir, '--decode-threads', '2'], {});
    metrics = new ServeMetrics();
    set = await loadServingSet(config, { metrics, log: memoryLogger([]), workerEntry: DecodePool.prepare() });
    const pool = set.pool;
    const decode = pool.decode.bind(pool);
    pool.decode = async (...args) => {
      const image = await decode(...args);
      decoded.push(image);
      return image;
    };
    const inner = set.models.detectors[0].session.inner;
    const runOnMainThread = inner.run.bind(inner);
    inner.run = ((...args: Parameters<typeof inner.run>) => {
      mainThreadDetectorRuns++;
      return runOnMainThread(...args);
    }) as typeof inner.run;
  });
  after(async () => {
    await set?.close();
    rmSync(modelsDir, { recursive: true, force: true });
  });

  /** The faces, positions and crops of `bytes` found on this thread with the set's own detector session. */
  async function onMainThread(bytes: Uint8Array, search: FaceSearch) {
    const runsBefore = mainThreadDetectorRuns;
    const photo = await decodePhoto(bytes, { maxPixels: config.maxPixels, minImageSide: config.minImageSide });
    const { session, inputName } = set.models.detectors[0];
    const runDetector: RunDetector = async (input, size) => Object.values(await run(session, { [inputName]: { data: input, dims: [1, size, size, 3] } }));
    const faces = await detectFaces(photo.pixels, runDetector, search);
    assert.ok(mainThreadDetectorRuns > runsBefore, 'the reference ran on the main thread');
    mainThreadDetectorRuns = runsBefore;
    return { faces, scale: photo.scale, crops: faces.map((face) => cropFace(photo.pixels, face, set.models.specs, photo.scale)) };
  }

  for (const [what, search] of [
    ['the defaults', { maxFaces: 10, minScore: 0.5 }],
    ['maxFaces=2 and minScore=0.6', { maxFaces: 2, minScore: 0.6 }],
  ] as const) {
    it(`answers a photo of three faces (${what}) with the faces, positions and crops detectFaces and cropFace give on the main thread, which never runs its detector`, async () => {
      const jpeg = await faceScene();
      decoded.length = 0;
      const answer = await set.predictor.predict(jpeg, performance.now(), { detect: true, ...search });
      assert.equal(mainThreadDetectorRuns, 0, 'the main thread ran no detector');
      const expected = await onMainThread(jpeg, search);
      assert.equal(expected.faces.length, Math.min(3, search.maxFaces));

      const [{ prepared }] = decoded;
      assert.ok(prepared.kind === 'faces', 'the thread found the faces');
      assert.deepEqual(
        prepared.faces.map((found) => found.face),
        expected.faces,
        'the same faces, bit for bit',
      );
      assert.deepEqual(
        prepared.faces.map((found) => ('inputs' in found ? found.inputs : found.reason)),
        expected.crops.map((crop) => ('crops' in crop ? crop.crops.map((bytes, i) => scaleBytes(bytes, set.models.specs[i])) : crop.reason)),
        'the same pixels, so the same crops, cut in the thread',
      );
      assert.deepEqual(
        answer.faces.map(({ box, score, landmarks }) => ({ box, score, landmarks })),
        expected.faces.map((face) => facePosition(face, expected.scale)),
      );

      // Each face's predictions are those of its crop run through the graphs alone.
      for (const [i, crop] of expected.crops.entries()) {
        assert.ok('crops' in crop, `face ${i} is judged`);
        for (const graph of set.models.graphs) {
          const { height, width, channels } = graph.inputSpec;
          const outputs = await run(graph.session, { [graph.inputName]: { data: scaleBytes(crop.crops[graph.specIndex], set.models.specs[graph.specIndex]), dims: [1, height, width, channels] } });
          for (const [task, prediction] of Object.entries(graph.interpret(outputs, 0))) {
            const served = answer.faces[i][task] as typeof prediction;
            assert.equal(served.index, prediction.index, `face ${i} ${task}`);
            served.probabilities.forEach((p, k) => assert.ok(Math.abs(p - prediction.probabilities[k]) <= PROBABILITY_ATOL, `face ${i} ${task}[${k}]: ${p} vs ${prediction.probabilities[k]}`));
          }
        }
      }
    });
  }

  it("reports the thread's detector time as timingsMs.detect and in the detector's metric, and decoding apart from it", async () => {
    const crop = await readFile(join(DEFAULT_UTKFACE, FACE_FILES[0]));
    const sumBefore = detectorSeconds(metrics);
    decoded.length = 0;
    const answer = await set.predictor.predict(crop, performance.now(), { detect: true, maxFaces: 10, minScore: 0.5 });
    const [image] = decoded;
    assert.ok(image.prepared.kind === 'faces');
    assert.ok(image.prepared.detectMs > 0);
    assert.equal(answer.timingsMs.detect, round2(image.prepared.detectMs));
    assert.equal(answer.timingsMs.decode, round2(image.ms));
    assert.ok(Math.abs(detectorSeconds(metrics) - sumBefore - image.prepared.detectMs / 1000) < 1e-12, 'inference_seconds{model="detector"} observed the thread\'s time');
    assert.equal(answer.faces.length, 1);
  });
});

/** The sum of inference_seconds{model="detector"}. */
function detectorSeconds(metrics: ServeMetrics): number {
  const series = metrics.inference.snapshot().series[JSON.stringify([['model', 'detector']])];
  return Array.isArray(series) ? series[series.length - 1] : 0;
}

describe('serve: reloading gives the new decode threads the new set\'s detector', { skip: NO_FACES }, () => {
  it('answers detection with 400 from a set without a detector, and finds the face once a set with one is reloaded', async () => {
    const withDetector = mkdtempSync(join(tmpdir(), 'serve-detect-threads-with-'));
    const live = mkdtempSync(join(tmpdir(), 'serve-detect-threads-live-'));
    await writeFixtureModels(withDetector);
    await writeFixtureModels(live, { detector: false });
    const t = await startTestServer({ modelsDir: live, flags: ['--decode-threads', '1'] });
    try {
      const crop = await readFile(join(DEFAULT_UTKFACE, FACE_FILES[0]));
      const post = () => fetch(`${t.url}/v1/predict`, { method: 'POST', body: crop, headers: { 'content-type': 'image/jpeg' } });
      assert.equal((await post()).status, 400, 'no detector, no detection');
      cpSync(withDetector, live, { recursive: true });
      assert.equal((await t.server.reload()).reloaded, true);
      const res = await post();
      assert.equal(res.status, 200);
      const body = (await res.json()) as { faces: unknown[]; timingsMs: { detect: number } };
      assert.equal(body.faces.length, 1);
      assert.ok(body.timingsMs.detect > 0);
    } finally {
      await t.close();
      rmSync(withDetector, { recursive: true, force: true });
      rmSync(live, { recursive: true, force: true });
    }
  });
});
