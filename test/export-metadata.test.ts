/**
 * The metadata inside an exported model: written by the exporter, read back by `contract/metadata.ts`
 * (the reader the server and the browser use), and clear errors for files that are not what they claim.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { build } from 'esbuild';
import { encodeLayersModel, exportModel, ExportError, type ExportedModel } from '../export/export-model.ts';
import { encodeModel } from '../export/onnx-proto.ts';
import { createOnnxSession, ONNX_RUNTIMES } from '../export/parity.ts';
import { modelSha256 } from '../export/tfjs-model.ts';
import { taskLabels } from '../contract/labels.ts';
import {
  classProbabilities,
  METADATA_KEY,
  ModelMetadataError,
  outputMismatch,
  parseModelMetadata,
  readModelMetadata,
  readOnnxModelInfo,
  validateModelManifest,
  validateTrainingInfo,
  type ModelMetadata,
} from '../contract/metadata.ts';
import { PREPROCESSING_VERSION, SEED_INPUT } from '../contract/preprocess.ts';
import { buildSeedModel } from '../training/models/seed.ts';

const METRICS = { task: 'gender', testAccuracy: 0.875, testLoss: 0.31, report: { male: { precision: 0.9, recall: 0.86 } }, confusionMatrix: [[43, 7], [5, 45]] };

let gender: ExportedModel;
let genderModel: tf.LayersModel;

/** A valid metadata document to break one field at a time. */
function validMetadata(): ModelMetadata {
  return structuredClone(gender.metadata);
}

/** A tiny ONNX file whose metadata_props hold `value` under the project's key. */
function withMetadataJson(value: string, opset = 13): Uint8Array {
  return encodeModel({
    irVersion: 7,
    producerName: 'test',
    producerVersion: '0',
    graph: { name: 'g', nodes: [{ name: 'n', opType: 'Identity', inputs: ['x'], outputs: ['y'], attributes: {} }], initializers: [], inputs: [{ name: 'x', elemType: 1, shape: ['N', 1] }], outputs: [{ name: 'y', elemType: 1, shape: ['N', 1] }] },
    opsetImports: [{ domain: '', version: opset }],
    metadataProps: [{ key: METADATA_KEY, value }],
  });
}

