import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import * as ort from 'onnxruntime-node';
import { TASKS, taskLabels, type Task } from '../contract/labels.ts';
import { exportModel, exportModelFolderInMemory } from '../export/export-model.ts';
import { selectBackend } from '../node-shared/tfjs/select.ts';
import type { Dataset } from '../training/data/dataset.ts';
import { taskTargets } from '../training/evaluate.ts';
import { fitMultitask, MULTITASK_TRAINING, type MultitaskConfig } from '../training/fit-multitask.ts';
import { ageGroupCrossEntropy, batchNormalizers, batchStatistics, setRunningStatistics, validationScore } from '../training/fit-multitask-worker.ts';
import { HorizontalFlip, NoMirrorError, withoutMirror } from '../node-shared/tfjs/flip-layer.ts';
import { loadModel } from '../training/models/io.ts';
import { Temperature } from '../node-shared/tfjs/temperature-layer.ts';
import { buildMultitaskModels } from '../training/models/residual.ts';
import { trainTogether } from '../training/train-task.ts';
import { parseTrainArgs } from '../training/cli/train.ts';
import { patternDataset, SPEC } from './helpers/pattern-dataset.ts';

const labels = Object.fromEntries(TASKS.map((task) => [task, taskLabels(task)])) as Record<Task, string[]>;

/** Colour faces whose gender is their brightness and whose ethnicity is their dominant channel. */
const SMALL: MultitaskConfig = {
  ...MULTITASK_TRAINING,
  architecture: { input: SPEC, stemWidth: 4, widths: [8, 8], strides: [2, 2], blocksPerStage: 1, dropout: 0, flipTest: true },
  batchSize: 32,
  epochs: 4,
  patience: 10,
};

function fitArgs(dataset: Dataset, replicas: number, log: (line: string) => void) {
  const train = Int32Array.from({ length: 320 }, (_, i) => i);
  return {
    labels,
    dataset,
    targets: Object.fromEntries(TASKS.map((task) => [task, taskTargets(dataset, task, 'coursework')])) as Record<Task, Int32Array>,
    train,
    testCount: dataset.count - train.length,
    seed: 3,
    ageScheme: 'coursework' as const,
    backend: 'wasm' as const,
    replicas,
    log,
  };
}

