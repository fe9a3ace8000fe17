/**
 * npm run export -- --model <tfjs model dir> --out models/<task>.onnx [options]
 * npm run export -- --all [--runs DIR] [--out-dir DIR] [--force]
 */
import { access, constants, stat } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../node-shared/tfjs/select.ts';
import { AGE_SCHEMES, TASKS, type AgeScheme, type Task } from '../contract/labels.ts';
import type { OutputSpec } from '../contract/metadata.ts';
import type { InputSpec } from '../contract/preprocess.ts';
import { DEFAULT_MODELS, DEFAULT_RUNS, isMain, parseChoice, parseInputSpec, parseLabels, parseOutputs, runCli, UsageError } from './args.ts';
import { DEFAULT_OPSET, exportModelFolderInMemory, ExportError, SUPPORTED_OPSETS, writeExportedModel, type FolderExport, type FolderExportOptions } from './export-model.ts';
import { describeSupportedLayers } from './layers.ts';
import { compareModels, ONNX_RUNTIMES, randomValues } from './parity.ts';

const USAGE = `Usage:
  npm run export -- --model DIR --out FILE [options]   one tfjs model folder -> one .onnx file
  npm run export -- --all [--runs DIR] [--out-dir DIR] [--force]  the three task models of a training run

--all never replaces .onnx files that are already in --out-dir unless --force says so: its default, models/,
holds the models that ship (the server and the demo load them), so replacing them is a decision, not a default.
Export a new run elsewhere first (--out-dir DIR, then npm start -- --models DIR), and --force it into models/
once it is the one to ship.

Both update manifest.json beside the .onnx files, keeping its other entries (the face detector's among them).
Metadata (task, labels, input spec, metrics) comes from training-info.json and metrics.json beside the model
folder (as the training CLI writes them); the flags below override them or stand in when those files are missing.

Options:
  --model DIR          tfjs model folder (model.json + weights)
  --out FILE           the .onnx file to write, e.g. models/age.onnx (must end in .onnx)
  --all                export <runs>/{${TASKS.join(',')}}/model to <out-dir>/<task>.onnx
  --runs DIR           the training run for --all                                (default: runs/latest)
  --out-dir DIR        where --all writes                                          (default: models)
  --force              let --all replace the .onnx files already in --out-dir
  --task T             ${TASKS.join(', ')}
  --labels A,B,...     class labels in index order, one per class the model gives (two for one sigmoid unit)
                                                      (default: the task's labels, see contract/labels.ts)
  --age-scheme S       ${AGE_SCHEMES.join(', ')}                          (default: coursework, age only)
  --input HxWxC        input height x width x channels               (default: from the model's input shape)
  --scaling S          unit                                                                (default: unit)
  --preset P           the training preset, recorded in the metadata
  --training-info FILE instead of the training-info.json beside the model
  --metrics FILE       instead of the metrics.json beside the model
  --outputs JSON       what each output holds, e.g. '[{"name":"output","kind":"sigmoid","labels":["male","female"]}]'
  --opset N            ${SUPPORTED_OPSETS.join(', ')}                        (default: ${DEFAULT_OPSET})
  --no-test-time-flip  export models that average each face and its mirror image (the multitask preset's)
                       as one pass on the face alone: half the inference compute, a little less accurate;
                       their metadata keeps the test split and the training facts but not the test
                       figures, which training measured with both passes (npm run evaluate measures them)
  --no-verify          skip running the export against tfjs on random inputs
  --layers             list the supported layer classes and what each becomes
  --help               this text`;

/** How close the exported model must come to tfjs on the random inputs of the self-check. */
const VERIFY_TOLERANCE = 1e-4;
const VERIFY_BATCH = 4;

export interface ExportCliConfig {
  jobs: { modelDir: string; out: string }[];
  /** --all's --out-dir, resolved; absent for one model, whose --out is the job's `out` */
  outDir?: string;
  /** --all may replace .onnx files already in outDir */
  force: boolean;
  overrides: Omit<FolderExportOptions, 'modelDir'>;
  verify: boolean;
}

/** Where --all reads and writes when not told: the newest run, and the models that ship. */
export interface ExportDefaults {
  runs: string;
  models: string;
}

const EXPORT_DEFAULTS: ExportDefaults = { runs: DEFAULT_RUNS, models: DEFAULT_MODELS };

