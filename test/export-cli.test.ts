/**
 * `npm run export` and `npm run export:check` on a training run laid out as the training CLI writes it:
 * <run>/<task>/model/{model.json,weights.bin}, <run>/<task>/training-info.json, <run>/<task>/metrics.json.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { DEFAULT_MODELS, DEFAULT_RUNS, DEFAULT_UTKFACE, REPO_ROOT, UsageError } from '../export/args.ts';
import { parseCheckArgs, runCheck } from '../training/cli/export-check.ts';
import { parseExportArgs, runExport, type ExportCliConfig } from '../export/cli.ts';
import { loadTfjsModelFolder, modelSha256, saveTfjsModelFolder } from '../export/tfjs-model.ts';
import { ONNX_RUNTIMES } from '../export/parity.ts';
import { TASKS, type Task } from '../contract/labels.ts';
import { isClassifierEntry, isDetectorEntry, readModelMetadata, validateModelManifest } from '../contract/metadata.ts';
import { SEED_INPUT } from '../contract/preprocess.ts';
import { buildSeedModel } from '../training/models/seed.ts';
import { seedTrainingInfo, writeSeedRun } from './helpers/seed-run.ts';

let dir = '';
let run = '';

const metricsOf = (task: Task) => ({ task, testAccuracy: 0.5 + TASKS.indexOf(task) / 10, confusionMatrix: [[1, 2], [3, 4]] });

function config(argv: string[], defaults?: Parameters<typeof parseExportArgs>[1]): ExportCliConfig {
  const parsed = parseExportArgs(argv, defaults);
  assert.equal(typeof parsed, 'object');
  return parsed as ExportCliConfig;
}

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

describe('npm run export / export:check on a training run', () => {
  before(async () => {
    await tf.setBackend('cpu');
    dir = await mkdtemp(join(tmpdir(), 'export-cli-'));
    run = join(dir, 'run');
    await writeSeedRun(run, metricsOf);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('--all exports the three tasks with their training info, metrics and source hash, and lists them in the manifest', async () => {
    const out = join(dir, 'models');
    const lines: string[] = [];
    await runExport(config(['--all', '--runs', run, '--out-dir', out]), (line) => lines.push(line));
    const manifest = validateModelManifest(JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8')));
    assert.deepEqual(manifest.models.map((m) => m.file), ['age.onnx', 'ethnicity.onnx', 'gender.onnx']);
    for (const task of TASKS) {
      const bytes = new Uint8Array(await readFile(join(out, `${task}.onnx`)));
      const entry = manifest.models.filter(isClassifierEntry).find((m) => m.task === task);
      assert.equal(entry?.sha256, sha256(bytes));
      assert.equal(entry?.bytes, bytes.length);
      const metadata = readModelMetadata(bytes);
      const info = seedTrainingInfo(task);
      assert.equal(metadata.task, task);
      assert.deepEqual(metadata.labels, info.labels);
      assert.deepEqual(metadata.outputs, info.outputs);
      assert.deepEqual(metadata.input, SEED_INPUT);
      assert.deepEqual(metadata.metrics, metricsOf(task));
      assert.equal(metadata.source.preset, 'seed');
      const source = await loadTfjsModelFolder(join(run, task, 'model'));
      assert.equal(source.sha256, await modelSha256(source.model), 'the in-memory hash equals the folder hash');
      assert.equal(metadata.source.sha256, source.sha256);
      assert.equal(entry?.sourceSha256, source.sha256);
      source.model.dispose();
    }
    assert.equal(lines.filter((l) => /onnxruntime-node matches tfjs within/.test(l)).length, 3, lines.join('\n'));
  });

  it('--all leaves the shipped models byte-identical unless --force, and --force keeps the manifest\'s face detector entry', async () => {
    // The default target is the repository's models/; the test works on a copy of it, given as that default.
    const parsedDefault = config(['--all']);
    assert.equal(parsedDefault.outDir, DEFAULT_MODELS);
    assert.equal(parsedDefault.jobs[0].modelDir, join(DEFAULT_RUNS, 'age', 'model'));
    assert.equal(parsedDefault.force, false);
    const shipped = join(dir, 'shipped-models');
    await cp(DEFAULT_MODELS, shipped, { recursive: true });
    const names = (await readdir(shipped)).sort();
    const before = new Map(await Promise.all(names.map(async (name) => [name, await readFile(join(shipped, name))] as const)));
    const originalManifest = validateModelManifest(JSON.parse(before.get('manifest.json')!.toString('utf8')));
    const detector = originalManifest.models.find(isDetectorEntry);
    assert.ok(detector !== undefined, 'models/manifest.json lists a face detector');

    const defaults = { runs: run, models: shipped };
    const lines: string[] = [];
    await assert.rejects(runExport(config(['--all'], defaults), (l) => lines.push(l)), (e: Error) => {
      assert.ok(e instanceof UsageError, String(e));
      assert.match(e.message, /^--out-dir .*shipped-models already holds age\.onnx, ethnicity\.onnx, gender\.onnx; --all replaces models only with --force\. To keep them, export elsewhere: --out-dir DIR/);
      return true;
    });
    assert.deepEqual(lines, [], 'refused before converting anything');
    assert.deepEqual((await readdir(shipped)).sort(), names);
    for (const [name, bytes] of before) assert.ok(bytes.equals(await readFile(join(shipped, name))), `${name} is byte-identical`);

    await runExport(config(['--all', '--force', '--no-verify'], defaults), () => {});
    const manifest = validateModelManifest(JSON.parse(await readFile(join(shipped, 'manifest.json'), 'utf8')));
    assert.deepEqual(manifest.models.filter(isDetectorEntry), [detector], 'the detector entry is kept as it was');
    for (const task of TASKS) {
      const bytes = await readFile(join(shipped, `${task}.onnx`));
      assert.ok(!bytes.equals(before.get(`${task}.onnx`)!), `${task}.onnx was replaced`);
      assert.equal(manifest.models.filter(isClassifierEntry).find((m) => m.task === task)?.sha256, sha256(bytes));
    }
  });

  it('export:check compares tfjs and onnxruntime-node on random inputs and real faces, and passes', async () => {
    const out = join(dir, 'models');
    const lines: string[] = [];
    const ok = await runCheck({ ...(parseCheckArgs(['--runs', run, '--models', out, '--random', '5', '--faces', '6']) as Exclude<ReturnType<typeof parseCheckArgs>, 'help'>) }, (l) => lines.push(l));
    const text = lines.join('\n');
    assert.ok(ok, text);
    assert.equal((text.match(/random inputs 5 +output "output" \[5, \d\]: max \|diff\| [0-9.e+-]+, argmax agrees 5\/5/g) ?? []).length, 3, text);
    if (existsSync(DEFAULT_UTKFACE)) {
      assert.equal((text.match(/UTKFace faces 6 +output "output" \[6, \d\]: max \|diff\| [0-9.e+-]+, argmax agrees 6\/6/g) ?? []).length, 3, text);
    } else {
      assert.match(text, /real faces: skipped, no images in/);
    }
    for (const m of text.matchAll(/max \|diff\| ([0-9.e+-]+)/g)) assert.ok(Number(m[1]) <= 1e-5, m[0]);
  });

  it('the exported files also load and run in onnxruntime-web', async () => {
    const bytes = new Uint8Array(await readFile(join(dir, 'models', 'ethnicity.onnx')));
    const runner = await ONNX_RUNTIMES['onnxruntime-web'](bytes);
    const [out] = await runner.run(new Float32Array(3 * 48 * 48).fill(0.25), [3, 48, 48, 1]);
    assert.deepEqual(out.dims, [3, 5]);
    const row = Array.from(out.data as Float32Array).slice(0, 5);
    assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-5, `softmax row sums to 1: ${row}`);
    await runner.release();
  });

  it('--all writes nothing and names every missing model when the run is incomplete', async () => {
    const partial = join(dir, 'partial');
    const model = buildSeedModel('gender', 2, 1);
    await saveTfjsModelFolder(model, join(partial, 'gender', 'model'));
    model.dispose();
    const out = join(dir, 'partial-models');
    await assert.rejects(runExport(config(['--all', '--runs', partial, '--out-dir', out]), () => {}), /No trained model at ".*age\/model", ".*ethnicity\/model"; train them with `npm run train -- --task all` or pass --runs DIR/);
    assert.equal(existsSync(out), false);
  });

  it('--model without training-info.json takes the task from --task and the input from the model', async () => {
    const bare = join(dir, 'bare');
    const model = buildSeedModel('gender', 2, 2);
    await saveTfjsModelFolder(model, join(bare, 'model'));
    model.dispose();
    const out = join(dir, 'bare-out', 'gender.onnx');
    await assert.rejects(runExport(config(['--model', join(bare, 'model'), '--out', out]), () => {}), /No training-info\.json beside ".*" and no --task: pass --task/);
    await runExport(config(['--model', join(bare, 'model'), '--out', out, '--task', 'gender', '--no-verify']), () => {});
    const metadata = readModelMetadata(new Uint8Array(await readFile(out)));
    assert.deepEqual(metadata.labels, ['male', 'female']);
    assert.equal(metadata.outputs[0].kind, 'sigmoid');
    assert.deepEqual(metadata.input, SEED_INPUT);
    assert.equal(metadata.metrics, null);
  });

  it('rejects conflicting or malformed flags, naming the flag', () => {
    assert.throws(() => parseExportArgs(['--all', '--task', 'age']), (e: Error) => e instanceof UsageError && /drop --task/.test(e.message));
    assert.throws(() => parseExportArgs(['--model', 'x']), /--out is required/);
    assert.throws(() => parseExportArgs(['--model', 'x', '--out', 'y.onnx', '--opset', '12']), /Unsupported --opset "12"; expected one of: 13, 14, 15, 16, 17, 18, 19, 20, 21/);
    assert.throws(() => parseExportArgs(['--model', 'x', '--out', 'y.onnx', '--input', '48x48']), /--input must be HEIGHTxWIDTHxCHANNELS/);
    assert.throws(() => parseExportArgs(['--model', 'x', '--out', 'y.onnx', '--task', 'mood']), /Unsupported --task "mood"; expected one of: age, ethnicity, gender/);
    assert.throws(() => parseExportArgs(['--model', 'x', '--out', 'y.onnx', '--outputs', '[{"name":"p","kind":"odds"}]']), /--outputs\[0\]\.kind: "odds" is not one of: probabilities, sigmoid, years/);
    assert.throws(() => parseExportArgs(['--runs', 'r', '--model', 'x', '--out', 'y']), /--runs goes with --all/);
    assert.throws(() => parseExportArgs(['--model', 'x', '--out', 'y.onnx', '--force']), /--force goes with --all/);
  });

  it('runs as `npm run export` from the command line: exit 0 with a line per model, exit 1 with the reason', () => {
    const out = join(dir, 'spawned');
    const ok = spawnSync(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'export', 'cli.ts'), '--model', join(run, 'age', 'model'), '--out', join(out, 'age.onnx')], { cwd: REPO_ROOT, encoding: 'utf8' });
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /age: .*age\/model -> .*age\.onnx \([\d.]+ KiB, opset 13, sha256 [0-9a-f]{12}\.\.\.; metadata from .*training-info\.json, .*metrics\.json\)/);
    // An --out-dir that holds models is refused from the command line too: exit 2, the reason and where --help is.
    const refused = spawnSync(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'export', 'cli.ts'), '--all', '--runs', run, '--out-dir', join(dir, 'models')], { cwd: REPO_ROOT, encoding: 'utf8' });
    assert.equal(refused.status, 2, refused.stderr);
    assert.match(refused.stderr, /^error: --out-dir .*models already holds age\.onnx, ethnicity\.onnx, gender\.onnx; --all replaces models only with --force\..*\nRun `npm run export -- --help` for usage\.\n$/);
    const bad = spawnSync(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'export', 'cli.ts'), '--model', join(dir, 'nowhere'), '--out', join(out, 'x.onnx')], { cwd: REPO_ROOT, encoding: 'utf8' });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /error: No trained model at ".*nowhere"/);
  });
});
