import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../node-shared/tfjs/select.ts';
import { exportModelFolderInMemory } from '../export/export-model.ts';
import { CALIBRATED_TASKS, fitTemperature, temperedProbabilities } from '../training/calibrate.ts';
import { calibrateRun } from '../training/cli/calibrate.ts';
import type { Dataset } from '../training/data/dataset.ts';
import { seededRandom } from '../training/data/split.ts';
import { UsageError } from '../node-shared/cli-args.ts';
import { loadModel, saveModel } from '../training/models/io.ts';
import { Temperature, withTemperature } from '../node-shared/tfjs/temperature-layer.ts';
import { trainTogether } from '../training/train-task.ts';
import { patternDataset } from './helpers/pattern-dataset.ts';
import { writeSeedRun } from './helpers/seed-run.ts';

const softmax = (z: number[]): number[] => {
  const top = Math.max(...z);
  const e = z.map((v) => Math.exp(v - top));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
};
const argmax = (row: readonly number[]): number => row.indexOf(Math.max(...row));

/**
 * `count` faces of `classes` classes from a model whose probabilities are softmax(z) while the truth is drawn
 * from softmax(z / trueTemperature): below 1, the model is underconfident, as label smoothing leaves it.
 */
function syntheticFaces(count: number, classes: number, trueTemperature: number, seed: number): { rows: number[][]; truth: number[] } {
  const next = seededRandom(seed);
  const rows: number[][] = [];
  const truth: number[] = [];
  for (let i = 0; i < count; i++) {
    const z = Array.from({ length: classes }, () => 3 * (next() + next() + next() - 1.5));
    rows.push(softmax(z));
    const truly = softmax(z.map((v) => v / trueTemperature));
    let u = next();
    let label = classes - 1;
    for (let c = 0; c < classes; c++) {
      u -= truly[c];
      if (u < 0) {
        label = c;
        break;
      }
    }
    truth.push(label);
  }
  return { rows, truth };
}

describe('Temperature layer', () => {
  before(async () => {
    await selectBackend('cpu', () => {});
  });

  it('computes softmax(log p / T) over the classes, as the reference does, keeping the most likely class', () => {
    const rows = [
      [0.7, 0.2, 0.1],
      [0.34, 0.33, 0.33],
      [1, 0, 0],
    ];
    for (const temperature of [0.5, 1, 2.5]) {
      const out = tf.tidy(() => new Temperature({ temperature }).apply(tf.tensor2d(rows)) as tf.Tensor).arraySync() as number[][];
      const expected = temperedProbabilities(rows, temperature);
      out.forEach((row, i) => {
        row.forEach((v, c) => assert.ok(Math.abs(v - expected[i][c]) < 1e-6, `T ${temperature} row ${i}: ${row} vs ${expected[i]}`));
        assert.equal(argmax(row), argmax(rows[i]));
      });
    }
    // T 1 leaves probabilities as they are; T under 1 sharpens, over 1 softens.
    assert.ok(Math.abs(temperedProbabilities(rows, 1)[0][0] - 0.7) < 1e-12);
    assert.ok(temperedProbabilities(rows, 0.5)[0][0] > 0.7 && temperedProbabilities(rows, 2)[0][0] < 0.7);
  });

  it('rescales one sigmoid unit as the two-class softmax of (1 - p, p), finite at 0 and 1', () => {
    const p = [0.9, 0.5, 0.2, 0, 1];
    const out = tf.tidy(() => new Temperature({ temperature: 0.6 }).apply(tf.tensor2d(p, [5, 1])) as tf.Tensor).dataSync();
    const expected = temperedProbabilities(p.map((q) => [1 - q, q]), 0.6).map((row) => row[1]);
    p.forEach((_, i) => assert.ok(Math.abs(out[i] - expected[i]) < 1e-6, `p ${p[i]}: ${out[i]} vs ${expected[i]}`));
    assert.ok(Math.abs(out[1] - 0.5) < 1e-7, 'p 0.5 stays 0.5');
    assert.ok(out[0] > 0.9 && out[2] < 0.2, 'T 0.6 sharpens');
    assert.ok(out[3] >= 0 && out[3] < 1e-15, `p 0: ${out[3]}`);
    assert.ok(out[4] <= 1 && out[4] > 1 - 1e-7, `p 1: ${out[4]}`);
  });

  it('refuses a temperature that is not a positive number', () => {
    for (const temperature of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
      assert.throws(() => new Temperature({ temperature }), /temperature must be a positive number/);
    }
  });

  describe('withTemperature and saved models', () => {
    let dir: string;
    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'temperature-'));
    });
    after(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('rescales the outputs it is given a temperature for, leaves the others, and survives a save and load', async () => {
      const input = tf.input({ shape: [4] });
      const classes = tf.layers.dense({ units: 3, activation: 'softmax' }).apply(input) as tf.SymbolicTensor;
      const other = tf.layers.dense({ units: 2 }).apply(input) as tf.SymbolicTensor;
      const model = tf.model({ inputs: input, outputs: [classes, other] });
      const calibrated = withTemperature(model, [0.5, undefined]);
      const x = tf.tensor2d([[0.1, -0.4, 0.8, 0.3]]);
      const [p, q] = model.predict(x) as tf.Tensor[];
      const [pc, qc] = calibrated.predict(x) as tf.Tensor[];
      const expected = temperedProbabilities(p.arraySync() as number[][], 0.5)[0];
      (pc.arraySync() as number[][])[0].forEach((v, c) => assert.ok(Math.abs(v - expected[c]) < 1e-6));
      assert.deepEqual(qc.arraySync(), q.arraySync());
      await saveModel(calibrated, join(dir, 'model'));
      const loaded = await loadModel(join(dir, 'model'));
      const [pl] = loaded.predict(x) as tf.Tensor[];
      assert.deepEqual(pl.arraySync(), pc.arraySync());
      assert.equal((loaded.layers.find((l) => l instanceof Temperature) as Temperature).temperature, 0.5);
      assert.throws(() => withTemperature(loaded, [0.7, undefined]), /already has a temperature \(0\.5\)/);
      assert.throws(() => withTemperature(model, [0.7]), /1 temperatures for the 2 outputs/);
      tf.dispose([x, p, q, pc, qc, pl]);
      loaded.dispose();
      // the calibrated model holds the same layers: disposing it frees the original's weights too
      const tensors = tf.memory().numTensors;
      calibrated.dispose();
      assert.ok(tf.memory().numTensors < tensors);
    });
  });
});

