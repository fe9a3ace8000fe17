import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { SEED_INPUT } from '../contract/preprocess.ts';
import { selectBackend } from '../node-shared/tfjs/select.ts';
import type { Dataset } from '../training/data/dataset.ts';
import { loadModel } from '../training/models/io.ts';
import { DEFAULT_UTKFACE, REPO_ROOT } from '../node-shared/paths.ts';
import { testPredictor, trainTask } from '../training/train-task.ts';
import { evaluate, onnxPredictor, tfjsPredictor } from '../training/evaluate.ts';
import { exportModelFolderInMemory } from '../export/export-model.ts';

/** Faces whose gender is visible as brightness: a pattern the seed CNN learns in a couple of epochs. */
function brightnessDataset(count: number): Dataset {
  const size = SEED_INPUT.height * SEED_INPUT.width;
  const pixels = new Uint8Array(count * size);
  const genders = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    genders[i] = i % 2;
    for (let p = 0; p < size; p++) pixels[i * size + p] = (genders[i] === 1 ? 170 : 60) + ((i * 31 + p * 7) % 40);
  }
  return {
    spec: SEED_INPUT,
    count,
    pixels,
    ages: Uint8Array.from({ length: count }, (_, i) => 1 + (i % 100)),
    genders,
    ethnicities: Uint8Array.from({ length: count }, (_, i) => i % 5),
    names: Array.from({ length: count }, (_, i) => `face-${i}.jpg`),
    skipped: { count: 0, byReason: {}, examples: [] },
  };
}

describe('training end to end', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'train-e2e-'));
    await selectBackend('wasm', () => {});
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('trains the seed gender model on generated faces and writes every artifact of a run', async () => {
    const dataset = brightnessDataset(800);
    const lines: string[] = [];
    const details: string[] = [];
    const metrics = await trainTask({ task: 'gender', preset: 'seed', dataset, outDir: dir, epochs: 6, seed: 7, ageScheme: 'coursework', backend: 'wasm', log: (l) => lines.push(l), detail: (l) => details.push(l) });
    assert.ok(metrics.testAccuracy > 0.9, `test accuracy ${metrics.testAccuracy} on a trivially separable set`);
    assert.equal(metrics.testCount, 240);
    assert.equal(metrics.parameters, 673);
    for (const file of ['model/model.json', 'model/weights.bin', 'history.json', 'metrics.json', 'training-info.json', 'test-split.json', 'evaluation.txt', 'subgroups.txt', 'curves.png', 'confusion.png', 'samples.png']) {
      assert.ok(existsSync(join(dir, file)), `${file} is written`);
    }
    const history = JSON.parse(await readFile(join(dir, 'history.json'), 'utf8'));
    assert.equal(history.loss.length, 6);
    assert.equal(lines.filter((l) => /epoch\s+\d+\/6/.test(l)).length, 6, 'one line per epoch');
    // the test split's tables go to `detail` (what --verbose prints) and to evaluation.txt, not to `log`
    assert.ok(!lines.some((l) => l.includes('Confusion matrix')), lines.join('\n'));
    assert.equal(details.length, 1);
    assert.match(details[0], /^gender: accuracy [\d.]+% on 240 faces\n[\s\S]*Confusion matrix[\s\S]*Accuracy by subgroup/);
    assert.equal(await readFile(join(dir, 'evaluation.txt'), 'utf8'), details[0] + '\n');

    const reloaded = await loadModel(join(dir, 'model'));
    const x = tf.tensor4d(dataset.pixels.slice(0, 2 * 48 * 48), [2, 48, 48, 1]).div(255);
    const p = reloaded.predict(x) as tf.Tensor;
    assert.deepEqual(p.shape, [2, 1]);
    tf.dispose([x, p]);
    reloaded.dispose();
  });

  it('scores the test split after training through the model exported to ONNX, or through tfjs (saying why) where it does not export', async () => {
    const dataset = brightnessDataset(64);
    const faces = Int32Array.from({ length: 64 }, (_, i) => i);
    const info = { task: 'gender' as const, labels: ['male', 'female'], outputs: [{ name: 'gender', kind: 'sigmoid' as const, labels: ['male', 'female'] }], input: SEED_INPUT, ageScheme: 'coursework' as const };
    const lines: string[] = [];
    const trained = await loadModel(join(dir, 'model'));
    const onnx = await testPredictor(trained, info, (line) => lines.push(line));
    const viaOnnx = await evaluate(onnx.predict, dataset, faces, 'gender', info.labels, 'coursework');
    await onnx.release();
    const viaTfjs = await evaluate(tfjsPredictor(trained, SEED_INPUT, info), dataset, faces, 'gender', info.labels, 'coursework');
    assert.deepEqual(Array.from(viaOnnx.predicted), Array.from(viaTfjs.predicted));
    assert.ok(Math.abs(viaOnnx.loss - viaTfjs.loss) < 1e-5);
    assert.equal(lines.length, 0, `no fallback for a model the exporter takes: ${lines.join('; ')}`);
    trained.dispose();

    // UpSampling2D has no ONNX conversion (yet): the tfjs model scores itself.
    const input = tf.input({ shape: [48, 48, 1] });
    const pooled = tf.layers.globalAveragePooling2d({}).apply(tf.layers.upSampling2d({ size: [2, 2] }).apply(input)) as tf.SymbolicTensor;
    const unexportable = tf.model({ inputs: input, outputs: tf.layers.dense({ units: 1, activation: 'sigmoid' }).apply(pooled) as tf.SymbolicTensor });
    const fallback = await testPredictor(unexportable, info, (line) => lines.push(line));
    const rows = await fallback.predict(new Float32Array(2 * 48 * 48).fill(0.5), 2);
    assert.equal(rows.length, 2);
    assert.equal(lines.length, 1);
    assert.match(lines[0], /^gender: scoring the test split with tfjs, since the model does not export to ONNX: .*UpSampling2D/);
    unexportable.dispose();
  });

  it('scores the exported ONNX model (through its metadata) exactly as the tfjs model it came from', async () => {
    const dataset = brightnessDataset(800);
    const model = await loadModel(join(dir, 'model'));
    const info = JSON.parse(await readFile(join(dir, 'training-info.json'), 'utf8'));
    const tfjsEvaluation = await evaluate(tfjsPredictor(model, SEED_INPUT, info), dataset, Int32Array.from({ length: 800 }, (_, i) => i), 'gender', ['male', 'female'], 'coursework');
    model.dispose();
    const exported = await exportModelFolderInMemory({ modelDir: join(dir, 'model') });
    exported.model.dispose();
    const { predict, metadata } = await onnxPredictor(exported.bytes);
    assert.deepEqual((metadata.metrics as { split: unknown }).split, { testFraction: 0.3, seed: 7, limit: null, datasetCount: 800 });
    const onnxEvaluation = await evaluate(predict, dataset, Int32Array.from({ length: 800 }, (_, i) => i), 'gender', metadata.labels, 'coursework');
    assert.deepEqual(Array.from(onnxEvaluation.predicted), Array.from(tfjsEvaluation.predicted));
    assert.ok(Math.abs(onnxEvaluation.loss - tfjsEvaluation.loss) < 1e-5);
  });

  it('does not leak tensors across a training run', async () => {
    const before = tf.memory().numTensors;
    await trainTask({ task: 'ethnicity', preset: 'seed', dataset: brightnessDataset(64), outDir: join(dir, 'leak'), epochs: 1, seed: 1, ageScheme: 'coursework', backend: 'wasm', log: () => {} });
    assert.equal(tf.memory().numTensors, before);
  });
});

