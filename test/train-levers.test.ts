/**
 * The multitask recipe's levers (training/recipe.ts) without training: the flags that set them and what they
 * refuse, the network a recipe builds, the default recipe being the shipped models' own, and the draws and averages
 * mixup and the EMA make. test/train-resume.test.ts trains with them and resumes exactly.
 */
import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { TASKS, taskLabels, type Task } from '../contract/labels.ts';
import type { InputSpec } from '../contract/preprocess.ts';
import { REPO_ROOT } from '../node-shared/paths.ts';
import { parseTrainArgs, trainInput } from '../training/cli/train.ts';
import { assertSameTeachers, readTeachers, softenedTargets, teacherFiles, teacherTargets, type Teacher } from '../training/distill.ts';
import type { Dataset } from '../training/data/dataset.ts';
import { teacherLosses } from '../training/fit-multitask-worker.ts';
import { patternDataset } from './helpers/pattern-dataset.ts';
import { alignedCropsKey } from '../training/data/aligned-crops.ts';
import { MULTITASK_INPUT, MULTITASK_TRAINING, multitaskConfig } from '../training/fit-multitask.ts';
import { ageTarget, betaDraw, DEFAULT_RECIPE, emaDecayAt, recipeOf, updateAverage } from '../training/recipe.ts';
import { seededRandom } from '../training/data/split.ts';

const BASE = ['--task', 'all', '--data', '/faces'];

