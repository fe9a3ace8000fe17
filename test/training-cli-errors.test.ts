/**
 * How the training-side CLIs (train, evaluate, model-card, convert:csv, bench:train) refuse bad paths and
 * requests: up front, with plain messages that name the flag, never a raw EEXIST / EISDIR / ENOENT.
 * Each program runs as a user runs it, in a temporary working folder so that its dataset cache stays there.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Jimp } from 'jimp';
import { exportModelFolderInMemory } from '../export/export-model.ts';
import { missingDataMessage } from '../training/data/load.ts';
import { saveTfjsModelFolder } from '../export/tfjs-model.ts';
import { taskLabels, type Task } from '../contract/labels.ts';
import { selectBackend } from '../node-shared/tfjs/select.ts';
import { buildSeedModel } from '../training/models/seed.ts';
import { REPO_ROOT } from '../node-shared/paths.ts';
import { seedTrainingInfo } from './helpers/seed-run.ts';

const TSX = import.meta.resolve('tsx');
let root = '';

/** Runs a CLI of training/ (e.g. 'cli/train.ts') with `args`, in the temporary folder. */
function cli(script: string, ...args: string[]) {
  return spawnSync(process.execPath, ['--import', TSX, join(REPO_ROOT, 'training', script), ...args], { cwd: root, encoding: 'utf8' });
}

/** A UTKFace-style folder of `count` generated 60x60 JPEG faces, plus two entries that loading skips. */
async function faceFolder(name: string, count: number): Promise<string> {
  const folder = join(root, name);
  await mkdir(folder, { recursive: true });
  for (let i = 0; i < count; i++) {
    const image = new Jimp({ width: 60, height: 60, color: 0x000000ff });
    image.scan((x, y, at) => {
      image.bitmap.data[at] = (x * 3 + i * 40) & 255;
      image.bitmap.data[at + 1] = (y * 3 + i) & 255;
      image.bitmap.data[at + 2] = (x + y) & 255;
    });
    const jpeg = await image.getBuffer('image/jpeg', { quality: 90 });
    await writeFile(join(folder, `${20 + i}_${i % 2}_${i % 5}_2017011617452${String(i).padStart(4, '0')}.jpg.chip.jpg`), new Uint8Array(jpeg));
  }
  await writeFile(join(folder, '39_1_20170116174525125.jpg.chip.jpg'), 'no race field');
  await writeFile(join(folder, 'notes.txt'), 'not an image');
  return folder;
}

/** An untrained seed model exported to ONNX, its metadata recording a test split of `datasetCount` faces. */
async function exportedSeedModel(task: Task, datasetCount: number): Promise<Uint8Array> {
  const dir = join(root, 'run', task);
  const labels = taskLabels(task);
  const model = buildSeedModel(task, labels.length, 3);
  await saveTfjsModelFolder(model, join(dir, 'model'));
  model.dispose();
  const info = seedTrainingInfo(task);
  await writeFile(join(dir, 'training-info.json'), JSON.stringify(info));
  await writeFile(join(dir, 'metrics.json'), JSON.stringify({ task, testAccuracy: 0.5, split: { testFraction: 0.3, seed: 42, limit: null, datasetCount } }));
  const exported = await exportModelFolderInMemory({ modelDir: join(dir, 'model') });
  exported.model.dispose();
  return exported.bytes;
}

let data = '';
let otherData = '';
let models = '';
let truncated = '';

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'training-cli-'));
  await selectBackend('cpu', () => {});
  data = await faceFolder('faces', 20);
  otherData = await faceFolder('other-faces', 14);
  models = join(root, 'models');
  await mkdir(models);
  for (const task of ['ethnicity', 'gender'] as const) await writeFile(join(models, `${task}.onnx`), await exportedSeedModel(task, 20));
  const broken = join(root, 'broken');
  await mkdir(broken);
  truncated = join(broken, 'gender.onnx');
  await writeFile(truncated, (await readFile(join(models, 'gender.onnx'))).subarray(0, 300));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('-h, as --help', () => {
  it('prints each training and export program\'s usage on stdout, as --help does', () => {
    for (const script of ['cli/train.ts', 'cli/evaluate.ts', 'cli/calibrate.ts', 'cli/convert-csv.ts', 'cli/model-card.ts', 'bench/train-bench.ts', '../export/cli.ts', 'cli/export-check.ts', '../web-demo/src/node/build.ts']) {
      const short = cli(script, '-h');
      assert.equal(short.status, 0, `${script}: ${short.stderr}`);
      assert.match(short.stdout, /^Usage:\s+npm run /, script);
      assert.equal(short.stdout, cli(script, '--help').stdout, script);
    }
  });
});

