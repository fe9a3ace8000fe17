/**
 * The API contract of the server, on fixture models exported through the project's exporter and the shipped face
 * detector: every route, both upload forms, batches, labels taken from model metadata, outputs matching
 * onnxruntime run directly (with detect=none: the synthetic images hold no face), and faces found in real
 * UTKFace photos, alone, side by side, and turned by an EXIF orientation.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp, { type OverlayOptions } from 'sharp';
import { decodePhoto } from '../imaging/photo-decode.ts';
import { readModelMetadata } from '../contract/metadata.ts';
import { preprocess } from '../contract/preprocess.ts';
import { makeImage, startTestServer, type TestServer } from './helpers/serve-harness.ts';
import { createSession, run } from '../node-shared/onnxruntime-node.ts';
import { DEFAULT_UTKFACE } from '../node-shared/paths.ts';

// Labels no server constant could produce: if they come back, they came from the metadata.
const AGE_LABELS = ['cub', 'kid', 'teen', 'adult', 'elder', 'ancient'];
const ETHNICITY_LABELS = ['e-zero', 'e-one', 'e-two', 'e-three', 'e-four'];
const GENDER_LABELS = ['g-neg', 'g-pos'];

interface TaskResult {
  group?: string;
  label?: string;
  index: number;
  probabilities: number[];
  years?: number;
}
interface Box {
  x: number;
  y: number;
  width: number;
  height: number;
}
type Point = [number, number];
interface FaceBody {
  box: Box;
  score: number | null;
  landmarks: Record<'rightEye' | 'leftEye' | 'nose' | 'mouth' | 'rightEar' | 'leftEar', Point> | null;
  reason?: string;
  age?: TaskResult;
  ethnicity?: TaskResult;
  gender?: TaskResult;
}
interface PredictBody {
  image: { width: number; height: number };
  faces: FaceBody[];
  timingsMs: { decode: number; detect: number; align: number; inference: number; total: number };
}
interface ErrorBody {
  error: { code: string; message: string };
}
/** A face with every task answered. */
type JudgedFace = FaceBody & { age: TaskResult; ethnicity: TaskResult; gender: TaskResult };

/** UTKFace crops (200x200, one face filling the frame), chosen for a clear frontal face each. */
const FACE_FILES = ['25_1_2_20170104021412148.jpg.chip.jpg', '28_0_3_20170113153014880.jpg.chip.jpg', '35_0_4_20170103234956580.jpg.chip.jpg', '100_0_0_20170112213500903.jpg.chip.jpg'];
const missingFaces = FACE_FILES.filter((file) => !existsSync(join(DEFAULT_UTKFACE, file)));
const NO_FACES = missingFaces.length > 0 && `UTKFace crops not found in ${DEFAULT_UTKFACE} (missing ${missingFaces.join(', ')}): the tests on real faces need the dataset there`;

/** Where each face of a scene was pasted, and its side in pixels. */
interface Placed {
  left: number;
  top: number;
  side: number;
}
/** Grey around and between the faces, in pixels. */
const SCENE_MARGIN = 40;
const SCENE_HEIGHT = 280;
/** The faces' sides in a scene, all different so that "largest first" has one right order. */
const SCENE_FACE_SIDES = [200, 170, 140, 110];

/** A JPEG of `count` UTKFace crops side by side on a grey canvas, the largest on the left. */
async function faceScene(count: number): Promise<{ jpeg: Buffer; width: number; height: number; placed: Placed[] }> {
  const placed: Placed[] = [];
  const layers: OverlayOptions[] = [];
  let left = SCENE_MARGIN;
  for (let i = 0; i < count; i++) {
    const side = SCENE_FACE_SIDES[i];
    placed.push({ left, top: SCENE_MARGIN, side });
    layers.push({ input: await sharp(join(DEFAULT_UTKFACE, FACE_FILES[i])).resize(side, side).toBuffer(), left, top: SCENE_MARGIN });
    left += side + SCENE_MARGIN;
  }
  const width = left;
  const jpeg = await sharp({ create: { width, height: SCENE_HEIGHT, channels: 3, background: { r: 128, g: 128, b: 128 } } }).composite(layers).jpeg({ quality: 92 }).toBuffer();
  return { jpeg, width, height: SCENE_HEIGHT, placed };
}