describe('model metadata: written by the exporter, read by contract/metadata.ts', () => {
  before(async () => {
    await tf.setBackend('cpu');
    genderModel = buildSeedModel('gender', 2, 11);
    gender = exportModel(genderModel, {
      task: 'gender',
      labels: taskLabels('gender'),
      input: SEED_INPUT,
      metrics: METRICS,
      preset: 'seed',
      sourceSha256: await modelSha256(genderModel),
    });
  });

  it('round-trips every field through the .onnx bytes (Uint8Array and ArrayBuffer)', () => {
    const read = readModelMetadata(gender.bytes);
    assert.deepEqual(read, gender.metadata);
    const copy = gender.bytes.slice().buffer;
    assert.deepEqual(readModelMetadata(copy), gender.metadata);
    assert.equal(read.task, 'gender');
    assert.deepEqual(read.labels, ['male', 'female']);
    assert.deepEqual(read.input, { height: 48, width: 48, channels: 1, scaling: 'unit' });
    assert.equal(read.preprocessingVersion, PREPROCESSING_VERSION);
    assert.deepEqual(read.metrics, METRICS);
    assert.match(read.source.sha256, /^[0-9a-f]{64}$/);
    assert.equal(read.source.preset, 'seed');
    assert.equal(read.opset, 13);
    assert.equal(read.exporter.name, 'face-attributes-export');
  });

  it('marks a single sigmoid unit so runtimes can form [1 - p, p]', () => {
    const [output] = readModelMetadata(gender.bytes).outputs;
    assert.deepEqual(output, { name: 'output', kind: 'sigmoid', labels: ['male', 'female'] });
    assert.deepEqual(classProbabilities(output, [0.25]), [0.75, 0.25]);
    assert.throws(() => classProbabilities(output, [0.2, 0.8]), /single sigmoid unit but has 2 values/);
  });

  it('describes softmax outputs as probabilities with their labels, in order', async () => {
    const labels = taskLabels('age', 'decades');
    const model = buildSeedModel('age', labels.length, 3);
    const exported = exportModel(model, { task: 'age', labels, ageScheme: 'decades', input: SEED_INPUT, sourceSha256: await modelSha256(model) });
    const read = readModelMetadata(exported.bytes);
    assert.deepEqual(read.outputs, [{ name: 'output', kind: 'probabilities', labels }]);
    assert.equal(read.ageScheme, 'decades');
    assert.equal(read.metrics, null);
    model.dispose();
  });

  it('states the opset and IR version in the file and reads them back', () => {
    const info = readOnnxModelInfo(gender.bytes);
    assert.deepEqual(info.opsetImports, [{ domain: '', version: 13 }]);
    assert.equal(info.irVersion, 7);
    assert.equal(info.producerName, 'face-attributes-export');
  });

  it('loads with its metadata in onnxruntime-node (all optimizations) and onnxruntime-web, dynamic batch, float32 NHWC', async () => {
    const session = await createOnnxSession(gender.bytes);
    const [input] = session.inputMetadata;
    assert.ok(input.isTensor);
    assert.equal(input.type, 'float32');
    assert.deepEqual(input.shape, ['N', 48, 48, 1]);
    assert.deepEqual(session.outputNames, ['output']);
    await session.release();
    const web = await ONNX_RUNTIMES['onnxruntime-web'](gender.bytes);
    assert.deepEqual(web.inputNames, ['input']);
    const [out] = await web.run(new Float32Array(4 * 48 * 48).fill(0.5), [4, 48, 48, 1]);
    assert.equal(out.type, 'float32');
    assert.deepEqual(out.dims, [4, 1]);
    await web.release();
  });

  it('refuses outputs that do not fit the model, naming the output and the shapes', async () => {
    const base = { task: 'gender' as const, labels: ['male', 'female'], input: SEED_INPUT, sourceSha256: 'a'.repeat(64) };
    assert.throws(() => exportModel(genderModel, { ...base, outputs: [{ name: 'output', kind: 'probabilities', labels: ['a', 'b', 'c'] }] }), (e: Error) => e instanceof ExportError && /Output 0 \("output", probabilities with 3 labels\) should be \[N, 3\], but the model's output 0 is \[N, 1\]/.test(e.message));
    assert.throws(() => exportModel(genderModel, { ...base, input: { ...SEED_INPUT, channels: 3 } }), /The model takes \[N, 48, 48, 1\], but the input spec says 48x48x3/);
    assert.throws(() => exportModel(genderModel, { ...base, outputs: [{ name: 'output', kind: 'sigmoid', labels: ['a', 'b', 'c'] }] }), /outputs\[0\]\.labels: a "sigmoid" output needs exactly 2 labels/);
    assert.throws(() => exportModel(genderModel, { ...base, sourceSha256: 'nope' }), /source\.sha256: expected 64 lowercase hex digits/);
  });

  it('says when a session lacks an output the metadata describes, or gives no probabilities (the server and the page both ask)', () => {
    const { metadata } = gender;
    assert.equal(outputMismatch('gender.onnx', new Map([['output', 'gender/output']]), metadata), undefined);
    assert.equal(outputMismatch('gender.onnx', new Map([['other', 'other']]), metadata), 'gender.onnx: its metadata describes output "output", which the graph does not have (it has other)');
    const yearsOnly: ModelMetadata = { ...metadata, outputs: [{ name: 'output', kind: 'years' }] };
    assert.equal(outputMismatch('gender.onnx', new Map([['output', 'output']]), yearsOnly), 'gender.onnx: no output gives class probabilities');
  });
});

describe('reading a corrupt or truncated .onnx file', () => {
  it('rejects an empty file', () => {
    assert.throws(() => readModelMetadata(new Uint8Array(0)), (e: Error) => e instanceof ModelMetadataError && e.message === 'Not a valid ONNX model: the file is empty');
  });

  it('rejects a file cut short anywhere, saying it is truncated', () => {
    const { bytes } = gender;
    for (const length of [1, 5, 40, Math.floor(bytes.length / 2), bytes.length - 30, bytes.length - 1]) {
      assert.throws(
        () => readModelMetadata(bytes.subarray(0, length)),
        (e: Error) => e instanceof ModelMetadataError && /truncated/.test(e.message),
        `cut at ${length} of ${bytes.length} bytes`,
      );
    }
  });

  it('says a file cut exactly before its metadata may be truncated', () => {
    const { bytes } = gender;
    const key = indexOf(bytes, new TextEncoder().encode(METADATA_KEY));
    // metadata_props entry: tag 0x72, length (varint), then the key's tag 0x0a and length.
    const entry = [key - 4, key - 5].find((at) => bytes[at] === 0x72) as number;
    assert.ok(entry > 0);
    assert.throws(() => readModelMetadata(bytes.subarray(0, entry)), /has no "face_attributes" metadata \(metadata keys: none\).*the file is truncated/);
  });

  it('rejects bytes that are not ONNX (random, PNG, JSON, text) with a message that says so', async () => {
    const png = Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52]);
    const json = new TextEncoder().encode(await readFile(new URL('../package.json', import.meta.url), 'utf8'));
    let seed = 7;
    const random = Uint8Array.from({ length: 4096 }, () => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24);
    for (const [name, bytes] of [['random', random], ['png', png], ['json', json], ['text', new TextEncoder().encode('hello, model')]] as const) {
      assert.throws(() => readModelMetadata(bytes), (e: Error) => e instanceof ModelMetadataError && e.message.startsWith('Not a valid ONNX model: '), name);
    }
  });

  it('rejects flipped bytes inside the metadata with a clear error, never garbage', () => {
    const bytes = gender.bytes.slice();
    const json = new TextEncoder().encode(`"task":"gender"`);
    const at = indexOf(bytes, json);
    assert.ok(at > 0);
    bytes[at + 9] = 0xff; // 'g' of gender -> invalid UTF-8
    assert.throws(() => readModelMetadata(bytes), /metadata "face_attributes" is not valid UTF-8/);
  });

  it('says when a valid ONNX model has no metadata of this project', () => {
    const input = tf.input({ shape: [2, 2, 1] });
    const model = tf.model({ inputs: input, outputs: tf.layers.flatten().apply(input) as tf.SymbolicTensor });
    assert.throws(() => readModelMetadata(encodeLayersModel(model)), /has no "face_attributes" metadata \(metadata keys: none\); export it with `npm run export`/);
  });

  it('names the problem in metadata that is not valid JSON, or valid JSON with bad fields', () => {
    const broken = (change: (m: Record<string, unknown>) => void) => {
      const m = validMetadata() as unknown as Record<string, unknown>;
      change(m);
      return withMetadataJson(JSON.stringify(m));
    };
    assert.throws(() => readModelMetadata(withMetadataJson('{"task": ')), /Model metadata is not valid JSON/);
    assert.throws(() => readModelMetadata(broken((m) => (m.task = 'mood'))), /Model metadata\.task: "mood" is not one of: age, ethnicity, gender/);
    assert.throws(() => readModelMetadata(broken((m) => (m.colour = 'red'))), /Model metadata: unknown key "colour"/);
    assert.throws(() => readModelMetadata(broken((m) => (m.schemaVersion = 2))), /schemaVersion: 2 is not supported; this reader knows version 1/);
    assert.throws(() => readModelMetadata(broken((m) => ((m.input as Record<string, unknown>).channels = 4))), /Model metadata\.input\.channels: 4 is not one of: 1, 3/);
    assert.throws(() => readModelMetadata(broken((m) => (m.labels = ['a', 'a']))), /Model metadata\.labels: label "a" appears twice/);
    assert.throws(() => readModelMetadata(broken((m) => (m.outputs = [{ name: 'y', kind: 'years', labels: ['x'] }]))), /outputs\[0\]\.labels: a "years" output has no labels/);
    assert.throws(() => readModelMetadata(broken((m) => delete m.preprocessingVersion)), /preprocessingVersion: expected a positive whole number, got missing/);
  });

  it('refuses metadata whose opset disagrees with the opset the graph imports', () => {
    assert.throws(() => readModelMetadata(withMetadataJson(JSON.stringify(validMetadata()), 17)), /Model metadata says opset 13, but the graph imports ai\.onnx opset 17/);
    assert.deepEqual(parseModelMetadata(JSON.stringify(validMetadata())), gender.metadata);
  });
});

