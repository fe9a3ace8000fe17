/**
 * How `npm run export` and `npm run export:check` refuse what they cannot do: output paths that are the wrong kind
 * of thing (refused before any model is converted, and never a temp file left behind), labels that do not match the
 * model's outputs, a check that would compare nothing, a --data folder that gives no faces, and unreadable images
 * (skipped and named, as training does).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { Jimp } from 'jimp';
import { REPO_ROOT, UsageError } from '../export/args.ts';
import { parseCheckArgs, runCheck, type CheckConfig } from '../training/cli/export-check.ts';
import { parseExportArgs, runExport, type ExportCliConfig } from '../export/cli.ts';
import { exportModelFolderInMemory, writeExportedModel } from '../export/export-model.ts';
import { saveTfjsModelFolder } from '../export/tfjs-model.ts';
import { buildSeedModel } from '../training/models/seed.ts';
import { writeSeedRun } from './helpers/seed-run.ts';

let dir = '';
let run = '';

function exportConfig(argv: string[]): ExportCliConfig {
  const parsed = parseExportArgs(argv);
  assert.equal(typeof parsed, 'object');
  return parsed as ExportCliConfig;
}

function checkConfig(argv: string[]): CheckConfig {
  const parsed = parseCheckArgs(argv);
  assert.equal(typeof parsed, 'object');
  return parsed as CheckConfig;
}

/** A face-sized JPEG whose pixels depend on `seed`. */
async function generatedJpeg(seed: number): Promise<Uint8Array> {
  const image = new Jimp({ width: 64, height: 64, color: 0x000000ff });
  const data = image.bitmap.data;
  for (let i = 0; i < data.length; i += 4) {
    data[i] = (i * 7 + seed * 37) & 255;
    data[i + 1] = (i * 3 + seed * 11) & 255;
    data[i + 2] = (i + seed * 5) & 255;
  }
  const jpeg = await image.getBuffer('image/jpeg', { quality: 90 });
  return new Uint8Array(jpeg.buffer, jpeg.byteOffset, jpeg.byteLength);
}

