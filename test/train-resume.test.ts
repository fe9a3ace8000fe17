/**
 * Exact resume of the multitask preset through `npm run train`: a run stopped by SIGINT after an epoch and
 * resumed with --resume ends with the same weights, bit for bit, and the same history as a run of the same length
 * that was never stopped; --resume refuses options that differ from the run's. The same holds for a run with every
 * recipe lever (the weights' moving average, mixup, input size, width, depth, aligned crops, distillation from
 * models/), whose state is in the checkpoint too. Each run trains two replicas on generated colour faces, in a temporary working folder so that its
 * dataset cache stays there.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Jimp } from 'jimp';
import { TASKS } from '../contract/labels.ts';
import { REPO_ROOT } from '../node-shared/paths.ts';

const TSX = import.meta.resolve('tsx');
const TRAIN = join(REPO_ROOT, 'training/cli/train.ts');
/** Enough faces for one step of 128 per epoch once the test and validation faces are held out. */
const FACE_COUNT = 220;
const EPOCHS = 4;
/** 128 + SIGINT's number, as a shell reports a process that SIGINT ended. */
const SIGINT_EXIT = 130;
let root = '';
let faces = '';

/** A UTKFace-style folder of generated 64x64 JPEG faces whose brightness gives the gender and dominant channel the ethnicity. */
async function faceFolder(count: number): Promise<string> {
  const folder = join(root, 'faces');
  await mkdir(folder, { recursive: true });
  for (let i = 0; i < count; i++) {
    const gender = i % 2;
    const ethnicity = Math.floor(i / 2) % 5;
    const image = new Jimp({ width: 64, height: 64, color: 0x000000ff });
    image.scan((x, y, at) => {
      for (let channel = 0; channel < 3; channel++) image.bitmap.data[at + channel] = ((gender ? 140 : 40) + (channel === ethnicity % 3 ? 70 : 0) + ((x * 5 + y * 3 + i * 11) % 40)) & 255;
    });
    const jpeg = await image.getBuffer('image/jpeg', { quality: 90 });
    await writeFile(join(folder, `${1 + ((i * 7) % 90)}_${gender}_${ethnicity}_2017011617452${String(i).padStart(4, '0')}.jpg.chip.jpg`), new Uint8Array(jpeg));
  }
  return folder;
}

function train(...args: string[]) {
  return spawnSync(process.execPath, ['--import', TSX, TRAIN, ...args], { cwd: root, encoding: 'utf8' });
}

/** The options both runs share: two replicas, so that every replica's state is saved and restored. */
function runArgs(out: string, extra: string[] = []): string[] {
  return ['--task', 'all', '--data', faces, '--epochs', String(EPOCHS), '--replicas', '2', '--backend', 'wasm', '--seed', '3', '--out', out, ...extra];
}

/** The shipped models, the teachers of the distilled run. */
const TEACHERS = join(REPO_ROOT, 'models');

/**
 * Every lever at once, each set away from its default: an EMA and mixup whose state (the average, the draws) the
 * checkpoint must carry, and a smaller, narrower, deeper network on the detector's crops (generated faces have no
 * face to find, or none it can align, so every one keeps its own crop: the path runs, and the faces stay what the
 * test can check), distilled from the shipped models (which read 64x64 faces: the same crops loaded at their size).
 */
const LEVERS = ['--ema', '0.9', '--mixup', '0.4', '--input-size', '48', '--width-multiplier', '0.75', '--blocks', '2', '--crops', 'aligned', '--distill', TEACHERS, '--distill-weight', '0.6', '--distill-temperature', '3'];

/** Trains `args` straight, resumes `stopped` (stopped earlier with the same args), and compares their models and histories. */
function assertResumesExactly(straight: string, stopped: string, args: string[]): Promise<void> {
  const whole = train(...args);
  assert.equal(whole.status, 0, whole.stdout + whole.stderr);
  const resumed = train('--resume', stopped);
  assert.equal(resumed.status, 0, resumed.stdout + resumed.stderr);
  assert.match(resumed.stdout, /multitask: resuming after epoch \d of 4/);
  return (async () => {
    for (const task of TASKS) {
      const [want, got] = await Promise.all([straight, stopped].map((run) => readFile(join(run, task, 'model', 'weights.bin'))));
      assert.ok(want.equals(got), `${task}: weights.bin differs between the straight and the resumed run`);
      assert.deepEqual(await historyOf(stopped, task), await historyOf(straight, task), task);
      const [a, b] = await Promise.all([straight, stopped].map(async (run) => JSON.parse(await readFile(join(run, task, 'metrics.json'), 'utf8'))));
      assert.equal(b.keptEpoch, a.keptEpoch, task);
      assert.equal(b.epochs, EPOCHS, task);
      assert.deepEqual(b.recipe, a.recipe, task);
    }
    assert.equal(existsSync(join(stopped, 'checkpoint')), false, 'a finished run keeps no checkpoint');
  })();
}

