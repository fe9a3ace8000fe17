/**
 * What `npm run train` and `npm run evaluate` print: a short run prints its start, a line per epoch and a summary,
 * --verbose adds the tables, and evaluate ends with one line per task. Each program runs as a user runs it, on
 * generated faces, in a temporary working folder so that its dataset cache stays there.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Jimp } from 'jimp';
import { REPO_ROOT } from '../node-shared/paths.ts';

const TSX = import.meta.resolve('tsx');
/** Enough faces for the multitask preset's batch of 128 after the test and validation splits. */
const FACE_COUNT = 260;
/** The smallest input the multitask preset takes, so that an epoch is quick. */
const INPUT_SIZE = '32';

let root = '';
let data = '';

function cli(script: string, ...args: string[]) {
  return spawnSync(process.execPath, ['--import', TSX, join(REPO_ROOT, 'training', script), ...args], { cwd: root, encoding: 'utf8' });
}

/** Non-empty lines of a run's stdout and stderr together. */
function linesOf(result: { stdout: string; stderr: string }): string[] {
  return (result.stdout + result.stderr).split('\n').filter((line) => line.trim() !== '');
}

/** A UTKFace-style folder of generated 40x40 JPEG faces whose names spread over every age group, gender and ethnicity. */
async function faceFolder(): Promise<string> {
  const folder = join(root, 'faces');
  await mkdir(folder, { recursive: true });
  for (let i = 0; i < FACE_COUNT; i++) {
    const image = new Jimp({ width: 40, height: 40, color: 0x000000ff });
    image.scan((x, y, at) => {
      image.bitmap.data[at] = (x * 5 + i * 13) & 255;
      image.bitmap.data[at + 1] = (y * 5 + i * 7) & 255;
      image.bitmap.data[at + 2] = ((x + y) * 3 + (i % 2) * 120) & 255;
    });
    const jpeg = await image.getBuffer('image/jpeg', { quality: 90 });
    const age = 1 + ((i * 37) % 95);
    await writeFile(join(folder, `${age}_${i % 2}_${i % 5}_2017011617452${String(i).padStart(4, '0')}.jpg.chip.jpg`), new Uint8Array(jpeg));
  }
  return folder;
}

function train(out: string, ...extra: string[]) {
  return cli('cli/train.ts', '--task', 'all', '--data', data, '--epochs', '1', '--input-size', INPUT_SIZE, '--backend', 'wasm', '--out', out, ...extra);
}

describe('what a training run and an evaluation print', () => {
  let quietRun = '';
  let quiet: ReturnType<typeof cli>;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'train-output-'));
    data = await faceFolder();
    quietRun = join(root, 'quiet');
    quiet = train(quietRun);
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('prints a line per epoch and a summary without --verbose, and writes the tables to evaluation.txt', async () => {
    assert.equal(quiet.status, 0, quiet.stdout + quiet.stderr);
    const lines = linesOf(quiet);
    assert.ok(lines.length < 40, `${lines.length} lines:\n${lines.join('\n')}`);
    assert.doesNotMatch(quiet.stdout, /Confusion matrix|precision|Accuracy by subgroup|Calibration/);
    assert.equal(lines.filter((l) => /^multitask: epoch 1\/1 done, validation: age [\d.]+% \(MAE [\d.]+ years\), ethnicity [\d.]+%, gender [\d.]+%, score /.test(l)).length, 1, quiet.stdout);
    assert.equal(lines.filter((l) => /^(age|ethnicity|gender)\s*: epoch/.test(l)).length, 0, 'no per-task epoch lines');
    const tail = quiet.stdout.trimEnd().split('\n').slice(-5);
    assert.match(tail[0], /^age: +[\d.]+% accuracy \(age group\), [\d.]+ years MAE \(\d+ test faces\)$/);
    assert.match(tail[1], /^ethnicity: [\d.]+% accuracy \(\d+ test faces\)$/);
    assert.match(tail[2], /^gender: +[\d.]+% accuracy \(\d+ test faces\)$/);
    assert.match(tail[3], /^all: trained 3 models as one network in .*; kept epoch 1 of 1; run folder quiet$/);
    assert.match(tail[4], /evaluation\.txt \(the tables, which --verbose prints\)/);
    for (const task of ['age', 'ethnicity', 'gender']) {
      assert.match(await readFile(join(quietRun, task, 'evaluation.txt'), 'utf8'), new RegExp(`^${task}: accuracy [\\d.]+% on \\d+ faces\\n[\\s\\S]*Confusion matrix`));
    }
  });

  it('prints the tables and each task\'s epoch line with --verbose', () => {
    const verbose = train(join(root, 'verbose'), '--verbose');
    assert.equal(verbose.status, 0, verbose.stdout + verbose.stderr);
    assert.equal(verbose.stdout.match(/^Confusion matrix \(rows: true, columns: predicted\)$/gm)?.length, 3, verbose.stdout);
    assert.match(verbose.stdout, /^age {6}: epoch 1\/1 /m);
    assert.ok(linesOf(verbose).length > linesOf(quiet).length + 60);
  });

  it('ends an evaluation with one summary line per task, each report headed once by its model', () => {
    const result = cli('cli/evaluate.ts', '--model', quietRun, '--data', data);
    assert.equal(result.status, 0, result.stdout + result.stderr);
    assert.doesNotMatch(result.stdout, /^(\w+): \1:/m, 'no doubled prefix');
    assert.match(result.stdout, /^age: accuracy [\d.]+% on \d+ faces$/m);
    const tail = result.stdout.trimEnd().split('\n').slice(-3);
    assert.match(tail[0], /^age: +[\d.]+% accuracy \(age group\), [\d.]+ years MAE \(\d+ faces\)$/);
    assert.match(tail[1], /^ethnicity: [\d.]+% accuracy \(\d+ faces\)$/);
    assert.match(tail[2], /^gender: +[\d.]+% accuracy \(\d+ faces\)$/);
  });
});