describe('a usage error: the message and one line pointing to --help', () => {
  /** Every program with options, as a user runs it, and the --help command the pointer names. */
  const PROGRAMS: [script: string, help: string][] = [
    ['training/cli/train.ts', 'npm run train -- --help'],
    ['training/cli/evaluate.ts', 'npm run evaluate -- --help'],
    ['training/cli/evaluate-photos.ts', 'npm run evaluate:photos -- --help'],
    ['training/cli/calibrate.ts', 'npm run calibrate -- --help'],
    ['training/cli/convert-csv.ts', 'npm run convert:csv -- --help'],
    ['training/cli/model-card.ts', 'npm run model-card -- --help'],
    ['training/cli/export-check.ts', 'npm run export:check -- --help'],
    ['training/cli/make-scenes.ts', 'npx tsx training/cli/make-scenes.ts --help'],
    ['training/bench/train-bench.ts', 'npm run bench:train -- --help'],
    ['export/cli.ts', 'npm run export -- --help'],
    ['serve/main.ts', 'npm start -- --help'],
    ['serve/cli/predict.ts', 'npm run predict -- --help'],
    ['serve/bench/serve-bench.ts', 'npm run bench:serve -- --help'],
    ['web-demo/src/node/build.ts', 'npm run build:web -- --help'],
    ['web-demo/src/node/bench.ts', 'npm run bench:web -- --help'],
    ['web-demo/src/node/demo.ts', 'npm run demo -- --help'],
  ];

  it('every program answers an unknown option with exit 2 and two lines on stderr, not its whole usage', () => {
    for (const [script, help] of PROGRAMS) {
      const result = spawnSync(process.execPath, ['--import', TSX, join(REPO_ROOT, script), '--no-such-option', 'x'], { cwd: root, encoding: 'utf8' });
      assert.equal(result.status, 2, `${script}: ${result.stderr}`);
      const lines = result.stderr.trimEnd().split('\n');
      assert.equal(lines.length, 2, `${script}:\n${result.stderr}`);
      assert.match(lines[0], /^error: .*--no-such-option/, script);
      assert.equal(lines[1], `Run \`${help}\` for usage.`, script);
      assert.equal(result.stdout, '', script);
    }
  });
});