describe('recipe flags of npm run train', () => {
  it('gives the default recipe without a lever, and each lever its value', () => {
    assert.deepEqual(parseTrainArgs(BASE).recipe, DEFAULT_RECIPE);
    const recipe = parseTrainArgs([...BASE, '--input-size', '96', '--width-multiplier', '1.5', '--blocks', '2', '--ema', '0.999', '--mixup', '0.2', '--crops', 'aligned']).recipe;
    assert.deepEqual(recipe, { inputSize: 96, widthMultiplier: 1.5, blocksPerStage: 2, ema: 0.999, mixup: 0.2, crops: 'aligned' });
    assert.deepEqual(trainInput('multitask', recipe), { ...MULTITASK_INPUT, height: 96, width: 96 });
  });

  it('refuses values out of range, naming the flag and the range', () => {
    assert.throws(() => parseTrainArgs([...BASE, '--ema', '1']), /--ema must be a decay above 0 and below 1, e.g. 0.999; got "1"/);
    assert.throws(() => parseTrainArgs([...BASE, '--ema', '0']), /--ema must be a decay above 0/);
    assert.throws(() => parseTrainArgs([...BASE, '--mixup=-1']), /--mixup must be a number above 0/);
    assert.throws(() => parseTrainArgs([...BASE, '--width-multiplier', 'wide']), /--width-multiplier must be a number above 0 and at most 8; got "wide"/);
    assert.throws(() => parseTrainArgs([...BASE, '--input-size', '16']), /--input-size must be a whole number of at least 32; got "16"/);
    assert.throws(() => parseTrainArgs([...BASE, '--input-size', '512']), /--input-size must be at most 224/);
    assert.throws(() => parseTrainArgs([...BASE, '--blocks', '0']), /--blocks must be a whole number of at least 1/);
    assert.throws(() => parseTrainArgs([...BASE, '--crops', 'detected']), /Unsupported --crops "detected"; expected one of: utkface, aligned/);
  });

  it('takes --distill folders (resolved) with the default weight 0.5 and temperature 2, or those given', () => {
    assert.deepEqual(parseTrainArgs([...BASE, '--distill', 'models']).recipe, { ...DEFAULT_RECIPE, distill: { teachers: [resolve('models')], weight: 0.5, temperature: 2 } });
    const distill = parseTrainArgs([...BASE, '--distill', 'models, runs/a/onnx', '--distill-weight', '0.7', '--distill-temperature', '4']).recipe.distill;
    assert.deepEqual(distill, { teachers: [resolve('models'), resolve('runs/a/onnx')], weight: 0.7, temperature: 4 });
    assert.equal('distill' in parseTrainArgs(BASE).recipe, false, 'a recipe without distillation is written as before it existed');
  });

  it('refuses distillation options without teachers, and weights and temperatures out of range', () => {
    assert.throws(() => parseTrainArgs([...BASE, '--distill-weight', '0.3']), /--distill-weight: options of distillation, which needs its teachers: add --distill DIR\[,DIR...\]/);
    assert.throws(() => parseTrainArgs([...BASE, '--distill', ',']), /--distill takes one or more model folders, separated by commas; got ","/);
    assert.throws(() => parseTrainArgs([...BASE, '--distill', 'models', '--distill-weight', '0']), /--distill-weight must be a number above 0 and at most 1; got "0"/);
    assert.throws(() => parseTrainArgs([...BASE, '--distill', 'models', '--distill-weight', '1.5']), /--distill-weight must be a number above 0 and at most 1/);
    assert.throws(() => parseTrainArgs([...BASE, '--distill', 'models', '--distill-temperature=-2']), /--distill-temperature must be a number above 0 and at most 20/);
    assert.throws(() => parseTrainArgs(['--task', 'age', '--preset', 'seed', '--data', '/faces', '--distill', 'models']), /--distill: the multitask preset's levers; the seed preset takes none/);
  });

  it('refuses the levers with the presets that take none', () => {
    assert.throws(() => parseTrainArgs(['--task', 'age', '--preset', 'residual', '--data', '/faces', '--ema', '0.99', '--crops', 'aligned']), /--ema, --crops: the multitask preset's levers; the residual preset takes none/);
  });
});

describe('recipes', () => {
  it('builds the shipped network from the default recipe, and a scaled one from another', () => {
    assert.deepEqual(multitaskConfig(DEFAULT_RECIPE), MULTITASK_TRAINING);
    const wide = multitaskConfig({ ...DEFAULT_RECIPE, widthMultiplier: 1.5, blocksPerStage: 2, inputSize: 96 });
    assert.deepEqual(wide.architecture.widths, [48, 96, 192]);
    assert.equal(wide.architecture.stemWidth, 24);
    assert.equal(wide.architecture.blocksPerStage, 2);
    assert.equal(wide.architecture.input.height, 96);
  });

  it('reads a checkpoint without a recipe (written before recipes were recorded) as the default', () => {
    assert.deepEqual(recipeOf(undefined), DEFAULT_RECIPE);
    assert.deepEqual(recipeOf({ ...DEFAULT_RECIPE, ema: 0.9 }), { ...DEFAULT_RECIPE, ema: 0.9 });
  });

  it('draws mixup weights from Beta(alpha, alpha): inside (0, 1), mean 1/2, spread as the distribution says', () => {
    for (const alpha of [0.2, 1, 4]) {
      const random = seededRandom(7);
      const draws = Array.from({ length: 20_000 }, () => betaDraw(alpha, random));
      assert.ok(draws.every((w) => w >= 0 && w <= 1), `alpha ${alpha}: a draw outside [0, 1]`);
      const mean = draws.reduce((a, b) => a + b, 0) / draws.length;
      const variance = draws.reduce((a, b) => a + (b - mean) ** 2, 0) / draws.length;
      assert.ok(Math.abs(mean - 0.5) < 0.01, `alpha ${alpha}: mean ${mean}`);
      // Beta(a, a) has variance 1 / (4 (2a + 1))
      const expected = 1 / (4 * (2 * alpha + 1));
      assert.ok(Math.abs(variance - expected) < 0.05 * expected, `alpha ${alpha}: variance ${variance}, expected ${expected}`);
    }
  });

  it('warms the EMA decay up from 0.1 to the asked decay, and moves the average towards the weights', () => {
    assert.equal(emaDecayAt(0.999, 0), 0.1);
    assert.equal(emaDecayAt(0.999, 1e6), 0.999);
    const average = Float32Array.of(0, 10);
    updateAverage(average, [1, 0], 0.75);
    assert.deepEqual(Array.from(average), [0.25, 7.5]);
  });

  it('keys aligned crops on the detector file: another detector makes the cache stale', async () => {
    const one = await alignedCropsKey({ sha256: 'a'.repeat(64) });
    assert.equal(await alignedCropsKey({ sha256: 'a'.repeat(64) }), one);
    assert.notEqual(await alignedCropsKey({ sha256: 'b'.repeat(64) }), one);
  });
});

const LABELS = Object.fromEntries(TASKS.map((task) => [task, taskLabels(task)])) as Record<Task, string[]>;
const SHIPPED = join(REPO_ROOT, 'models');

describe('distillation teachers', () => {
  let root = '';
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'distill-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('refuses a folder without a manifest, or whose manifest lacks a task, naming the path', async () => {
    await assert.rejects(readTeachers([join(root, 'absent')], LABELS), /--distill .*absent does not exist; a teacher is a folder of exported models with their manifest/);
    await assert.rejects(readTeachers([root], LABELS), new RegExp(`--distill ${root} holds no manifest.json; a teacher is a folder of exported models`));
    const partial = join(root, 'partial');
    await cp(SHIPPED, partial, { recursive: true });
    const manifest = JSON.parse(await readFile(join(partial, 'manifest.json'), 'utf8'));
    manifest.models = manifest.models.filter((entry: { task?: string }) => entry.task !== 'gender');
    await writeFile(join(partial, 'manifest.json'), JSON.stringify(manifest));
    await assert.rejects(readTeachers([SHIPPED, partial], LABELS), new RegExp(`--distill ${partial}: ${partial}/manifest.json lists no gender model; a teacher answers every task`));
    await assert.rejects(readTeachers([SHIPPED], { ...LABELS, age: taskLabels('age', 'decades') }), /models\/age.onnx answers the labels 1-10, 11-20, 21-40.*this run trains 1-10, 11-20, 21-30/);
  });

  it('refuses a resume whose teachers\' files changed, naming the file', async () => {
    const files = teacherFiles(await readTeachers([SHIPPED], LABELS));
    assert.deepEqual(files.map((f) => f.path), TASKS.map((task) => join(SHIPPED, `${task}.onnx`)));
    assert.doesNotThrow(() => assertSameTeachers(files, files, 'runs/r'));
    const recorded = files.map((f, i) => (i === 1 ? { ...f, sha256: 'f'.repeat(64) } : f));
    assert.throws(() => assertSameTeachers(recorded, files, 'runs/r'), /the run in runs\/r was distilled from other teachers: .*models\/ethnicity.onnx has sha256 [0-9a-f]{12}\.\.\., not ffffffffffff\.\.\. as when the run started/);
    assert.throws(() => assertSameTeachers(undefined, files, 'runs/r'), /models\/age.onnx has sha256 .*and was not one of them/);
  });

  it('averages the teachers\' answers for the faces asked, each at its own input size, once, then from the cache', async () => {
    const faces = patternDataset(12);
    const asked = Int32Array.of(0, 3, 4, 11);
    const teachers = await readTeachers([SHIPPED], LABELS);
    const sizes: InputSpec[] = [];
    const datasetAt = async (spec: InputSpec): Promise<Dataset> => {
      sizes.push(spec);
      return resized(faces, spec);
    };
    const lines: string[] = [];
    const options = { datasetAt, log: (line: string) => lines.push(line), cacheDir: join(root, 'cache') };
    const once = await teacherTargets(teachers, faces, asked, options);
    assert.deepEqual(sizes.map((s) => s.height), [64], 'the shipped models read 64x64 faces: the 16x16 ones are loaded again at their size');
    for (let face = 0; face < faces.count; face++) {
      const row = Array.from(once.ageGroups.subarray(face * 6, face * 6 + 6));
      if (asked.includes(face)) {
        assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-4, `face ${face}: age groups sum to 1`);
        assert.ok(once.ageYears[face] >= 1 && once.ageYears[face] <= 116 && once.gender[face] > 0 && once.gender[face] < 1, `face ${face}`);
      } else assert.ok(row.every(Number.isNaN) && Number.isNaN(once.gender[face]), `face ${face} was not asked for`);
    }
    assert.match(lines.join('\n'), /distill: the teacher pass took [\d.]+ s \(1 teacher, 4 faces\); cached in /);
    const twice = await teacherTargets([...teachers, ...teachers], faces, asked, options);
    for (const key of ['ageGroups', 'ageYears', 'ethnicity', 'gender'] as const) {
      Array.from(once[key]).forEach((v, i) => assert.ok(Number.isNaN(v) ? Number.isNaN(twice[key][i]) : Math.abs(v - twice[key][i]) < 1e-6, `${key}[${i}]: the mean of a teacher and itself is its answer`));
    }
    const cached = await teacherTargets(teachers, faces, asked, options);
    assert.match(lines.at(-1)!, /distill: the 1 teacher's answers for 4 faces read from .*cache/);
    assert.deepEqual(cached, once);
  });

  it('softens class probabilities at the temperature, p^(1/T) normalized, and keeps the mean age', () => {
    const targets = { ageGroups: Float32Array.of(0.8, 0.2, Number.NaN, Number.NaN), ageYears: Float32Array.of(30, Number.NaN), ethnicity: Float32Array.of(0.9, 0.1, Number.NaN, Number.NaN), gender: Float32Array.of(0.9, Number.NaN) };
    const soft = softenedTargets(targets, 2);
    // sqrt(0.8) / (sqrt(0.8) + sqrt(0.2)) = 2/3
    assert.ok(Math.abs(soft.ageGroups[0] - 2 / 3) < 1e-6 && Math.abs(soft.ageGroups[1] - 1 / 3) < 1e-6, String(soft.ageGroups));
    assert.ok(Math.abs(soft.gender[0] - 0.75) < 1e-6, String(soft.gender));
    assert.equal(soft.ageYears[0], 30);
    assert.ok(Number.isNaN(soft.ethnicity[2]) && Number.isNaN(soft.gender[1]), 'faces without an answer stay without one');
    assert.ok(Math.abs(softenedTargets(targets, 1).ethnicity[0] - 0.9) < 1e-6, 'T = 1 leaves them as they are');
  });

  it('gives the student no gradient where it already answers as the softened teachers, and the T^2-scaled one elsewhere', () => {
    const temperature = 3;
    const groupMatrix = tf.tensor2d([[1, 0], [1, 0], [0, 1]]);
    const ageLogits = tf.variable(tf.tensor2d([[0.2, -1, 0.5]]));
    const ethnicityLogits = tf.variable(tf.tensor2d([[1.5, -0.5, 0]]));
    const genderLogits = tf.variable(tf.tensor2d([[0.8]]));
    const softenedOf = (logits: tf.Tensor) => tf.softmax(logits.div(temperature)) as tf.Tensor2D;
    const groups = tf.softmax(ageLogits).matMul(groupMatrix);
    const targets = {
      ages: tf.softmax(ageLogits) as tf.Tensor2D,
      ageGroups: softenedOf(tf.log(groups)),
      ethnicity: softenedOf(ethnicityLogits),
      gender: tf.sigmoid(genderLogits.div(temperature)) as tf.Tensor2D,
    };
    const logits = [ageLogits, ethnicityLogits, genderLogits];
    const options = { temperature, ageGroupLoss: 1 };
    TASKS.forEach((task, t) => {
      const { grads } = tf.variableGrads(() => teacherLosses(logits, targets, tf.ones([1]) as tf.Tensor1D, groupMatrix, options)[t], [logits[t]] as tf.Variable[]);
      const gradient = Array.from(Object.values(grads)[0].dataSync());
      assert.ok(gradient.every((g) => Math.abs(g) < 1e-5), `${task}: gradient ${gradient}`);
    });
    // Against a one-hot teacher, d/dz of T^2 x CE(onehot, softmax(z / T)) is T x (softmax(z / T) - onehot).
    const onehot = { ...targets, ethnicity: tf.tensor2d([[0, 1, 0]]) };
    const { grads } = tf.variableGrads(() => teacherLosses(logits, onehot, tf.ones([1]) as tf.Tensor1D, groupMatrix, options)[1], [ethnicityLogits]);
    const expected = Array.from(softenedOf(ethnicityLogits).dataSync(), (p, c) => temperature * (p - (c === 1 ? 1 : 0)));
    Array.from(Object.values(grads)[0].dataSync()).forEach((g, c) => assert.ok(Math.abs(g - expected[c]) < 1e-5, `class ${c}: ${g}, expected ${expected[c]}`));
  });

  it('centres the age target on the teachers\' mean age, between whole years too', () => {
    const row = ageTarget(29.5, 2.5, new Float32Array(116));
    const mean = row.reduce((sum, p, bin) => sum + p * bin, 0);
    assert.ok(Math.abs(mean - 29.5) < 1e-4, `mean bin ${mean}`);
    assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-5);
  });
});

/** `faces` at another size (nearest pixel), the same faces in the same order, as loading them at that size gives. */
function resized(faces: Dataset, spec: InputSpec): Dataset {
  const from = faces.spec;
  const pixels = new Uint8Array(faces.count * spec.height * spec.width * spec.channels);
  for (let face = 0; face < faces.count; face++) {
    for (let y = 0; y < spec.height; y++) {
      for (let x = 0; x < spec.width; x++) {
        const sy = Math.floor((y * from.height) / spec.height);
        const sx = Math.floor((x * from.width) / spec.width);
        for (let c = 0; c < spec.channels; c++) pixels[((face * spec.height + y) * spec.width + x) * spec.channels + c] = faces.pixels[((face * from.height + sy) * from.width + sx) * from.channels + c];
      }
    }
  }
  return { ...faces, spec, pixels };
}