const centre = (box: Box): Point => [box.x + box.width / 2, box.y + box.height / 2];
const inside = ([x, y]: Point, area: { left: number; top: number; width: number; height: number }): boolean => x >= area.left && x <= area.left + area.width && y >= area.top && y <= area.top + area.height;
/** The fraction of a box's area that lies inside the image. */
function fractionInside(box: Box, image: { width: number; height: number }): number {
  const width = Math.max(0, Math.min(box.x + box.width, image.width) - Math.max(box.x, 0));
  const height = Math.max(0, Math.min(box.y + box.height, image.height) - Math.max(box.y, 0));
  return (width * height) / (box.width * box.height);
}

/** Checks a detected face: a box mostly inside the image, a score above the default threshold, and every task answered. */
function assertDetectedFace(face: FaceBody, image: { width: number; height: number }): void {
  assert.equal(face.reason, undefined, `the face is judged, not set aside: ${face.reason}`);
  assert.ok(face.score !== null && face.score >= 0.5 && face.score <= 1, `score ${face.score}`);
  assert.ok(inside(centre(face.box), { left: 0, top: 0, ...image }), `the box's centre lies in the image: ${JSON.stringify(face.box)}`);
  // A face filling the frame gets a box that may reach past its edge (a face turned aside, as in the first crop, by
  // an eighth): the detector's box is not clipped, so that it keeps the face's true size.
  assert.ok(fractionInside(face.box, image) >= 0.8, `the box lies mostly inside the image: ${JSON.stringify(face.box)}`);
  const landmarks = face.landmarks;
  assert.ok(landmarks !== null, 'a detected face has landmarks');
  for (const name of ['rightEye', 'leftEye', 'nose', 'mouth'] as const) assert.ok(inside(landmarks[name], { left: face.box.x, top: face.box.y, width: face.box.width, height: face.box.height }), `${name} lies in the box`);
  // rightEye is the person's right: on the image's left in a frontal face.
  assert.ok(landmarks.rightEye[0] < landmarks.leftEye[0], 'rightEye left of leftEye');
  assertTasks(face);
}

function multipart(fields: { name: string; bytes: Uint8Array<ArrayBuffer>; type?: string }[]): FormData {
  const form = new FormData();
  fields.forEach(({ name, bytes, type }, i) => form.append(name, new Blob([bytes], { type: type ?? 'image/jpeg' }), `file${i}.jpg`));
  return form;
}

/** Every task answered, with labels from the metadata and probabilities that agree with the index. */
function assertTasks(face: FaceBody): asserts face is JudgedFace {
  const { age, ethnicity, gender } = face;
  assert.ok(age !== undefined && ethnicity !== undefined && gender !== undefined, 'every task is answered');
  assert.equal(typeof age.group, 'string');
  assert.ok(AGE_LABELS.includes(age.group as string));
  assert.equal(age.group, AGE_LABELS[age.index]);
  assert.equal(age.probabilities.length, 6);
  assert.equal(ethnicity.label, ETHNICITY_LABELS[ethnicity.index]);
  assert.equal(ethnicity.probabilities.length, 5);
  assert.equal(gender.label, GENDER_LABELS[gender.index]);
  assert.equal(gender.probabilities.length, 2);
  for (const task of [age, ethnicity, gender]) {
    assert.ok(Math.abs(task.probabilities.reduce((a, b) => a + b, 0) - 1) < 1e-5, 'probabilities sum to 1');
    assert.equal(task.index, task.probabilities.indexOf(Math.max(...task.probabilities)));
  }
  assert.equal(typeof age.years, 'number');
}

