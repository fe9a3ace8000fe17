/**
 * The multitask recipe's levers (training/recipe.ts) without training: the flags that set them and what they
 * refuse, the network a recipe builds, the default recipe being the shipped models' own, and the draws and averages
 * mixup and the EMA make. test/train-resume.test.ts trains with them and resumes exactly.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseTrainArgs, trainInput } from '../training/cli/train.ts';
import { alignedCropsKey } from '../training/data/aligned-crops.ts';
import { MULTITASK_INPUT, MULTITASK_TRAINING, multitaskConfig } from '../training/fit-multitask.ts';
import { betaDraw, DEFAULT_RECIPE, emaDecayAt, recipeOf, updateAverage } from '../training/recipe.ts';
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