describe('no --data and no default folder', () => {
  it('says where UTKFace comes from, which layouts --data takes, and how to point at it', () => {
    const withCsv = missingDataMessage(true);
    assert.match(withCsv, /^--data is required: there is no UTKFace folder at .*shared[/\\]data[/\\]utkface/);
    assert.match(withCsv, /UTKFace project \(https:\/\/susanqq\.github\.io\/UTKFace\/\): its "Aligned & Cropped Faces" set/);
    assert.match(withCsv, /a folder of \{age\}_\{gender\}_\{race\}_\{date&time\}\.jpg\.chip\.jpg files/);
    assert.match(withCsv, /Kaggle's age_gender\.csv/);
    assert.match(withCsv, /or pass --data PATH\.$/);
    // calibrate and model-card read the folder only: the CSV is not offered to them.
    assert.doesNotMatch(missingDataMessage(false), /age_gender\.csv/);
  });
});

describe('npm run train: the --out folder', () => {
  it('refuses an --out that is a file, plainly and before any work', async () => {
    const file = join(root, 'afile.txt');
    await writeFile(file, 'mine');
    const result = cli('cli/train.ts', '--task', 'gender', '--preset', 'seed', '--epochs', '1', '--data', data, '--out', file);
    assert.equal(result.status, 2, result.stderr);
    assert.match(result.stderr, /error: --out ".*afile\.txt" is a file; a run is written to a folder: choose a new folder/);
    assert.doesNotMatch(result.stderr, /EEXIST|loaded \d+ faces/);
    assert.equal(await readFile(file, 'utf8'), 'mine');
  });

  it('refuses a folder that holds files, before any work, leaving it as it was', async () => {
    const out = join(root, 'old-run');
    await mkdir(join(out, 'gender'), { recursive: true });
    await writeFile(join(out, 'run.json'), '{"preset": "multitask"}\n');
    const result = cli('cli/train.ts', '--task', 'gender', '--preset', 'seed', '--epochs', '1', '--data', data, '--out', out);
    assert.equal(result.status, 2, result.stderr);
    assert.match(result.stderr, /error: --out ".*old-run" is not empty \(gender, run\.json\); a run there would mix with what it holds: choose a new folder, or delete this one/);
    assert.doesNotMatch(result.stderr, /loaded \d+ faces|backend:/, 'nothing was started');
    assert.deepEqual((await readdir(out)).sort(), ['gender', 'run.json']);
    assert.equal(await readFile(join(out, 'run.json'), 'utf8'), '{"preset": "multitask"}\n');
  });

  it('refuses a --data path that does not exist before starting anything, and leaves no folder behind', async () => {
    const out = join(root, 'new', 'run');
    const result = cli('cli/train.ts', '--task', 'gender', '--preset', 'seed', '--epochs', '1', '--backend', 'cpu', '--data', join(root, 'no-such-data'), '--out', out);
    assert.equal(result.status, 2, result.stderr);
    assert.match(result.stderr, /error: --data ".*no-such-data" does not exist; expected a UTKFace folder/);
    assert.match(result.stderr, /^Run `npm run train -- --help` for usage\.$/m);
    assert.doesNotMatch(result.stderr, /Usage:/, 'the message is not buried under the usage');
    assert.doesNotMatch(result.stderr + result.stdout, /backend:/, 'nothing was started');
    assert.equal(existsSync(out), false, 'the run folder is removed');
    assert.equal(existsSync(join(root, 'new')), false, 'and the folder created above it');
  });

  it('leaves no folder behind when training fails before writing anything (a data folder with no faces)', async () => {
    const empty = join(root, 'no-faces');
    await mkdir(empty, { recursive: true });
    const out = join(root, 'new-empty', 'run');
    const result = cli('cli/train.ts', '--task', 'gender', '--preset', 'seed', '--epochs', '1', '--backend', 'cpu', '--data', empty, '--out', out);
    assert.equal(result.status, 1, result.stderr);
    assert.match(result.stderr, /No faces could be loaded from .*no-faces/);
    assert.equal(existsSync(out), false, 'the run folder is removed');
    assert.equal(existsSync(join(root, 'new-empty')), false, 'and the folder created above it');
  });

  it('offers only the --backend values train takes when the requested one is not available', { skip: existsSync(join(REPO_ROOT, 'node_modules/@tensorflow/tfjs-node-gpu')) ? 'tfjs-node-gpu is installed here' : false }, async () => {
    const out = join(root, 'gpu-run');
    const result = cli('cli/train.ts', '--task', 'gender', '--preset', 'seed', '--epochs', '1', '--backend', 'node-gpu', '--data', data, '--out', out);
    assert.equal(result.status, 1, result.stderr);
    assert.match(result.stderr, /Backend "node-gpu" is not available: .*; or choose another --backend: node, wasm, cpu$/m);
    assert.doesNotMatch(result.stderr, /auto/);
    assert.equal(existsSync(out), false);
  });
});

describe('npm run bench:train', () => {
  it('names its own flag, --backends, and only the names it takes, when a backend is not available', { skip: existsSync(join(REPO_ROOT, 'node_modules/@tensorflow/tfjs-node')) ? 'tfjs-node is installed here' : false }, () => {
    const result = cli('bench/train-bench.ts', '--backends', 'node', '--seconds', '1');
    assert.equal(result.status, 1, result.stderr);
    assert.match(result.stderr, /Backend "node" is not available: .*; or choose another --backends: node-gpu, wasm, cpu$/m);
    assert.doesNotMatch(result.stderr, /auto/);
  });
});

describe('npm run convert:csv: the --out file', () => {
  it('refuses an --out that is a folder, before decoding', async () => {
    const folder = join(root, 'somedir');
    await mkdir(folder);
    const result = cli('cli/convert-csv.ts', '--data', data, '--out', folder, '--no-cache');
    assert.equal(result.status, 2, result.stderr);
    assert.match(result.stderr, /error: --out ".*somedir" is a folder; expected the path of a file to write/);
    assert.doesNotMatch(result.stderr, /EISDIR|loaded \d+ faces/);
  });

  it('creates a missing folder above --out, as export does', async () => {
    const out = join(root, 'nodir', 'x.csv');
    const result = cli('cli/convert-csv.ts', '--data', data, '--out', out, '--no-cache');
    assert.equal(result.status, 0, result.stderr);
    assert.equal((await readFile(out, 'utf8')).trim().split('\n').length, 21, 'a header and 20 faces');
  });

  it('refuses an --out whose folder cannot be created, before decoding', async () => {
    const file = join(root, 'plain-file');
    await writeFile(file, '');
    const result = cli('cli/convert-csv.ts', '--data', data, '--out', join(file, 'x.csv'), '--no-cache');
    assert.equal(result.status, 2, result.stderr);
    assert.match(result.stderr, /error: --out ".*plain-file\/x\.csv": its folder ".*plain-file" cannot be created \((EEXIST|ENOTDIR)\)/);
    assert.doesNotMatch(result.stderr, /loaded \d+ faces/);
  });
});

describe('npm run evaluate', () => {
  it('refuses --split test on data its test split was not drawn from, and scores every face with an explicit --split all', () => {
    const refused = cli('cli/evaluate.ts', '--model', join(models, 'gender.onnx'), '--data', otherData);
    assert.equal(refused.status, 2, refused.stderr);
    assert.match(refused.stderr, /error: gender\.onnx: its test split was drawn from 20 faces and this data has 14, so the test split cannot be recovered on it; pass --split all to score every face \(training faces included\)/);
    assert.doesNotMatch(refused.stdout, /accuracy/i, 'nothing was scored');

    const all = cli('cli/evaluate.ts', '--model', join(models, 'gender.onnx'), '--data', otherData, '--split', 'all');
    assert.equal(all.status, 0, all.stderr);
    assert.match(all.stdout, /^gender\.onnx: /m);
  });

  it('names the file of an invalid ONNX model', () => {
    const result = cli('cli/evaluate.ts', '--model', truncated, '--data', data);
    assert.equal(result.status, 1, result.stderr);
    assert.match(result.stderr, /^error: .*broken\/gender\.onnx: Not a valid ONNX model: /m);
  });
});

describe('npm run model-card', () => {
  it('says a missing --models folder does not exist, as evaluate does', () => {
    const result = cli('cli/model-card.ts', '--models', join(root, 'nope'), '--data', data);
    assert.equal(result.status, 2, result.stderr);
    assert.match(result.stderr, /error: --models ".*nope" does not exist/);
    assert.doesNotMatch(result.stderr, /ENOENT|scandir/);
  });

  it('names the file of an invalid ONNX model', () => {
    const result = cli('cli/model-card.ts', '--models', join(root, 'broken'), '--data', data, '--out', join(root, 'card.md'));
    assert.equal(result.status, 1, result.stderr);
    assert.match(result.stderr, /^error: .*broken\/gender\.onnx: Not a valid ONNX model: /m);
  });

  it('refuses an --out it cannot write before measuring any model', async () => {
    const file = join(root, 'card-parent');
    await writeFile(file, '');
    const result = cli('cli/model-card.ts', '--models', join(root, 'broken'), '--data', data, '--out', join(file, 'MODEL_CARD.md'));
    assert.equal(result.status, 2, result.stderr);
    assert.match(result.stderr, /error: --out ".*card-parent\/MODEL_CARD\.md": its folder ".*card-parent" cannot be created/);
  });

  it('documents in --help that models trained on a --limit subset alone are refused', () => {
    const result = cli('cli/model-card.ts', '--help');
    assert.equal(result.status, 0);
    assert.match(result.stdout, /--limit subset alone are refused/, 'help is printed on stdout, so that it can be paged');
    assert.equal(result.stderr, '');
  });

  it('reports the skipped entries of the data once, not once per model', async () => {
    const out = join(root, 'MODEL_CARD.md');
    const result = cli('cli/model-card.ts', '--models', models, '--data', data, '--out', out);
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stderr.match(/^skipped 2: /gm)?.length, 1, result.stderr);
    assert.equal(result.stderr.match(/^ {2}e\.g\. notes\.txt: /gm)?.length, 1, result.stderr);
    assert.match(await readFile(out, 'utf8'), /^# Model card/);
  });
});