/** `defaults` is for tests, which must not write into the repository's models/. */
export function parseExportArgs(argv: string[], defaults: ExportDefaults = EXPORT_DEFAULTS): ExportCliConfig | 'help' | 'layers' {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      model: { type: 'string' },
      out: { type: 'string' },
      all: { type: 'boolean', default: false },
      runs: { type: 'string' },
      'out-dir': { type: 'string' },
      force: { type: 'boolean', default: false },
      task: { type: 'string' },
      labels: { type: 'string' },
      'age-scheme': { type: 'string' },
      input: { type: 'string' },
      scaling: { type: 'string', default: 'unit' },
      preset: { type: 'string' },
      'training-info': { type: 'string' },
      metrics: { type: 'string' },
      outputs: { type: 'string' },
      opset: { type: 'string' },
      'no-verify': { type: 'boolean', default: false },
      'no-test-time-flip': { type: 'boolean', default: false },
      layers: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) return 'help';
  if (values.layers) return 'layers';
  const opset = values.opset === undefined ? undefined : Number(parseChoice('--opset', values.opset, SUPPORTED_OPSETS.map(String)));
  const verify = !values['no-verify'];
  const testTimeFlip = values['no-test-time-flip'] ? false : undefined;
  if (values.all) {
    const perModel = ['model', 'out', 'task', 'labels', 'age-scheme', 'input', 'preset', 'training-info', 'metrics', 'outputs'] as const;
    const clash = perModel.filter((flag) => values[flag] !== undefined);
    if (clash.length > 0) throw new UsageError(`--all takes its settings from each task's training-info.json; drop ${clash.map((f) => `--${f}`).join(', ')}`);
    const runs = resolve(values.runs ?? defaults.runs);
    const outDir = resolve(values['out-dir'] ?? defaults.models);
    const jobs = TASKS.map((task) => ({ modelDir: join(runs, task, 'model'), out: join(outDir, `${task}.onnx`) }));
    return { jobs, outDir, force: values.force === true, overrides: { opset, testTimeFlip }, verify };
  }
  for (const flag of ['runs', 'out-dir'] as const) {
    if (values[flag] !== undefined) throw new UsageError(`--${flag} goes with --all; for one model use --model and --out`);
  }
  // --out names the one file to write: that is the asking.
  if (values.force) throw new UsageError('--force goes with --all; --out FILE replaces FILE as it is');
  if (values.model === undefined) throw new UsageError('--model (or --all) is required');
  if (values.out === undefined) throw new UsageError('--out is required, e.g. --out models/age.onnx');
  const task: Task | undefined = values.task === undefined ? undefined : parseChoice('--task', values.task, TASKS);
  const ageScheme: AgeScheme | undefined = values['age-scheme'] === undefined ? undefined : parseChoice('--age-scheme', values['age-scheme'], AGE_SCHEMES);
  const input: InputSpec | undefined = values.input === undefined ? undefined : parseInputSpec('--input', values.input, values.scaling ?? 'unit');
  const outputs: OutputSpec[] | undefined = values.outputs === undefined ? undefined : parseOutputs('--outputs', values.outputs);
  return {
    jobs: [{ modelDir: resolve(values.model), out: resolve(values.out) }],
    force: false,
    overrides: {
      task,
      labels: values.labels === undefined ? undefined : parseLabels('--labels', values.labels),
      ageScheme,
      input,
      preset: values.preset,
      trainingInfoFile: values['training-info'] === undefined ? undefined : resolve(values['training-info']),
      metricsFile: values.metrics === undefined ? undefined : resolve(values.metrics),
      outputs,
      opset,
      testTimeFlip,
    },
    verify,
  };
}

/** A path relative to the current folder when it is inside it, else absolute. */
const show = (path: string) => {
  const r = relative(process.cwd(), path);
  return r.startsWith('..') ? path : r || '.';
};

/** Exports each job (checking each against tfjs first unless told not to) and prints a line per model. */
export async function runExport(config: ExportCliConfig, log: (line: string) => void = console.log): Promise<void> {
  // Refuse output paths that cannot be written before converting anything.
  await checkOutputPaths(config);
  // The cpu backend: exact reference arithmetic for parity, and no tfjs banner.
  await selectBackend('cpu', () => {});
  // For --all, refuse before writing anything if a task's model is missing.
  const missing: string[] = [];
  for (const job of config.jobs) {
    if (!(await access(join(job.modelDir, 'model.json')).then(() => true, () => false))) missing.push(job.modelDir);
  }
  if (missing.length > 0) {
    throw new ExportError(
      `No trained model at ${missing.map((m) => `"${show(m)}"`).join(', ')}${config.jobs.length > 1 ? '; train them with `npm run train -- --task all` or pass --runs DIR' : ''}`,
    );
  }
  // Export and check every model before writing any, so a failure leaves models/ as it was.
  const ready: { exported: Omit<FolderExport, 'model'>; out: string }[] = [];
  for (const job of config.jobs) {
    const { model, ...exported } = await exportModelFolderInMemory({ ...config.overrides, modelDir: job.modelDir });
    try {
      if (config.verify) log(await verifyExport(model, exported));
    } finally {
      model.dispose();
    }
    ready.push({ exported, out: job.out });
  }
  for (const { exported, out } of ready) {
    const { outFile } = await writeExportedModel(exported, out);
    const sources = [exported.trainingInfoFile, exported.metricsFile].filter((f): f is string => f !== undefined).map(show);
    log(
      `${exported.metadata.task}: ${show(exported.modelDir)} -> ${show(outFile)} (${(exported.bytes.length / 1024).toFixed(1)} KiB, opset ${exported.metadata.opset}, sha256 ${exported.sha256.slice(0, 12)}...; metadata from ${sources.length > 0 ? sources.join(', ') : 'flags and the model'})`,
    );
  }
  log(`manifest: ${show(join(resolve(config.jobs[0].out, '..'), 'manifest.json'))}`);
}

