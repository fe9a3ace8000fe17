/**
 * The API contract of the server, on fixture models exported through the project's exporter: every route, both
 * upload forms, batches, labels taken from model metadata, outputs matching onnxruntime run directly.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeImage } from '../imaging/decode.ts';
import { readModelMetadata } from '../contract/metadata.ts';
import { preprocess } from '../contract/preprocess.ts';
import { makeImage, startTestServer, type TestServer } from './helpers/serve-harness.ts';
import { createSession, run } from '../node-shared/onnxruntime-node.ts';

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
interface PredictBody {
  age: TaskResult;
  ethnicity: TaskResult;
  gender: TaskResult;
  timingsMs: { decode: number; inference: number; total: number };
}

function multipart(fields: { name: string; bytes: Uint8Array<ArrayBuffer>; type?: string }[]): FormData {
  const form = new FormData();
  fields.forEach(({ name, bytes, type }, i) => form.append(name, new Blob([bytes], { type: type ?? 'image/jpeg' }), `file${i}.jpg`));
  return form;
}

function assertContract(body: PredictBody): void {
  assert.equal(typeof body.age.group, 'string');
  assert.ok(AGE_LABELS.includes(body.age.group as string));
  assert.equal(body.age.group, AGE_LABELS[body.age.index]);
  assert.equal(body.age.probabilities.length, 6);
  assert.equal(body.ethnicity.label, ETHNICITY_LABELS[body.ethnicity.index]);
  assert.equal(body.ethnicity.probabilities.length, 5);
  assert.equal(body.gender.label, GENDER_LABELS[body.gender.index]);
  assert.equal(body.gender.probabilities.length, 2);
  for (const task of [body.age, body.ethnicity, body.gender]) {
    assert.ok(Math.abs(task.probabilities.reduce((a, b) => a + b, 0) - 1) < 1e-5, 'probabilities sum to 1');
    assert.equal(task.index, task.probabilities.indexOf(Math.max(...task.probabilities)));
  }
  assert.equal(typeof body.age.years, 'number');
  for (const key of ['decode', 'inference', 'total'] as const) assert.ok(body.timingsMs[key] >= 0, `timingsMs.${key}`);
  assert.ok(body.timingsMs.total >= body.timingsMs.decode);
}

describe('serve API', () => {
  let t: TestServer;
  let jpeg: Uint8Array<ArrayBuffer>;
  let png: Uint8Array<ArrayBuffer>;

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
    jpeg = await makeImage(200, 200, 'image/jpeg', 1);
    png = await makeImage(120, 90, 'image/png', 2);
  });
  after(() => t.close());

  it('POST /v1/predict with a raw JPEG answers every task with labels from the metadata', async () => {
    const res = await fetch(`${t.url}/v1/predict`, { method: 'POST', body: jpeg, headers: { 'content-type': 'image/jpeg' } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
    assertContract((await res.json()) as PredictBody);
  });

  it('sniffs the bytes rather than trusting the Content-Type (a PNG sent as image/jpeg)', async () => {
    const res = await fetch(`${t.url}/v1/predict`, { method: 'POST', body: png, headers: { 'content-type': 'image/jpeg' } });
    assert.equal(res.status, 200);
    assertContract((await res.json()) as PredictBody);
  });

  it('answers a multipart upload exactly as the same image sent raw', async () => {
    const raw = (await (await fetch(`${t.url}/v1/predict`, { method: 'POST', body: jpeg, headers: { 'content-type': 'image/jpeg' } })).json()) as PredictBody;
    const res = await fetch(`${t.url}/v1/predict`, { method: 'POST', body: multipart([{ name: 'note', bytes: new TextEncoder().encode('ignored') }, { name: 'image', bytes: jpeg }]) });
    assert.equal(res.status, 200);
    const form = (await res.json()) as PredictBody;
    assertContract(form);
    for (const task of ['age', 'ethnicity', 'gender'] as const) assert.deepEqual(form[task], raw[task]);
  });

  it('matches onnxruntime run directly on the shared preprocessing (atol 1e-5)', async () => {
    const body = (await (await fetch(`${t.url}/v1/predict`, { method: 'POST', body: jpeg, headers: { 'content-type': 'image/jpeg' } })).json()) as PredictBody;
    const pixels = await decodeImage(jpeg);
    for (const task of ['age', 'ethnicity', 'gender'] as const) {
      const bytes = new Uint8Array(await readFile(join(t.modelsDir, `${task}.onnx`)));
      const metadata = readModelMetadata(bytes);
      const session = await createSession(bytes, { provider: 'cpu', threads: 1 });
      const input = preprocess(pixels, metadata.input);
      const outputs = await run(session, { [session.inputs[0].name]: { data: input, dims: [1, metadata.input.height, metadata.input.width, metadata.input.channels] } });
      const raw = Array.from(outputs.probabilities.data);
      const expected = raw.length === 1 ? [1 - raw[0], raw[0]] : raw;
      body[task].probabilities.forEach((p, i) => assert.ok(Math.abs(p - expected[i]) < 1e-5, `${task}[${i}]: ${p} vs ${expected[i]}`));
      if (task === 'age') assert.ok(Math.abs((body.age.years as number) - outputs.years.data[0]) < 1e-5);
    }
  });

  it('POST /v1/predict/batch answers in order, each item a result or its own error', async () => {
    const other = await makeImage(200, 200, 'image/jpeg', 9);
    const single = async (bytes: Uint8Array<ArrayBuffer>) => (await (await fetch(`${t.url}/v1/predict`, { method: 'POST', body: bytes, headers: { 'content-type': 'image/jpeg' } })).json()) as PredictBody;
    const res = await fetch(`${t.url}/v1/predict/batch`, {
      method: 'POST',
      body: multipart([{ name: 'image', bytes: jpeg }, { name: 'image', bytes: new TextEncoder().encode('not an image') }, { name: 'image', bytes: other }]),
    });
    assert.equal(res.status, 200);
    const items = (await res.json()) as (PredictBody | { error: { code: string; message: string } })[];
    assert.equal(items.length, 3);
    assert.deepEqual((items[0] as PredictBody).age, (await single(jpeg)).age);
    assert.equal((items[1] as { error: { code: string } }).error.code, 'unsupported_image_format');
    assert.deepEqual((items[2] as PredictBody).ethnicity, (await single(other)).ethnicity);
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
      const predict = async (url: string) => (await (await fetch(`${url}/v1/predict`, { method: 'POST', body: jpeg, headers: { 'content-type': 'image/jpeg' } })).json()) as PredictBody;
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

  it('GET /metrics counts requests by route and status and exposes latency, stage times, errors and queue depth', async () => {
    await fetch(`${t.url}/v1/predict`, { method: 'POST', body: new Uint8Array(0), headers: { 'content-type': 'image/jpeg' } });
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
    assert.match(text, /^errors_total\{code="empty_body"\} [1-9]\d*$/m);
    assert.match(text, /^queue_depth 0$/m);
  });

  it('GET /openapi.json is an OpenAPI 3 document of every route, with class names from the metadata', async () => {
    const res = await fetch(`${t.url}/openapi.json`);
    assert.equal(res.status, 200);
    const doc = (await res.json()) as { openapi: string; paths: Record<string, object>; components: { schemas: { Prediction: { properties: Record<string, { properties: Record<string, { enum?: string[] }> }> } } } };
    assert.match(doc.openapi, /^3\./);
    for (const path of ['/v1/predict', '/v1/predict/batch', '/v1/models', '/healthz', '/readyz', '/metrics', '/openapi.json']) assert.ok(path in doc.paths, path);
    assert.deepEqual(doc.components.schemas.Prediction.properties.age.properties.group.enum, AGE_LABELS);
    assert.deepEqual(doc.components.schemas.Prediction.properties.gender.properties.label.enum, GENDER_LABELS);
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