describe('training-info.json and manifest.json formats', () => {
  it('accepts exactly what the training CLI writes, ignoring keys it does not know', () => {
    const labels = taskLabels('age');
    const written = {
      task: 'age',
      preset: 'seed',
      labels,
      ageScheme: 'coursework',
      input: SEED_INPUT,
      preprocessingVersion: 1,
      outputs: [{ name: 'output', kind: 'probabilities', labels }],
      seed: 42,
      split: { testFraction: 0.3, seed: 42 },
      notes: 'a key a later CLI may add',
    };
    const { notes: _notes, ...expected } = written;
    assert.deepEqual(validateTrainingInfo(written), expected);
  });

  it('names the file and the key that is wrong', () => {
    assert.throws(() => validateTrainingInfo({ preset: 'seed' }, 'runs/x/age/training-info.json'), /runs\/x\/age\/training-info\.json: task: missing is not one of: age, ethnicity, gender/);
    assert.throws(() => validateTrainingInfo({ task: 'age', preset: 'seed', labels: ['a'], ageScheme: 'weeks' }), /ageScheme: "weeks" is not one of: coursework, decades/);
  });

  it('validates the manifest and names a bad hash', () => {
    const entry = { task: 'gender', file: 'gender.onnx', sha256: 'a'.repeat(64), bytes: 10, opset: 13, exporterVersion: '1.0.0', preprocessingVersion: 1, sourceSha256: 'b'.repeat(64) };
    assert.deepEqual(validateModelManifest({ schemaVersion: 1, models: [entry] }).models, [entry]);
    assert.throws(() => validateModelManifest({ schemaVersion: 1, models: [{ ...entry, sha256: 'xyz' }] }), /models\[0\]\.sha256: expected 64 lowercase hex digits/);
  });
});

describe('contract/metadata.ts in the browser', () => {
  for (const file of ['metadata.ts', 'onnx-wire.ts', 'merge-models.ts']) {
    it(`${file}: imports only its neighbours in contract (no Node modules) and bundles for the browser with esbuild`, async () => {
      const url = new URL(`../contract/${file}`, import.meta.url);
      const imports = [...(await readFile(url, 'utf8')).matchAll(/from '([^']+)'/g)].map((m) => m[1]);
      for (const name of imports) assert.match(name, /^\.\/[\w-]+\.ts$/, `${file} imports ${name}`);
      const result = await build({ entryPoints: [url.pathname], bundle: true, platform: 'browser', format: 'esm', write: false, logLevel: 'silent' });
      assert.equal(result.errors.length, 0);
      if (file === 'metadata.ts') assert.ok(result.outputFiles[0].text.includes('face_attributes'));
    });
  }
});

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}