/** The detect=none answer: the image's size, one face whose box is the whole image, no score or landmarks. */
function assertWholeImage(body: PredictBody, width: number, height: number): JudgedFace {
  assert.deepEqual(Object.keys(body), ['image', 'faces', 'timingsMs']);
  assert.deepEqual(body.image, { width, height });
  assert.equal(body.faces.length, 1);
  const [face] = body.faces;
  assert.deepEqual(face.box, { x: 0, y: 0, width, height });
  assert.equal(face.score, null);
  assert.equal(face.landmarks, null);
  assertTasks(face);
  for (const key of ['decode', 'detect', 'align', 'inference', 'total'] as const) assert.ok(body.timingsMs[key] >= 0, `timingsMs.${key}`);
  assert.equal(body.timingsMs.detect, 0, 'no detector ran');
  assert.ok(body.timingsMs.total >= body.timingsMs.decode);
  return face;
}

describe('serve API', () => {
  let t: TestServer;
  let jpeg: Uint8Array<ArrayBuffer>;
  let png: Uint8Array<ArrayBuffer>;
  /** The classifier path: the synthetic images hold no face, so each is taken whole. */
  let wholeImageUrl: string;
  const post = async (url: string, body: Uint8Array<ArrayBuffer> | Buffer, type = 'image/jpeg'): Promise<{ status: number; body: PredictBody }> => {
    const res = await fetch(url, { method: 'POST', body: new Uint8Array(body), headers: { 'content-type': type } });
    return { status: res.status, body: (await res.json()) as PredictBody };
  };

  /** Classifier batches run so far (the micro-batcher's runs, one per graph group). */
  const batchCount = async (): Promise<number> => Number(/^inference_batch_size_count (\d+)$/m.exec(await (await fetch(`${t.url}/metrics`)).text())?.[1] ?? 0);

  before(async () => {
    t = await startTestServer({
      flags: ['--web-demo', join(tmpdir(), `no-web-demo-${process.pid}`)],
      fixture: {
        labels: { age: AGE_LABELS, ethnicity: ETHNICITY_LABELS, gender: GENDER_LABELS },
        // A second input spec: each image must be preprocessed once per distinct spec.
        inputs: { ethnicity: { height: 32, width: 32, channels: 3, scaling: 'unit' } },
        ageYears: true,
      },
    });
    wholeImageUrl = `${t.url}/v1/predict?detect=none`;
    jpeg = await makeImage(200, 200, 'image/jpeg', 1);
    png = await makeImage(120, 90, 'image/png', 2);
  });
  after(() => t.close());

  it('POST /v1/predict?detect=none with a raw JPEG answers one face, the whole image, with every task labelled from the metadata', async () => {
    const res = await fetch(wholeImageUrl, { method: 'POST', body: jpeg, headers: { 'content-type': 'image/jpeg' } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
    assertWholeImage((await res.json()) as PredictBody, 200, 200);
  });

  it('sniffs the bytes rather than trusting the Content-Type (a PNG sent as image/jpeg)', async () => {
    const { status, body } = await post(wholeImageUrl, png, 'image/jpeg');
    assert.equal(status, 200);
    assertWholeImage(body, 120, 90);
  });

  it('answers a multipart upload exactly as the same image sent raw', async () => {
    const raw = (await post(wholeImageUrl, jpeg)).body;
    const res = await fetch(wholeImageUrl, { method: 'POST', body: multipart([{ name: 'note', bytes: new TextEncoder().encode('ignored') }, { name: 'image', bytes: jpeg }]) });
    assert.equal(res.status, 200);
    const form = (await res.json()) as PredictBody;
    const face = assertWholeImage(form, 200, 200);
    for (const task of ['age', 'ethnicity', 'gender'] as const) assert.deepEqual(face[task], raw.faces[0][task]);
  });

  it('matches onnxruntime run directly on the shared preprocessing of the decoded photo (atol 1e-5)', async () => {
    const face = assertWholeImage((await post(wholeImageUrl, jpeg)).body, 200, 200);
    // Decoded as the server decodes it (sharp); a 200x200 photo is not shrunk.
    const photo = await decodePhoto(jpeg, { maxPixels: t.config.maxPixels, minImageSide: t.config.minImageSide });
    assert.equal(photo.scale, 1);
    for (const task of ['age', 'ethnicity', 'gender'] as const) {
      const bytes = new Uint8Array(await readFile(join(t.modelsDir, `${task}.onnx`)));
      const metadata = readModelMetadata(bytes);
      const session = await createSession(bytes, { provider: 'cpu', threads: 1 });
      const input = preprocess(photo.pixels, metadata.input);
      const outputs = await run(session, { [session.inputs[0].name]: { data: input, dims: [1, metadata.input.height, metadata.input.width, metadata.input.channels] } });
      const raw = Array.from(outputs.probabilities.data);
      const expected = raw.length === 1 ? [1 - raw[0], raw[0]] : raw;
      face[task].probabilities.forEach((p, i) => assert.ok(Math.abs(p - expected[i]) < 1e-5, `${task}[${i}]: ${p} vs ${expected[i]}`));
      if (task === 'age') assert.ok(Math.abs((face.age.years as number) - outputs.years.data[0]) < 1e-5);
    }
  });

  it('POST /v1/predict/batch answers in order, each item a result or its own error', async () => {
    const other = await makeImage(200, 200, 'image/jpeg', 9);
    const single = async (bytes: Uint8Array<ArrayBuffer>) => (await post(wholeImageUrl, bytes)).body.faces[0];
    const res = await fetch(`${t.url}/v1/predict/batch?detect=none`, {
      method: 'POST',
      body: multipart([{ name: 'image', bytes: jpeg }, { name: 'image', bytes: new TextEncoder().encode('not an image') }, { name: 'image', bytes: other }]),
    });
    assert.equal(res.status, 200);
    const items = (await res.json()) as (PredictBody | ErrorBody)[];
    assert.equal(items.length, 3);
    assert.deepEqual(assertWholeImage(items[0] as PredictBody, 200, 200).age, (await single(jpeg)).age);
    assert.equal((items[1] as ErrorBody).error.code, 'unsupported_image_format');
    assert.deepEqual(assertWholeImage(items[2] as PredictBody, 200, 200).ethnicity, (await single(other)).ethnicity);
  });

  it('finds no face in a smooth gradient: 200 with faces: [], the detector run and no classifier', async () => {
    const batchesBefore = await batchCount();
    const width = 320;
    const height = 240;
    const pixels = Buffer.alloc(width * height * 3);
    for (let i = 0; i < width * height; i++) pixels.fill(Math.round((255 * (i % width)) / (width - 1)), 3 * i, 3 * i + 3);
    const gradient = await sharp(pixels, { raw: { width, height, channels: 3 } }).png().toBuffer();
    const { status, body } = await post(`${t.url}/v1/predict`, gradient, 'image/png');
    assert.equal(status, 200);
    assert.deepEqual(body.image, { width, height });
    assert.deepEqual(body.faces, []);
    assert.ok(body.timingsMs.detect > 0, 'the detector ran');
    assert.equal(await batchCount(), batchesBefore, 'no face, no classifier batch');
  });

  it('finds exactly one face in a UTKFace crop, its box inside the photo, and judges it', { skip: NO_FACES }, async () => {
    const crop = await readFile(join(DEFAULT_UTKFACE, FACE_FILES[0]));
    const { status, body } = await post(`${t.url}/v1/predict`, crop);
    assert.equal(status, 200);
    assert.deepEqual(body.image, { width: 200, height: 200 });
    assert.equal(body.faces.length, 1, JSON.stringify(body.faces.map((face) => face.box)));
    assertDetectedFace(body.faces[0], body.image);
    assert.ok(body.timingsMs.detect > 0 && body.timingsMs.inference > 0);
  });

  for (const count of [2, 3, 4]) {
    it(`finds the ${count} faces of a scene of ${count} UTKFace crops side by side, each where it was pasted, largest first`, { skip: NO_FACES }, async () => {
      const scene = await faceScene(count);
      const { status, body } = await post(`${t.url}/v1/predict`, scene.jpeg);
      assert.equal(status, 200);
      assert.deepEqual(body.image, { width: scene.width, height: scene.height });
      assert.equal(body.faces.length, count, JSON.stringify(body.faces.map((face) => face.box)));
      body.faces.forEach((face) => assertDetectedFace(face, body.image));
      const areas = body.faces.map((face) => face.box.width * face.box.height);
      assert.deepEqual([...areas].sort((a, b) => b - a), areas, 'sorted by box area, largest first');
      // The faces were pasted largest first, left to right: the i-th answer is the i-th face pasted.
      body.faces.forEach((face, i) => assert.ok(inside(centre(face.box), { ...scene.placed[i], width: scene.placed[i].side, height: scene.placed[i].side }), `face ${i} at ${JSON.stringify(face.box)}, pasted at ${JSON.stringify(scene.placed[i])}`));
    });
  }

  it('reports faces in the upright frame of an EXIF-rotated photo (orientation 6), as in the same photo turned in its pixels', { skip: NO_FACES }, async () => {
    const scene = await faceScene(3);
    const turned = await sharp(scene.jpeg).rotate(90).jpeg({ quality: 92 }).toBuffer();
    const tagged = await sharp(scene.jpeg).withMetadata({ orientation: 6 }).jpeg({ quality: 92 }).toBuffer();
    const stored = await sharp(tagged).metadata();
    assert.deepEqual([stored.width, stored.height, stored.orientation], [scene.width, scene.height, 6], 'the file itself is stored unturned');
    const [byPixels, byTag] = [(await post(`${t.url}/v1/predict`, turned)).body, (await post(`${t.url}/v1/predict`, tagged)).body];
    // Turned a quarter clockwise: width and height swap.
    for (const body of [byPixels, byTag]) assert.deepEqual(body.image, { width: scene.height, height: scene.width });
    assert.equal(byTag.faces.length, 3);
    assert.equal(byPixels.faces.length, 3);
    const AGREE_PX = 4;
    byTag.faces.forEach((face, i) => {
      const other = byPixels.faces[i].box;
      for (const key of ['x', 'y', 'width', 'height'] as const) assert.ok(Math.abs(face.box[key] - other[key]) <= AGREE_PX, `face ${i} ${key}: ${face.box[key]} tagged, ${other[key]} turned`);
      // A quarter turn clockwise takes (x, y) to (height - y, x): each face lies where its pasted square went.
      const square = scene.placed[i];
      assert.ok(inside(centre(face.box), { left: scene.height - square.top - square.side, top: square.left, width: square.side, height: square.side }), `face ${i} at ${JSON.stringify(face.box)}`);
    });
  });

  it('answers detection requests on a server without a detector with 400 detection_unavailable, and detect=none as usual', async () => {
    const blind = await startTestServer({ flags: ['--web-demo', join(tmpdir(), `no-web-demo-${process.pid}`)], fixture: { detector: false } });
    try {
      const res = await fetch(`${blind.url}/v1/predict`, { method: 'POST', body: jpeg, headers: { 'content-type': 'image/jpeg' } });
      assert.equal(res.status, 400);
      const error = (await res.json()) as ErrorBody;
      assert.equal(error.error.code, 'detection_unavailable');
      assert.match(error.error.message, /no face detector.*send detect=none/);
      // Refused before decoding: the image was never read.
      assert.doesNotMatch(await (await fetch(`${blind.url}/metrics`)).text(), /^image_decode_seconds_count [1-9]/m);
      const batch = await fetch(`${blind.url}/v1/predict/batch`, { method: 'POST', body: multipart([{ name: 'image', bytes: jpeg }]) });
      assert.equal(batch.status, 200);
      assert.equal(((await batch.json()) as ErrorBody[])[0].error.code, 'detection_unavailable', 'the batch item says why');
      const whole = await post(`${blind.url}/v1/predict?detect=none`, jpeg);
      assert.equal(whole.status, 200);
      assert.equal(whole.body.faces.length, 1);
      assert.equal(whole.body.faces[0].score, null);
    } finally {
      await blind.close();
    }
  });

  it('GET /v1/models reports metadata, sha256 and the execution provider in use', async () => {
    const res = await fetch(`${t.url}/v1/models`);
    assert.equal(res.status, 200);
    const body = (await res.json()) as {
      provider: string;
      runtime: string;
      models: { task: string; file: string; sha256: string; labels: string[]; input: object; metadata: { labels: string[] }; onnx: { outputs: { name: string }[] } }[];
      sessions: { tasks: string[]; nodes?: { separate: number; merged: number } }[];
    };
    assert.equal(body.provider, 'cpu');
    assert.match(body.runtime, /onnxruntime-node/);
    const manifest = JSON.parse(await readFile(join(t.modelsDir, 'manifest.json'), 'utf8')) as { models: { task: string; sha256: string }[] };
    assert.deepEqual(body.models.map((m) => m.task), ['age', 'ethnicity', 'gender']);
    for (const model of body.models) {
      assert.equal(model.sha256, manifest.models.find((m) => m.task === model.task)?.sha256);
      assert.ok(!model.file.includes('/'), 'no file paths in answers');
    }
    assert.deepEqual(body.models[1].labels, ETHNICITY_LABELS);
    assert.deepEqual(body.models[1].input, { height: 32, width: 32, channels: 3, scaling: 'unit' });
    assert.deepEqual(body.models[2].metadata.labels, GENDER_LABELS);
    // age and gender (same input spec, and the fixtures' first convolution has the same weights) run as one graph.
    assert.deepEqual(body.sessions.map((s) => s.tasks), [['age', 'gender'], ['ethnicity']]);
    const nodes = body.sessions[0].nodes as { separate: number; merged: number };
    assert.ok(nodes.merged < nodes.separate, `the shared convolution is kept once: ${JSON.stringify(nodes)}`);
    // Each model's outputs are reported under its own names, not the merged graph's.
    assert.deepEqual(body.models[0].onnx.outputs.map((o) => o.name).sort(), ['probabilities', 'years']);
  });

  it('--merge-models off runs a session per model, with the answers of the merged graph', async () => {
    const separate = await startTestServer({ flags: ['--web-demo', join(tmpdir(), `no-web-demo-${process.pid}`), '--merge-models', 'off'], modelsDir: t.modelsDir });
    try {
      const sessions = ((await (await fetch(`${separate.url}/v1/models`)).json()) as { sessions: { tasks: string[]; nodes?: object }[] }).sessions;
      assert.deepEqual(sessions, [{ tasks: ['age'] }, { tasks: ['gender'] }, { tasks: ['ethnicity'] }], 'grouped by input spec, one session each');
      const predict = async (url: string) => assertWholeImage((await post(`${url}/v1/predict?detect=none`, jpeg)).body, 200, 200);
      const [merged, apart] = [await predict(t.url), await predict(separate.url)];
      for (const task of ['age', 'ethnicity', 'gender'] as const) {
        merged[task].probabilities.forEach((p, i) => assert.ok(Math.abs(p - apart[task].probabilities[i]) <= 1e-6, `${task}[${i}]: ${p} merged, ${apart[task].probabilities[i]} apart`));
      }
      assert.ok(Math.abs((merged.age.years as number) - (apart.age.years as number)) <= 1e-4);
    } finally {
      await separate.close();
    }
  });

  it('GET /healthz and /readyz answer 200 once the models are loaded', async () => {
    const health = await fetch(`${t.url}/healthz`);
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: 'alive' });
    const ready = await fetch(`${t.url}/readyz`);
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), { status: 'ready' });
  });

  it('GET /metrics counts requests by route and status and exposes latency, stage times (the detector\'s too), errors and queue depth', async () => {
    await fetch(`${t.url}/v1/predict`, { method: 'POST', body: new Uint8Array(0), headers: { 'content-type': 'image/jpeg' } });
    assert.equal((await post(`${t.url}/v1/predict`, jpeg)).status, 200, 'a request with detection');
    const res = await fetch(`${t.url}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    assert.match(text, /^http_requests_total\{method="POST",route="\/v1\/predict",status="200"\} \d+$/m);
    assert.match(text, /^http_requests_total\{method="POST",route="\/v1\/predict",status="400"\} \d+$/m);
    assert.match(text, /^http_request_duration_seconds_bucket\{route="\/v1\/predict",le="0.1"\} \d+$/m);
    assert.match(text, /^image_decode_seconds_count [1-9]\d*$/m);
    // age and gender read the same input, so they run as one merged graph; ethnicity runs on its own.
    assert.match(text, /^inference_seconds_sum\{model="age\+gender"\} [\d.e-]+$/m);
    assert.match(text, /^inference_seconds_sum\{model="ethnicity"\} [\d.e-]+$/m);
    assert.match(text, /^inference_seconds_count\{model="detector"\} [1-9]\d*$/m);
    assert.match(text, /^errors_total\{code="empty_body"\} [1-9]\d*$/m);
    assert.match(text, /^queue_depth 0$/m);
  });

  it('GET /openapi.json is an OpenAPI 3 document of every route, with class names from the metadata', async () => {
    const res = await fetch(`${t.url}/openapi.json`);
    assert.equal(res.status, 200);
    type Schema = { required?: string[]; enum?: string[]; items?: Schema; properties?: Record<string, Schema> };
    const doc = (await res.json()) as { openapi: string; paths: Record<string, object>; components: { schemas: { Prediction: Schema } } };
    assert.match(doc.openapi, /^3\./);
    for (const path of ['/v1/predict', '/v1/predict/batch', '/v1/models', '/healthz', '/readyz', '/metrics', '/openapi.json']) assert.ok(path in doc.paths, path);
    const prediction = doc.components.schemas.Prediction;
    assert.deepEqual(prediction.required, ['image', 'faces', 'timingsMs']);
    const face = prediction.properties?.faces.items?.properties ?? {};
    for (const field of ['box', 'score', 'landmarks']) assert.ok(field in face, `a face has ${field}`);
    assert.deepEqual(face.age?.properties?.group.enum, AGE_LABELS);
    assert.deepEqual(face.gender?.properties?.label.enum, GENDER_LABELS);
    // Both predict routes document the face query.
    for (const path of ['/v1/predict', '/v1/predict/batch']) {
      const parameters = (doc.paths[path] as { post: { parameters: { name: string; in: string }[] } }).post.parameters;
      assert.deepEqual(parameters.map((p) => `${p.in}:${p.name}`), ['query:detect', 'query:maxFaces', 'query:minScore'], path);
    }
    // A batch answers an image over the pixel limit, or of another format, as an item of its 200 array.
    const responses = (path: string) => (doc.paths[path] as { post: { responses: Record<string, { description: string }> } }).post.responses;
    assert.match(responses('/v1/predict')['413'].description, /image over the pixel limit/);
    assert.match(responses('/v1/predict/batch')['413'].description, /--max-batch-images.*its own item error/);
    assert.match(responses('/v1/predict/batch')['415'].description, /its own item error/);
    assert.equal(responses('/v1/predict/batch')['422'], undefined);
  });

  it('serves a page that says how to build the web demo when its folder is absent', async () => {
    const res = await fetch(`${t.url}/`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
    const text = await res.text();
    assert.match(text, /web demo is not built/);
    assert.match(text, /npm run build:web/);
    // The folder comes from --web-demo (outside the repository here: named by its flag, no absolute path shown),
    // and the curl line from the address this request reached.
    assert.match(text, /the folder given by <code>--web-demo<\/code>/);
    assert.ok(!text.includes(tmpdir()), 'no absolute path');
    assert.ok(text.includes(`${t.url}/v1/predict`), 'the curl line uses the address the server was reached at');
  });
});