type PathKind = 'file' | 'folder' | 'other' | 'missing';

async function pathKind(path: string): Promise<PathKind> {
  const stats = await stat(path).catch(() => undefined);
  if (stats === undefined) return 'missing';
  return stats.isDirectory() ? 'folder' : stats.isFile() ? 'file' : 'other';
}

/** Why the folder `dir` cannot hold new files (it, or the nearest part of it that exists, is not a writable folder), or undefined. */
async function folderProblem(flag: string, dir: string): Promise<string | undefined> {
  let existing = dir;
  while ((await pathKind(existing)) === 'missing' && dirname(existing) !== existing) existing = dirname(existing);
  const kind = await pathKind(existing);
  const where = existing === dir ? `${flag} ${show(dir)}` : `${flag} ${show(dir)} cannot be created: ${show(existing)}`;
  if (kind !== 'folder') return `${where} ${kind === 'file' ? 'is a file, not a folder' : 'is not a folder'}`;
  if (!(await access(existing, constants.W_OK).then(() => true, () => false))) return `${where} is not writable`;
  return undefined;
}

/**
 * Refuses, naming the flag, an output that is a folder or a folder that is a file, and for --all without --force,
 * .onnx files that are already there.
 */
async function checkOutputPaths(config: ExportCliConfig): Promise<void> {
  if (config.outDir !== undefined) {
    const problem = await folderProblem('--out-dir', config.outDir);
    if (problem !== undefined) throw new UsageError(problem);
    const existing: string[] = [];
    for (const { out } of config.jobs) {
      const kind = await pathKind(out);
      if (kind === 'folder') throw new UsageError(`${show(out)} is a folder, so --all cannot write it; remove it or give another --out-dir`);
      if (kind !== 'missing') existing.push(basename(out));
    }
    if (existing.length > 0 && !config.force) {
      throw new UsageError(
        `--out-dir ${show(config.outDir)} already holds ${existing.join(', ')}; --all replaces models only with --force. ` +
          `To keep them, export elsewhere: --out-dir DIR (a new folder), then serve it with npm start -- --models DIR`,
      );
    }
    return;
  }
  for (const { out } of config.jobs) {
    const kind = await pathKind(out);
    if (kind === 'folder') throw new UsageError(`--out ${show(out)} is a folder; give a file path ending in .onnx`);
    if (kind === 'other') throw new UsageError(`--out ${show(out)} is not a regular file; give a file path ending in .onnx`);
    // The server and the manifest take *.onnx only; this also keeps a typo from overwriting some other file.
    if (!/\.onnx$/i.test(out)) throw new UsageError(`--out must be a file ending in .onnx; got "${show(out)}"`);
    const problem = await folderProblem(`the folder of --out`, dirname(out));
    if (problem !== undefined) throw new UsageError(problem);
  }
}

/** Runs the export in onnxruntime-node against tfjs on random inputs; throws when they differ. */
async function verifyExport(model: tf.LayersModel, exported: Omit<FolderExport, 'model'>): Promise<string> {
  const { height, width, channels } = exported.metadata.input;
  const shape = [VERIFY_BATCH, height, width, channels];
  const session = await ONNX_RUNTIMES['onnxruntime-node'](exported.bytes);
  try {
    const comparisons = await compareModels(model, session, randomValues(shape.reduce((a, b) => a * b), 7), shape, exported.metadata.outputs);
    const worst = Math.max(...comparisons.map((c) => c.maxAbsDiff));
    if (!(worst <= VERIFY_TOLERANCE)) {
      throw new ExportError(`The export of "${show(exported.modelDir)}" differs from tfjs by up to ${worst} on random inputs (tolerance ${VERIFY_TOLERANCE}); nothing was written`);
    }
    return `${exported.metadata.task}: onnxruntime-node matches tfjs within ${worst.toExponential(1)} on ${VERIFY_BATCH} random inputs`;
  } finally {
    await session.release();
  }
}

if (isMain(import.meta.url)) {
  runCli(USAGE, async (argv) => {
    const config = parseExportArgs(argv);
    if (config === 'help') throw new UsageError('');
    if (config === 'layers') {
      console.log(describeSupportedLayers());
      return;
    }
    await runExport(config);
  });
}