describe('training on the real UTKFace faces (CI smoke)', () => {
  it('trains every task for one epoch on 300 faces through the CLI', { timeout: 600_000 }, async (t) => {
    if (!existsSync(DEFAULT_UTKFACE)) {
      t.skip(`UTKFace data not found at ${DEFAULT_UTKFACE}; this smoke runs where ../shared/data/utkface exists (CI has it)`);
      return;
    }
    const out = await mkdtemp(join(tmpdir(), 'train-real-'));
    try {
      const result = spawnSync(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'training/cli/train.ts'), '--task', 'all', '--preset', 'seed', '--data', DEFAULT_UTKFACE, '--limit', '300', '--epochs', '1', '--out', out, '--backend', 'wasm'], { encoding: 'utf8', cwd: REPO_ROOT });
      assert.equal(result.status, 0, result.stdout + result.stderr);
      for (const task of ['age', 'ethnicity', 'gender']) {
        const metrics = JSON.parse(await readFile(join(out, task, 'metrics.json'), 'utf8'));
        assert.equal(metrics.testCount, 90, task);
        assert.ok(metrics.testAccuracy >= 0 && metrics.testAccuracy <= 1);
      }
      assert.match(result.stdout, /\[age\]/);
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });

  it('trains the default (multitask) preset for one epoch on 300 colour faces through the CLI', { timeout: 600_000 }, async (t) => {
    if (!existsSync(DEFAULT_UTKFACE)) {
      t.skip(`UTKFace data not found at ${DEFAULT_UTKFACE}; this smoke runs where ../shared/data/utkface exists (CI has it)`);
      return;
    }
    const out = await mkdtemp(join(tmpdir(), 'train-multitask-'));
    try {
      const result = spawnSync(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'training/cli/train.ts'), '--task', 'all', '--data', DEFAULT_UTKFACE, '--limit', '300', '--epochs', '1', '--out', out, '--backend', 'wasm'], { encoding: 'utf8', cwd: REPO_ROOT });
      assert.equal(result.status, 0, result.stdout + result.stderr);
      assert.match(result.stdout, /all: trained 3 models as one network/);
      for (const task of ['age', 'ethnicity', 'gender']) {
        const metrics = JSON.parse(await readFile(join(out, task, 'metrics.json'), 'utf8'));
        assert.equal(metrics.preset, 'multitask', task);
        assert.equal(metrics.testCount, 60, task);
        const info = JSON.parse(await readFile(join(out, task, 'training-info.json'), 'utf8'));
        assert.deepEqual(info.input, { height: 64, width: 64, channels: 3, scaling: 'unit' });
      }
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });
});