const cli = (script: string, args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', join(REPO_ROOT, script), ...args], { cwd: REPO_ROOT, encoding: 'utf8' });

describe('npm run export / export:check refuse what they cannot do', () => {
  before(async () => {
    await tf.setBackend('cpu');
    dir = await mkdtemp(join(tmpdir(), 'export-cli-errors-'));
    run = join(dir, 'run');
    await writeSeedRun(run);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses an --out-dir that is a file before converting any model', async () => {
    const file = join(dir, 'afile.txt');
    await writeFile(file, 'keep me');
    const lines: string[] = [];
    await assert.rejects(runExport(exportConfig(['--all', '--runs', run, '--out-dir', file]), (l) => lines.push(l)), (e: Error) => {
      assert.ok(e instanceof UsageError, String(e));
      assert.match(e.message, /^--out-dir .*afile\.txt is a file, not a folder/);
      return true;
    });
    assert.deepEqual(lines, [], 'nothing was converted or checked');
    assert.equal(await readFile(file, 'utf8'), 'keep me');
    // A folder below a file cannot be made either.
    await assert.rejects(runExport(exportConfig(['--all', '--runs', run, '--out-dir', join(file, 'models')]), () => {}), /--out-dir .*afile\.txt[/\\]models cannot be created: .*afile\.txt is a file, not a folder/);
  });

  it('refuses an --out that is a folder before converting, and one that does not end in .onnx', async () => {
    const folder = join(dir, 'somedir');
    await mkdir(folder);
    const lines: string[] = [];
    await assert.rejects(runExport(exportConfig(['--model', join(run, 'age', 'model'), '--out', folder]), (l) => lines.push(l)), /^UsageError: --out .*somedir is a folder; give a file path ending in \.onnx/);
    const onnxFolder = join(dir, 'named.onnx');
    await mkdir(onnxFolder);
    await assert.rejects(runExport(exportConfig(['--model', join(run, 'age', 'model'), '--out', onnxFolder]), (l) => lines.push(l)), (e: Error) => e instanceof UsageError && /--out .*named\.onnx is a folder/.test(e.message));
    assert.equal(lines.length, 0, 'nothing was converted or checked');
    assert.deepEqual(await readdir(dir).then((names) => names.filter((n) => n.includes('.tmp-'))), [], 'no temp file beside the folder');
    const text = join(dir, 'notes.txt');
    await writeFile(text, 'keep me');
    await assert.rejects(runExport(exportConfig(['--model', join(run, 'age', 'model'), '--out', text]), (l) => lines.push(l)), (e: Error) => e instanceof UsageError && /^--out must be a file ending in \.onnx; got ".*notes\.txt"/.test(e.message));
    await assert.rejects(runExport(exportConfig(['--model', join(run, 'age', 'model'), '--out', join(dir, 'new', 'age')]), () => {}), /--out must be a file ending in \.onnx/);
    assert.equal(await readFile(text, 'utf8'), 'keep me');
    assert.deepEqual(lines, [], lines.join('\n'));
    assert.equal(existsSync(join(dir, 'new')), false);
  });

  it('a write that fails leaves no temp file behind', async () => {
    const exported = await exportModelFolderInMemory({ modelDir: join(run, 'age', 'model') });
    exported.model.dispose();
    const out = join(dir, 'write-fails');
    const target = join(out, 'age.onnx');
    await mkdir(target, { recursive: true }); // rename onto a folder fails after the temp file is written
    await assert.rejects(writeExportedModel(exported, target), /EISDIR|EEXIST|ENOTEMPTY|EPERM/);
    assert.deepEqual((await readdir(out)).sort(), ['age.onnx']);
  });

  it('refuses --labels whose count does not match the model output, naming both counts', async () => {
    const out = join(dir, 'labels');
    const ethnicity = join(run, 'ethnicity', 'model');
    await assert.rejects(
      runExport(exportConfig(['--model', ethnicity, '--out', join(out, 'ethnicity.onnx'), '--labels', 'a,b']), () => {}),
      /2 labels \(a, b\) were given, but output "output" of the model gives 5 classes/,
    );
    await assert.rejects(
      runExport(exportConfig(['--model', join(run, 'gender', 'model'), '--out', join(out, 'gender.onnx'), '--labels', 'a,b,c']), () => {}),
      /3 labels \(a, b, c\) were given, but output "output" of the model gives 2 classes \(one sigmoid unit\)/,
    );
    // Without training-info.json the single unit is taken as a sigmoid too.
    const bare = join(dir, 'bare-gender');
    const model = buildSeedModel('gender', 2, 3);
    await saveTfjsModelFolder(model, join(bare, 'model'));
    model.dispose();
    await assert.rejects(
      runExport(exportConfig(['--model', join(bare, 'model'), '--out', join(out, 'bare.onnx'), '--task', 'gender', '--labels', 'a,b,c']), () => {}),
      /3 labels \(a, b, c\) were given, but output "output" of the model gives 2 classes \(one sigmoid unit\)/,
    );
    assert.equal(existsSync(out), false, 'nothing was written');
    // The right count still exports.
    await runExport(exportConfig(['--model', ethnicity, '--out', join(out, 'ethnicity.onnx'), '--labels', 'a,b,c,d,e', '--no-verify']), () => {});
    assert.ok(existsSync(join(out, 'ethnicity.onnx')));
  });

  it('export:check refuses to compare nothing: exit 2 when --random and --faces are both 0', () => {
    assert.throws(() => parseCheckArgs(['--model', 'x', '--random', '0', '--faces', '0']), (e: Error) => e instanceof UsageError && e.message === 'nothing to compare: --random and --faces are both 0');
    const spawned = cli('training/cli/export-check.ts', ['--model', join(run, 'age', 'model'), '--random', '0', '--faces', '0']);
    assert.equal(spawned.status, 2, spawned.stdout + spawned.stderr);
    assert.equal(spawned.stderr, 'error: nothing to compare: --random and --faces are both 0\nRun `npm run export:check -- --help` for usage.\n', 'the message, and where the usage is');
    assert.doesNotMatch(spawned.stdout, /ok \(tolerance/);
  });

  it('export:check fails when an explicit --data gives no faces, and skips only when the default folder is absent', async () => {
    const age = join(run, 'age', 'model');
    const empty = join(dir, 'empty-data');
    await mkdir(empty);
    const junkOnly = join(dir, 'junk-data');
    await mkdir(junkOnly);
    await writeFile(join(junkOnly, '20_0_0_1.jpg.chip.jpg'), 'junk\n');
    const lines: string[] = [];
    await assert.rejects(runCheck(checkConfig(['--model', age, '--faces', '20', '--data', join(dir, 'nope')]), (l) => lines.push(l)), (e: Error) => e instanceof UsageError && /^--data .*nope does not exist/.test(e.message));
    assert.deepEqual(lines, [], 'refused before loading the model');
    await assert.rejects(runCheck(checkConfig(['--model', age, '--faces', '20', '--data', join(run, 'age', 'training-info.json')]), () => {}), /--data .*training-info\.json is a file, not a folder/);
    await assert.rejects(runCheck(checkConfig(['--model', age, '--faces', '20', '--data', empty]), () => {}), /--data .*empty-data holds no \.jpg, \.jpeg or \.png images/);
    await assert.rejects(runCheck(checkConfig(['--model', age, '--faces', '20', '--data', junkOnly]), () => {}), /none of the 1 images in .*junk-data could be read; e\.g\. 20_0_0_1\.jpg\.chip\.jpg: undecodable image/);
    // No faces asked for: --data is not looked at.
    assert.ok(await runCheck(checkConfig(['--model', age, '--random', '2', '--faces', '0', '--data', join(dir, 'nope')]), () => {}));
    // The default folder absent (a machine without the dataset): skipped, with the reason.
    const defaultAbsent = { ...checkConfig(['--model', age, '--random', '2', '--faces', '20']), data: join(dir, 'no-dataset-here') };
    assert.equal(defaultAbsent.dataGiven, false);
    const skipped: string[] = [];
    assert.ok(await runCheck(defaultAbsent, (l) => skipped.push(l)));
    assert.match(skipped.join('\n'), /real faces: skipped, no images in ".*no-dataset-here": no such folder \(pass --data DIR\)/);
  });

  it('export:check skips an unreadable image, names it and compares the other faces', async () => {
    const data = join(dir, 'faces');
    await mkdir(data);
    for (let i = 0; i < 4; i++) await writeFile(join(data, `${20 + i}_0_0_${i}.jpg.chip.jpg`), await generatedJpeg(i));
    await writeFile(join(data, '30_1_1_junk.jpg.chip.jpg'), 'junk\n');
    const lines: string[] = [];
    const ok = await runCheck(checkConfig(['--model', join(run, 'age', 'model'), '--random', '0', '--faces', '5', '--data', data]), (l) => lines.push(l));
    const text = lines.join('\n');
    assert.ok(ok, text);
    assert.match(text, /real faces: skipped 1 of 5: 1 undecodable image/);
    assert.match(text, /e\.g\. 30_1_1_junk\.jpg\.chip\.jpg: undecodable image: Not a supported image/);
    assert.match(text, /UTKFace faces 4 +output "output" \[4, \d\]: max \|diff\| [0-9.e+-]+, argmax agrees 4\/4/);
    // Asking for fewer faces than there are good ones tops the sample up past the bad one.
    const fewer: string[] = [];
    assert.ok(await runCheck(checkConfig(['--model', join(run, 'age', 'model'), '--random', '0', '--faces', '4', '--data', data]), (l) => fewer.push(l)));
    assert.match(fewer.join('\n'), /UTKFace faces 4 /);
  });
});
