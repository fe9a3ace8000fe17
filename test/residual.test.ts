import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { ageGroupIndex, MIN_AGE, taskLabels } from '../contract/labels.ts';
import { scaleBytes, SEED_INPUT } from '../contract/preprocess.ts';
import { selectBackend } from '../node-shared/tfjs/select.ts';
import { augmentFace, drawTransform, NO_AUGMENTATION } from '../training/data/augment.ts';
import type { Dataset } from '../training/data/dataset.ts';
import { seededRandom } from '../training/data/split.ts';
import { taskTargets } from '../training/evaluate.ts';
import { fitResidual, learningRateAt, RESIDUAL_TRAINING } from '../training/fit-residual.ts';
import { AGE_BINS, buildResidualModels } from '../training/models/residual.ts';

const SPEC = { height: 6, width: 8, channels: 1 as const, scaling: 'unit' as const };
const face = Uint8Array.from({ length: 48 }, (_, i) => (i * 37) % 256);

describe('augmentation', () => {
  it('is the plain scaled face under the identity transform', () => {
    const out = new Float32Array(48);
    augmentFace(face, SPEC, drawTransform(NO_AUGMENTATION, seededRandom(1)), out);
    assert.deepEqual(Array.from(out), Array.from(scaleBytes(face, SPEC)));
  });

  it('mirrors each row under a flip', () => {
    const out = new Float32Array(48);
    augmentFace(face, SPEC, { ...drawTransform(NO_AUGMENTATION, seededRandom(1)), flip: true }, out);
    for (let y = 0; y < 6; y++) for (let x = 0; x < 8; x++) assert.equal(out[y * 8 + x], Math.fround(face[y * 8 + (7 - x)] / 255));
  });

  it('draws the same transforms from the same seed, within the configured ranges, and stays in [0, 1]', () => {
    const a = Array.from({ length: 50 }, (_, i) => drawTransform(RESIDUAL_TRAINING.augment, seededRandom(i)));
    const b = Array.from({ length: 50 }, (_, i) => drawTransform(RESIDUAL_TRAINING.augment, seededRandom(i)));
    assert.deepEqual(a, b);
    for (const t of a) {
      assert.ok(Math.abs(t.scale - 1) <= RESIDUAL_TRAINING.augment.scale);
      assert.ok(Math.abs(t.rotation) <= (RESIDUAL_TRAINING.augment.rotationDegrees * Math.PI) / 180);
      const out = new Float32Array(48);
      augmentFace(face, SPEC, t, out);
      assert.ok(out.every((v) => v >= 0 && v <= 1));
    }
  });
});

describe('learning-rate schedule', () => {
  const config = { learningRate: 0.1, warmupEpochs: 1, epochs: 10 };
  it('warms up linearly, peaks after warm-up and decays to zero along a cosine', () => {
    assert.ok(learningRateAt(0, config) < 0.001);
    assert.ok(Math.abs(learningRateAt(0.5, config) - 0.05) < 1e-3);
    assert.equal(learningRateAt(1, config), 0.1);
    assert.ok(Math.abs(learningRateAt(5.5, config) - 0.05) < 1e-9);
    assert.ok(learningRateAt(10, config) < 1e-12);
    for (let e = 1; e < 10; e += 0.5) assert.ok(learningRateAt(e + 0.5, config) <= learningRateAt(e, config));
  });
});

describe('residual networks', () => {
  before(async () => {
    await selectBackend('wasm', () => {});
  });

  it('derives the age groups and years from one distribution over ages, so they always agree', () => {
    const labels = taskLabels('age');
    const models = buildResidualModels('age', labels, { input: SEED_INPUT, widths: [4, 8], blocksPerStage: 1, dropout: 0 }, 'coursework', 3);
    const x = tf.randomUniform([3, 48, 48, 1], 0, 1, 'float32', 5);
    const logits = models.train.predict(x) as tf.Tensor;
    const [groups, years] = models.inference.predict(x) as tf.Tensor[];
    assert.deepEqual(logits.shape, [3, AGE_BINS]);
    assert.deepEqual(groups.shape, [3, 6]);
    assert.deepEqual(years.shape, [3, 1]);
    const distribution = tf.softmax(logits).arraySync() as number[][];
    const groupRows = groups.arraySync() as number[][];
    const yearRows = years.arraySync() as number[][];
    distribution.forEach((row, n) => {
      const expectedGroups = new Array(6).fill(0);
      let expectedYears = 0;
      row.forEach((p, bin) => {
        expectedGroups[ageGroupIndex(MIN_AGE + bin)] += p;
        expectedYears += p * (MIN_AGE + bin);
      });
      expectedGroups.forEach((p, g) => assert.ok(Math.abs(p - groupRows[n][g]) < 1e-5));
      assert.ok(Math.abs(expectedYears - yearRows[n][0]) < 1e-3);
    });
    assert.deepEqual(models.outputs.map((o) => o.kind), ['probabilities', 'years']);
    tf.dispose([x, logits, groups, years]);
    models.inference.dispose();
  });

  it('learns a separable gender pattern, keeps the best validation epoch and leaks no tensors', async () => {
    const count = 320;
    const size = 48 * 48;
    const pixels = new Uint8Array(count * size);
    const genders = Uint8Array.from({ length: count }, (_, i) => i % 2);
    for (let i = 0; i < count; i++) for (let p = 0; p < size; p++) pixels[i * size + p] = (genders[i] ? 180 : 50) + ((i * 13 + p * 7) % 30);
    const dataset: Dataset = {
      spec: SEED_INPUT,
      count,
      pixels,
      ages: Uint8Array.from({ length: count }, (_, i) => 1 + (i % 90)),
      genders,
      ethnicities: Uint8Array.from({ length: count }, (_, i) => i % 5),
      names: Array.from({ length: count }, (_, i) => `${i}.jpg`),
      skipped: { count: 0, byReason: {}, examples: [] },
    };
    const before = tf.memory().numTensors;
    const lines: string[] = [];
    const train = Int32Array.from({ length: 256 }, (_, i) => i);
    const test = Int32Array.from({ length: 64 }, (_, i) => 256 + i);
    const config = { ...RESIDUAL_TRAINING, architecture: { ...RESIDUAL_TRAINING.architecture, widths: [4, 8] }, batchSize: 32, epochs: 4, patience: 10 };
    const fitted = await fitResidual({ task: 'gender', labels: ['male', 'female'], dataset, targets: taskTargets(dataset, 'gender', 'coursework'), train, test, seed: 1, ageScheme: 'coursework', log: (l) => lines.push(l) }, config);
    assert.equal(fitted.history.epoch.length, 4);
    assert.ok(Math.max(...fitted.history.valAccuracy) > 0.9, `validation accuracy ${fitted.history.valAccuracy}`);
    assert.ok(lines.some((l) => /keeping epoch \d/.test(l)));
    assert.ok(lines[0].includes('64 test faces are held out'));
    fitted.release();
    fitted.model.dispose();
    assert.equal(tf.memory().numTensors, before);
  });
});