describe('multitask preset', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'multitask-'));
    await selectBackend('wasm', () => {});
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('ships models that answer with the mean over the face and its mirror image, with the training network\'s weights', () => {
    const flipped = buildMultitaskModels(labels, SMALL.architecture, 'coursework', 1);
    const plain = buildMultitaskModels(labels, { ...SMALL.architecture, flipTest: false }, 'coursework', 1);
    assert.equal(flipped.inference.age.countParams(), plain.inference.age.countParams());
    const x = tf.randomUniform([2, 16, 16, 3], 0, 1, 'float32', 4);
    for (const task of TASKS) {
      const [want, got] = tf.tidy(() => {
        const outputs = (m: tf.LayersModel, input: tf.Tensor) => [m.predict(input)].flat();
        const mean = outputs(plain.inference[task], x).map((y, i) => y.add(outputs(plain.inference[task], tf.reverse(x, 2))[i]).div(2));
        return [tf.concat(mean.map((y) => y.flatten())), tf.concat(outputs(flipped.inference[task], x).map((y) => y.flatten()))];
      });
      assert.ok(tf.sub(want, got).abs().max().dataSync()[0] < 1e-6, task);
      tf.dispose([want, got]);
    }
    x.dispose();
    flipped.train.dispose();
    plain.train.dispose();
  });

  it('removes the mirror pass on request (withoutMirror): the same weights, one pass, and a clear refusal where there is none', () => {
    const flipped = buildMultitaskModels(labels, SMALL.architecture, 'coursework', 1);
    const plain = buildMultitaskModels(labels, { ...SMALL.architecture, flipTest: false }, 'coursework', 1);
    const x = tf.randomUniform([2, 16, 16, 3], 0, 1, 'float32', 5);
    for (const task of TASKS) {
      const onePass = withoutMirror(flipped.inference[task]);
      assert.equal(onePass.layers.filter((l) => l instanceof HorizontalFlip).length, 0, `${task}: no mirror left`);
      const [want, got] = tf.tidy(() => [plain.inference[task], onePass].map((m) => tf.concat([m.predict(x)].flat().map((y) => y.flatten()))));
      assert.ok(tf.sub(want, got).abs().max().dataSync()[0] < 1e-6, task);
      tf.dispose([want, got]);
      assert.throws(() => withoutMirror(plain.inference[task]), (error: Error) => error instanceof NoMirrorError && /not the mean of a face and its mirror image/.test(error.message));
    }
    x.dispose();
    flipped.train.dispose();
    plain.train.dispose();
  });

  it('replaces the batch-normalization running statistics with the faces\' batch statistics (precise BN)', () => {
    const models = buildMultitaskModels(labels, SMALL.architecture, 'coursework', 2);
    const dataset = patternDataset(128);
    const faces = Int32Array.from({ length: 128 }, (_, i) => i);
    const normalizers = batchNormalizers(models.train);
    assert.equal(normalizers.length, 7);
    setRunningStatistics(normalizers, batchStatistics(models.train, normalizers, faces, dataset.pixels, SPEC));
    // With the statistics of this one batch in every normalizer, inference normalizes as training does.
    const x = tf.tensor4d(Float32Array.from(dataset.pixels, (v) => v / 255), [128, 16, 16, 3]);
    const inference = tf.concat((models.train.apply(x, { training: false }) as tf.Tensor[]).map((y) => y.flatten()));
    const training = tf.concat((models.train.apply(x, { training: true }) as tf.Tensor[]).map((y) => y.flatten()));
    const diff = tf.sub(inference, training).abs().max().dataSync()[0];
    assert.ok(diff < 1e-3, `inference and training logits differ by ${diff}`);
    // and the running averages alone (never replaced) would not
    const fresh = buildMultitaskModels(labels, SMALL.architecture, 'coursework', 2);
    const running = tf.concat((fresh.train.apply(x, { training: false }) as tf.Tensor[]).map((y) => y.flatten()));
    assert.ok(tf.sub(running, training).abs().max().dataSync()[0] > 0.1);
    tf.dispose([x, inference, training, running]);
    models.train.dispose();
    fresh.train.dispose();
  });

  it('builds one trunk with three heads whose shipped models share it and export to ONNX as tfjs computes them', async () => {
    const models = buildMultitaskModels(labels, SMALL.architecture, 'coursework', 1);
    assert.deepEqual(models.train.outputs.map((o) => o.shape), [[null, 116], [null, 5], [null, 1]]);
    const trunk = (task: Task) => models.inference[task].layers.filter((l) => l.getClassName() === 'Conv2D').map((l) => l.name);
    assert.deepEqual(trunk('age'), trunk('gender'));
    assert.deepEqual(trunk('ethnicity'), trunk('gender'));
    const x = tf.randomUniform([3, 16, 16, 3], 0, 1, 'float32', 9);
    for (const task of TASKS) {
      const exported = exportModel(models.inference[task], { task, labels: labels[task], input: SPEC, outputs: models.outputs[task], sourceSha256: '0'.repeat(64) });
      const session = await ort.InferenceSession.create(exported.bytes);
      const results = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', x.dataSync() as Float32Array, [3, 16, 16, 3]) });
      const expected = models.inference[task].predict(x);
      (Array.isArray(expected) ? expected : [expected]).forEach((tensor, i) => {
        const got = results[session.outputNames[i]].data as Float32Array;
        const want = tensor.dataSync();
        want.forEach((v, k) => assert.ok(Math.abs(v - got[k]) < 1e-4 * Math.max(1, Math.abs(v)), `${task} output ${i}[${k}]: ${got[k]} vs ${v}`));
      });
      tf.dispose(expected);
      await session.release();
    }
    x.dispose();
    models.train.dispose();
  });

  it('trains the three tasks data-parallel on two replicas that stay identical, and learns each pattern', { timeout: 300_000 }, async () => {
    const lines: string[] = [];
    const before = tf.memory().numTensors;
    const fitted = await fitMultitask(fitArgs(patternDataset(400), 2, (l) => lines.push(l)), SMALL);
    // fitMultitask checks that both replicas end with the same weights (it throws otherwise).
    assert.equal(fitted.replicas, 2);
    assert.equal(fitted.epochs, 4);
    assert.ok(lines[0].includes('batch 32 over 2 replicas'), lines[0]);
    assert.ok(lines[0].includes('the 80 test faces are held out'), lines[0]);
    assert.equal(lines.filter((l) => /^gender\s*: epoch/.test(l)).length, 4);
    assert.ok(Math.max(...fitted.history.gender.valAccuracy) > 0.9, `gender ${fitted.history.gender.valAccuracy}`);
    assert.ok(Math.max(...fitted.history.ethnicity.valAccuracy) > 0.6, `ethnicity ${fitted.history.ethnicity.valAccuracy}`);
    assert.equal(fitted.history.age.valMae?.length, 4);
    // One epoch for all tasks: the one with the best mean validation accuracy (the first, on a tie).
    const scores = fitted.history.age.valAccuracy.map((_, e) => validationScore({ age: { valAccuracy: fitted.history.age.valAccuracy[e] }, ethnicity: { valAccuracy: fitted.history.ethnicity.valAccuracy[e] }, gender: { valAccuracy: fitted.history.gender.valAccuracy[e] } }));
    assert.equal(fitted.bestEpoch, scores.indexOf(Math.max(...scores)) + 1);
    assert.ok(lines.includes(`multitask: keeping epoch ${fitted.bestEpoch}, the best on the validation split`));
    // So the three models' trunks hold the same weights, which lets a runtime compute the trunk once.
    const trunk = (task: Task) => fitted.models[task].layers.filter((l) => !l.name.includes('_logits') && l.trainableWeights.length > 0).flatMap((l) => l.getWeights().map((w) => w.dataSync()));
    for (const task of ['age', 'ethnicity'] as const) assert.deepEqual(trunk(task), trunk('gender'), `${task}'s trunk is gender's`);
    for (const task of TASKS) fitted.models[task].dispose();
    // What stays is the age head's fixed group and years matrices, which the age model calls twice (on the face
    // and on its mirror image) while tfjs counts a layer's uses per call: 2 tensors per network built (4 builds).
    const left = tf.memory().numTensors - before;
    assert.ok(left <= 8, `${left} tensors left after disposing the three models`);
  });

  it('scores the true age group under the group sums of the age distribution', () => {
    // 4 bins in 2 groups ({0, 1} and {2, 3}); face 0 is in group 0, face 1 in group 1
    const logits = tf.tensor2d([[0, Math.log(3), 0, 0], [Math.log(2), 0, Math.log(5), 0]]);
    const groups = tf.tensor2d([[1, 0], [1, 0], [0, 1], [0, 1]]);
    // face 0: group 0 holds (1 + 3) / 6 of the mass; face 1: group 1 holds (5 + 1) / 9
    const expected = -(Math.log(4 / 6) + Math.log(6 / 9)) / 2;
    const loss = ageGroupCrossEntropy(logits, groups, tf.tensor1d([0, 1], 'int32'));
    assert.ok(Math.abs(loss.dataSync()[0] - expected) < 1e-6, `${loss.dataSync()[0]} vs ${expected}`);
    // and it falls as the mass moves into the true group, which is what training follows
    const sharper = ageGroupCrossEntropy(tf.tensor2d([[0, Math.log(30), 0, 0], [0, 0, Math.log(50), 0]]), groups, tf.tensor1d([0, 1], 'int32'));
    assert.ok(sharper.dataSync()[0] < loss.dataSync()[0] / 5);
    tf.dispose([logits, groups, loss, sharper]);
  });

  it('fails with the replica\'s reason instead of waiting forever when a replica cannot start', { timeout: 120_000 }, async () => {
    await assert.rejects(fitMultitask({ ...fitArgs(patternDataset(400), 2, () => {}), backend: 'node' }, SMALL), /training replica \d failed: .*tfjs-node/);
  });

  it('writes one task folder per task from a single training, with the kept epoch recorded', { timeout: 300_000 }, async () => {
    const runDir = join(dir, 'run');
    const metrics = await trainTogether({ preset: 'multitask', dataset: patternDataset(400), runDir, epochs: 2, seed: 5, ageScheme: 'coursework', backend: 'wasm', replicas: 1, log: () => {} });
    assert.deepEqual(metrics.map((m) => m.task), [...TASKS]);
    for (const task of TASKS) {
      const written = JSON.parse(await readFile(join(runDir, task, 'metrics.json'), 'utf8'));
      assert.equal(written.preset, 'multitask');
      assert.equal(written.testCount, 80);
      assert.ok(written.keptEpoch >= 1 && written.keptEpoch <= 2);
      const info = JSON.parse(await readFile(join(runDir, task, 'training-info.json'), 'utf8'));
      assert.deepEqual(info.input, SPEC);
    }
    assert.ok(metrics[0].years !== undefined && metrics[0].years.mae > 0);
    // Ethnicity and gender end with a temperature fitted on the validation split (32 faces: 10% of the 320 not
    // held out for testing); age does not.
    for (const m of metrics) {
      if (m.task === 'age') assert.equal(m.calibration, undefined);
      else assert.ok(m.calibration !== undefined && m.calibration.faces === 32 && m.calibration.temperature > 0 && m.calibration.lossAfter <= m.calibration.lossBefore + 1e-12, `${m.task}: ${JSON.stringify(m.calibration)}`);
      const saved = await loadModel(join(runDir, m.task, 'model'));
      assert.equal(saved.layers.some((l) => l instanceof Temperature), m.task !== 'age', m.task);
      saved.dispose();
    }
    // Every saved model loads back for the exporter, the age model's two fixed matrices included (their weights
    // were once both named `kernel`, which tfjs saves but cannot load).
    for (const task of TASKS) {
      const exported = await exportModelFolderInMemory({ modelDir: join(runDir, task, 'model') });
      assert.ok(exported.bytes.length > 0, task);
    }
    // The saved models hold the mirror pass; the exporter can drop it, keeping the test split but not the figures
    // that training measured with both passes.
    const both = await exportModelFolderInMemory({ modelDir: join(runDir, 'gender', 'model') });
    const onePass = await exportModelFolderInMemory({ modelDir: join(runDir, 'gender', 'model'), testTimeFlip: false });
    assert.ok(both.model.layers.some((l) => l instanceof HorizontalFlip));
    assert.ok(!onePass.model.layers.some((l) => l instanceof HorizontalFlip));
    assert.ok(onePass.model.layers.some((l) => l instanceof Temperature), 'the one-pass model keeps the temperature');
    assert.ok(onePass.bytes.length < both.bytes.length);
    const kept = onePass.metadata.metrics as Record<string, unknown>;
    assert.deepEqual(kept.split, (both.metadata.metrics as Record<string, unknown>).split);
    assert.equal(kept.testAccuracy, undefined);
    assert.equal(typeof (both.metadata.metrics as Record<string, unknown>).testAccuracy, 'number');
  });
});

describe('train CLI with the multitask preset', () => {
  it('is the default preset, and asks for --task all since it trains the three tasks together', () => {
    assert.equal(parseTrainArgs(['--task', 'all', '--data', '/faces']).preset, 'multitask');
    assert.throws(() => parseTrainArgs(['--task', 'age', '--data', '/faces']), /use --task all \(or --preset residual for one task\)/);
    assert.equal(parseTrainArgs(['--task', 'age', '--preset', 'residual', '--data', '/faces']).task, 'age');
  });

  it('refuses a Kaggle CSV, which holds 48x48 grayscale faces, and names the presets that take it', () => {
    assert.throws(() => parseTrainArgs(['--task', 'all', '--data', '/data/age_gender.csv']), /64x64x3 faces.*--preset residual or --preset seed from the CSV/);
    assert.equal(parseTrainArgs(['--task', 'all', '--preset', 'seed', '--data', '/data/age_gender.csv']).preset, 'seed');
  });

  it('takes --replicas', () => {
    assert.equal(parseTrainArgs(['--task', 'all', '--data', '/faces', '--replicas', '1']).replicas, 1);
    assert.throws(() => parseTrainArgs(['--task', 'all', '--data', '/faces', '--replicas', '0']), /--replicas/);
  });
});