/** Runs training and sends SIGINT once the first epoch's line is out; resolves with its exit code and output. */
function trainUntilSignal(args: string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string }> {
  return new Promise((resolveRun) => {
    const child = spawn(process.execPath, ['--import', TSX, TRAIN, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    let sent = false;
    const read = (chunk: Buffer) => {
      output += chunk.toString();
      if (!sent && /multitask: epoch 1\/\d+ done/.test(output)) {
        sent = true;
        child.kill('SIGINT');
      }
    };
    child.stdout.on('data', read);
    child.stderr.on('data', read);
    child.on('close', (code, signal) => resolveRun({ code, signal, output }));
  });
}

/** A task's history without the timings, which differ from run to run. */
async function historyOf(run: string, task: string): Promise<Record<string, number[]>> {
  const history = JSON.parse(await readFile(join(run, task, 'history.json'), 'utf8')) as Record<string, number[]>;
  delete history.seconds;
  delete history.imagesPerSecond;
  return history;
}

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'train-resume-'));
  faces = await faceFolder(FACE_COUNT);
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('npm run train -- --resume (multitask)', () => {
  const straight = () => join(root, 'straight');
  const stopped = () => join(root, 'stopped');

  it('stops on SIGINT after an epoch with exit 130, a checkpoint and the command that resumes it', { timeout: 240_000 }, async () => {
    const run = await trainUntilSignal(runArgs(stopped()));
    assert.equal(run.code, SIGINT_EXIT, run.output);
    assert.match(run.output, /resume with: npm run train -- --resume stopped\n/);
    const meta = JSON.parse(await readFile(join(stopped(), 'checkpoint', 'checkpoint.json'), 'utf8'));
    assert.ok(meta.epochsDone >= 1 && meta.epochsDone < EPOCHS, `stopped after epoch ${meta.epochsDone}`);
    assert.equal(existsSync(join(stopped(), 'checkpoint', `replica-1.epoch-${meta.epochsDone}.bin`)), true, 'every replica saved its state');
    for (const task of TASKS) assert.equal(existsSync(join(stopped(), task)), false, `no ${task} model yet`);
  });

  it('refuses to resume with an option that differs from the run\'s, naming it, before any work', { timeout: 60_000 }, () => {
    const seed = train('--resume', stopped(), '--seed', '4');
    assert.equal(seed.status, 2, seed.stderr);
    assert.match(seed.stderr, /error: --seed 4 does not match the run being resumed, which was started with --seed 3: drop --seed to resume it, or start a new run/);
    const longer = train('--resume', stopped(), '--epochs', String(EPOCHS + 2));
    assert.equal(longer.status, 2, longer.stderr);
    assert.match(longer.stderr, /--epochs 6 does not match .* --epochs 4 \(the learning rate decays to zero at the last epoch/);
    const none = train('--resume', join(root, 'faces'));
    assert.equal(none.status, 2, none.stderr);
    assert.match(none.stderr, /--resume .*faces holds no checkpoint/);
    assert.doesNotMatch(seed.stderr + longer.stderr + none.stderr + seed.stdout, /backend:|loaded \d+ faces/, 'nothing was started');
  });

  it('ends a resumed run with the weights and history of the run never stopped, bit for bit', { timeout: 300_000 }, async () => {
    await assertResumesExactly(straight(), stopped(), runArgs(straight()));
  });
});

describe('npm run train -- --resume with every recipe lever (multitask)', () => {
  const straight = () => join(root, 'levers-straight');
  const stopped = () => join(root, 'levers-stopped');

  it('records the levers in the checkpoint, and refuses a resume that asks for another value of one', { timeout: 240_000 }, async () => {
    const run = await trainUntilSignal(runArgs(stopped(), LEVERS));
    assert.equal(run.code, SIGINT_EXIT, run.output);
    assert.match(run.output, /aligned crops: 0 faces cut out as the server cuts them; 220 kept their UTKFace crop \(\d+ no face found/);
    const meta = JSON.parse(await readFile(join(stopped(), 'checkpoint', 'checkpoint.json'), 'utf8'));
    assert.deepEqual(meta.options.recipe, { inputSize: 48, widthMultiplier: 0.75, blocksPerStage: 2, ema: 0.9, mixup: 0.4, crops: 'aligned', distill: { teachers: [TEACHERS], weight: 0.6, temperature: 3 } });
    assert.deepEqual(meta.teachers.map((file: { path: string }) => file.path), TASKS.map((task) => join(TEACHERS, `${task}.onnx`)));
    assert.match(run.output, /distill: the teacher pass took [\d.]+ s \(1 teacher, \d+ faces\)/);
    const other = train('--resume', stopped(), '--ema', '0.99');
    assert.equal(other.status, 2, other.stderr);
    assert.match(other.stderr, /error: --ema 0.99 does not match the run being resumed, which was started with --ema 0.9: drop --ema to resume it, or start a new run/);
    const same = train('--resume', stopped(), '--input-size', '96');
    assert.match(same.stderr, /--input-size 96 does not match .* --input-size 48/);
    const weight = train('--resume', stopped(), '--distill-weight', '0.5');
    assert.match(weight.stderr, /error: --distill-weight 0.5 does not match the run being resumed, which was started with --distill-weight 0.6/);
  });

  it('refuses to resume once the teachers\' files are not those the run started with, before any work', { timeout: 60_000 }, async () => {
    const file = join(stopped(), 'checkpoint', 'checkpoint.json');
    const text = await readFile(file, 'utf8');
    const meta = JSON.parse(text);
    // as if models/gender.onnx had been exported again since
    meta.teachers[2].sha256 = '0'.repeat(64);
    await writeFile(file, JSON.stringify(meta));
    try {
      const changed = train('--resume', stopped());
      assert.equal(changed.status, 1, changed.stderr);
      assert.match(changed.stderr, /error: the run in .*levers-stopped was distilled from other teachers: .*models\/gender.onnx has sha256 [0-9a-f]{12}\.\.\., not 000000000000\.\.\. as when the run started; restore the teachers the run started with, or start a new run/);
      assert.doesNotMatch(changed.stdout + changed.stderr, /backend:|loaded \d+ faces/, 'nothing was started');
    } finally {
      await writeFile(file, text);
    }
  });

  it('ends the resumed run with the weights and history of the run never stopped, bit for bit', { timeout: 300_000 }, async () => {
    await assertResumesExactly(straight(), stopped(), runArgs(straight(), LEVERS));
  });
});