describe('fitTemperature', () => {
  it('recovers the temperature an underconfident model needs, and lowers the loss and the calibration error', () => {
    const { rows, truth } = syntheticFaces(6000, 4, 0.5, 7);
    const fit = fitTemperature(rows, truth);
    assert.ok(Math.abs(fit.temperature - 0.5) < 0.05, `temperature ${fit.temperature}, expected about 0.5`);
    assert.ok(fit.lossAfter < fit.lossBefore, `${fit.lossAfter} < ${fit.lossBefore}`);
    assert.ok(fit.eceAfter < 0.02 && fit.eceBefore > 0.05, `calibration error ${fit.eceBefore} -> ${fit.eceAfter}`);
    assert.equal(fit.faces, 6000);
    assert.equal(fit.temperature, Math.round(fit.temperature * 1000) / 1000, 'kept to 3 decimals');
    // the most likely class, so accuracy, never changes
    const tempered = temperedProbabilities(rows, fit.temperature);
    assert.ok(rows.every((row, i) => argmax(row) === argmax(tempered[i])));
  });

  it('leaves a calibrated model near 1, and softens an overconfident one', () => {
    const calibrated = syntheticFaces(6000, 3, 1, 11);
    assert.ok(Math.abs(fitTemperature(calibrated.rows, calibrated.truth).temperature - 1) < 0.1);
    const overconfident = syntheticFaces(6000, 3, 2, 13);
    assert.ok(fitTemperature(overconfident.rows, overconfident.truth).temperature > 1.6);
  });

  it('refuses no faces, a label count that does not match, NaN, and a best temperature at the edge of its range', () => {
    assert.throws(() => fitTemperature([], []), /at least one face/);
    assert.throws(() => fitTemperature([[0.5, 0.5]], [0, 1]), /1 rows of probabilities for 2 labels/);
    assert.throws(() => fitTemperature([[0.5, 0.5], [Number.NaN, Number.NaN]], [0, 1]), /face 1's probabilities are \[NaN, NaN\]/);
    // every answer right at 0.7: the loss falls forever as T shrinks
    assert.throws(() => fitTemperature(Array.from({ length: 100 }, () => [0.3, 0.7]), new Array<number>(100).fill(1)), /lies at the edge of 0\.05 to 20/);
  });
});

describe('npm run calibrate', () => {
  let dir: string;
  // Labels the pixels do not fully tell (every fifth face's are shifted), so that no model is sure of everything:
  // a perfectly separable set has no best temperature.
  const dataset = patternDataset(400);
  for (let i = 0; i < dataset.count; i += 5) {
    dataset.genders[i] = 1 - dataset.genders[i];
    dataset.ethnicities[i] = (dataset.ethnicities[i] + 1) % 3;
  }
  const load = async (): Promise<Dataset> => dataset;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'calibrate-cli-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** The run as it was before training calibrated it: the temperatures and their records taken out. */
  async function withoutTemperatures(run: string): Promise<void> {
    for (const task of CALIBRATED_TASKS) {
      const model = await loadModel(join(run, task, 'model'));
      const temperature = model.outputs[0].sourceLayer;
      assert.ok(temperature instanceof Temperature, `${task} was calibrated by training`);
      await saveModel(tf.model({ inputs: model.inputs, outputs: temperature.inboundNodes[0].inputTensors[0], name: model.name }), join(run, task, 'model'));
      model.dispose();
      const metrics = JSON.parse(await readFile(join(run, task, 'metrics.json'), 'utf8'));
      delete metrics.calibration;
      metrics.testLoss = 0;
      await writeFile(join(run, task, 'metrics.json'), JSON.stringify(metrics, null, 2) + '\n');
    }
  }

  const snapshot = async (run: string): Promise<string[]> =>
    Promise.all(CALIBRATED_TASKS.flatMap((task) => ['metrics.json', 'model/model.json', 'model/weights.bin'].map((f) => readFile(join(run, task, f), 'base64'))));

  it('fits what training fitted, so that the run exports byte for byte as if training had done it', { timeout: 300_000 }, async () => {
    const trained = join(dir, 'trained');
    await trainTogether({ preset: 'multitask', dataset, runDir: trained, epochs: 1, seed: 5, ageScheme: 'coursework', backend: 'wasm', replicas: 1, log: () => {} });
    const later = join(dir, 'later');
    await cp(trained, later, { recursive: true });
    await withoutTemperatures(later);
    const lines: string[] = [];
    await calibrateRun(later, load, (line) => lines.push(line));
    for (const task of CALIBRATED_TASKS) {
      assert.equal(await readFile(join(later, task, 'metrics.json'), 'utf8'), await readFile(join(trained, task, 'metrics.json'), 'utf8'), `${task}: metrics.json, test cross-entropy and fit included`);
      const [a, b] = await Promise.all([trained, later].map((run) => exportModelFolderInMemory({ modelDir: join(run, task, 'model') })));
      assert.ok(Buffer.from(a.bytes).equals(Buffer.from(b.bytes)), `${task}: the exported files are identical`);
      a.model.dispose();
      b.model.dispose();
      assert.ok(lines.some((l) => l.startsWith(`${task}: probabilities rescaled by temperature `)), lines.join('\n'));
    }
    // A second call has nothing left to do, and changes nothing.
    const before = await snapshot(later);
    lines.length = 0;
    await calibrateRun(later, load, (line) => lines.push(line));
    assert.deepEqual(await snapshot(later), before);
    assert.equal(lines.filter((l) => /already calibrated \(temperature [\d.]+\); left as it is/.test(l)).length, 2, lines.join('\n'));

    // One task that cannot be calibrated: nothing is written, the other task's files included.
    const broken = join(dir, 'broken');
    await cp(trained, broken, { recursive: true });
    await withoutTemperatures(broken);
    const names = JSON.parse(await readFile(join(broken, 'gender', 'test-split.json'), 'utf8')) as string[];
    await writeFile(join(broken, 'gender', 'test-split.json'), JSON.stringify(names.reverse()));
    const untouched = await snapshot(broken);
    await assert.rejects(calibrateRun(broken, load, () => {}), (e: Error) => e instanceof UsageError && /test-split\.json names other faces than the split recovered from its seeds/.test(e.message));
    assert.deepEqual(await snapshot(broken), untouched);
  });

  it('refuses a folder that is not a run, a run of another preset, and a model whose temperature has no record', async () => {
    await assert.rejects(calibrateRun(join(dir, 'nothing'), load, () => {}), (e: Error) => e instanceof UsageError && /holds no training-info\.json: --run takes a multitask run folder/.test(e.message));
    await writeSeedRun(join(dir, 'seed-run'));
    await assert.rejects(calibrateRun(join(dir, 'seed-run'), load, () => {}), (e: Error) => e instanceof UsageError && /"seed" preset; temperatures are fitted for multitask runs only/.test(e.message));
    const halfway = join(dir, 'halfway');
    await cp(join(dir, 'trained'), halfway, { recursive: true });
    const metrics = JSON.parse(await readFile(join(halfway, 'ethnicity', 'metrics.json'), 'utf8'));
    delete metrics.calibration;
    await writeFile(join(halfway, 'ethnicity', 'metrics.json'), JSON.stringify(metrics));
    await assert.rejects(calibrateRun(halfway, load, () => {}), (e: Error) => e instanceof UsageError && /the model has a temperature but metrics\.json records none/.test(e.message));
  });
});
