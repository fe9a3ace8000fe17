/**
 * npm run export:check -- [--all] [--runs DIR] [--models DIR]
 * npm run export:check -- --model DIR [--onnx FILE]
 *
 * Runs each tfjs model and its ONNX export in onnxruntime-node (all graph optimizations on; with --web
 * also onnxruntime-web's wasm backend) on the same
 * inputs, random tensors and real UTKFace faces, and prints per output the largest absolute difference
 * and whether every predicted class agrees. Exits 1 when any difference exceeds the tolerance or any
 * prediction differs.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../node-shared/tfjs/select.ts';
import { TASKS } from '../../contract/labels.ts';
import { readModelMetadata, type ModelMetadata } from '../../contract/metadata.ts';
import { scaleBytes, type InputSpec } from '../../contract/preprocess.ts';
import { decodeFaceFile } from '../data/decode-worker.ts';
import { SkipCollector } from '../data/ingest.ts';
import { DEFAULT_MODELS, DEFAULT_RUNS, DEFAULT_UTKFACE, isMain, parsePositiveNumber, parseWholeNumber, runCli, UsageError } from '../../export/args.ts';
import { ExportError, exportModelFolderInMemory } from '../../export/export-model.ts';
import { compareModels, ONNX_RUNTIMES, predictTfjs, randomValues, type OnnxRuntimeName, type OutputComparison, type RunOutputs } from '../../export/parity.ts';
import { loadTfjsModelFolder } from '../../export/tfjs-model.ts';

const USAGE = `Usage:
  npm run export:check -- [--all] [--runs DIR] [--models DIR]   each task's run model vs models/<task>.onnx
  npm run export:check -- --model DIR [--onnx FILE]             one model (exported in memory without --onnx)

Options:
  --runs DIR       the training run for --all                                  (default: runs/latest)
  --models DIR     where the .onnx files are for --all                           (default: models)
  --random N       random inputs, uniform in [0, 1)                                   (default: 16)
  --faces N        real faces from the UTKFace folder, 0 for none                     (default: 256)
                   (unreadable images are skipped and named; --random and --faces cannot both be 0)
  --data DIR       the UTKFace folder; when the default is absent, faces are skipped
                                                                 (default: ../shared/data/utkface)
  --tolerance X    largest absolute difference allowed                              (default: 1e-4)
  --seed S         random inputs and face sample                                        (default: 1)
  --web            also run onnxruntime-web (wasm backend) against tfjs
  --help           this text`;

/** Faces per inference call, to bound memory. */
const FACE_BATCH = 64;

export interface CheckConfig {
  pairs: { modelDir: string; onnx?: string }[];
  random: number;
  faces: number;
  data: string;
  /** whether --data was given: then a folder that gives no faces is an error; an absent default folder is skipped */
  dataGiven: boolean;
  tolerance: number;
  seed: number;
  runtimes: OnnxRuntimeName[];
}

export function parseCheckArgs(argv: string[]): CheckConfig | 'help' {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      all: { type: 'boolean', default: false },
      runs: { type: 'string' },
      models: { type: 'string' },
      model: { type: 'string' },
      onnx: { type: 'string' },
      random: { type: 'string', default: '16' },
      faces: { type: 'string', default: '256' },
      data: { type: 'string' },
      tolerance: { type: 'string', default: '1e-4' },
      seed: { type: 'string', default: '1' },
      web: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) return 'help';
  const common = {
    random: parseWholeNumber('--random', values.random ?? '16', 0),
    faces: parseWholeNumber('--faces', values.faces ?? '256', 0),
    data: resolve(values.data ?? DEFAULT_UTKFACE),
    dataGiven: values.data !== undefined,
    tolerance: parsePositiveNumber('--tolerance', values.tolerance ?? '1e-4'),
    seed: parseWholeNumber('--seed', values.seed ?? '1', 0),
    runtimes: values.web ? (['onnxruntime-node', 'onnxruntime-web'] as OnnxRuntimeName[]) : (['onnxruntime-node'] as OnnxRuntimeName[]),
  };
  if (common.random === 0 && common.faces === 0) throw new UsageError('nothing to compare: --random and --faces are both 0');
  if (values.model !== undefined) {
    if (values.all || values.runs !== undefined || values.models !== undefined) throw new UsageError('--model checks one model; drop --all, --runs and --models');
    return { ...common, pairs: [{ modelDir: resolve(values.model), onnx: values.onnx === undefined ? undefined : resolve(values.onnx) }] };
  }
  if (values.onnx !== undefined) throw new UsageError('--onnx goes with --model');
  const runs = resolve(values.runs ?? DEFAULT_RUNS);
  const models = resolve(values.models ?? DEFAULT_MODELS);
  return { ...common, pairs: TASKS.map((task) => ({ modelDir: join(runs, task, 'model'), onnx: join(models, `${task}.onnx`) })) };
}

/** A path relative to the current folder when it is inside it, else absolute. */
const show = (path: string) => {
  const r = relative(process.cwd(), path);
  return r.startsWith('..') ? path : r || '.';
};

function formatComparison(label: string, c: OutputComparison): string {
  const agree = c.argmaxAgree === undefined ? '' : `, argmax agrees ${c.argmaxAgree}/${c.rows}${c.argmaxAgree === c.rows ? '' : '  <-- DISAGREES'}`;
  return `  ${label.padEnd(18)} output "${c.name}" [${c.shape.join(', ')}]: max |diff| ${c.maxAbsDiff.toExponential(2)}${agree}`;
}

/** The face images to take, or why none are taken. */
type FaceSource = { files: string[] } | { skip: string };

/**
 * Every image file of the --data folder in a seeded order (sorted first, so the order does not depend on the
 * directory's): the sample is taken from the front, and an unreadable file is replaced by the next one.
 * A folder that gives no images is an error, except the default folder being absent (a machine without the dataset).
 */
async function listFaces(config: CheckConfig): Promise<FaceSource> {
  const flag = `--data ${show(config.data)}${config.dataGiven ? '' : ' (the default)'}`;
  const stats = await stat(config.data).catch(() => undefined);
  if (stats === undefined) {
    if (!config.dataGiven) return { skip: `no images in "${show(config.data)}": no such folder (pass --data DIR)` };
    throw new UsageError(`${flag} does not exist; pass the UTKFace folder, or --faces 0 to compare random inputs only`);
  }
  if (!stats.isDirectory()) throw new UsageError(`${flag} is a file, not a folder; pass the UTKFace folder`);
  const names = await readdir(config.data).catch((error: Error) => {
    throw new UsageError(`${flag} cannot be read: ${error.message}`);
  });
  const images = names.filter((n) => /\.(jpe?g|png)$/i.test(n)).sort();
  if (images.length === 0) throw new UsageError(`${flag} holds no .jpg, .jpeg or .png images; pass the UTKFace folder, or --faces 0 to compare random inputs only`);
  const keys = randomValues(images.length, config.seed + 1);
  const order = images.map((_, i) => i).sort((a, b) => keys[a] - keys[b]);
  return { files: order.map((i) => join(config.data, images[i])) };
}

/** Up to `count` faces from the front of `files`, skipping (and reporting) those that cannot be read, in batches. */
async function readFaces(files: string[], count: number, spec: InputSpec, log: (line: string) => void): Promise<{ batches: Float32Array[]; count: number }> {
  const size = spec.height * spec.width * spec.channels;
  const faces: Float32Array[] = [];
  const skipped = new SkipCollector();
  let tried = 0;
  while (faces.length < count && tried < files.length) {
    const file = files[tried++];
    // Decoded and preprocessed as training does (and, scaled, as the server does), with training's skip reasons.
    const face = await decodeFaceFile(file, spec);
    if (face instanceof Uint8Array) faces.push(scaleBytes(face, spec));
    else skipped.add(basename(file), face.reason, face.detail);
  }
  const report = skipped.toReport();
  if (faces.length === 0) {
    const example = report.examples[0];
    throw new ExportError(`none of the ${tried} images in ${show(dirname(files[0]))} could be read; e.g. ${example.entry}: ${example.reason}`);
  }
  if (report.count > 0) {
    const reasons = Object.entries(report.byReason).map(([reason, n]) => `${n} ${reason}`).join(', ');
    log(`  real faces: skipped ${report.count} of ${tried}: ${reasons}`);
    for (const { entry, reason } of report.examples) log(`    e.g. ${entry}: ${reason}`);
  }
  const batches: Float32Array[] = [];
  for (let start = 0; start < faces.length; start += FACE_BATCH) {
    const batch = faces.slice(start, start + FACE_BATCH);
    const input = new Float32Array(batch.length * size);
    batch.forEach((face, i) => input.set(face, i * size));
    batches.push(input);
  }
  return { batches, count: faces.length };
}

/** Checks one pair; returns whether it passed. */
async function checkPair(config: CheckConfig, pair: CheckConfig['pairs'][number], faces: FaceSource | undefined, log: (line: string) => void): Promise<boolean> {
  let model: tf.LayersModel;
  let bytes: Uint8Array;
  let metadata: ModelMetadata;
  if (pair.onnx === undefined) {
    const exported = await exportModelFolderInMemory({ modelDir: pair.modelDir });
    ({ model, bytes, metadata } = exported);
    log(`${metadata.task}: ${show(pair.modelDir)} vs its export in memory (opset ${metadata.opset})`);
  } else {
    const file = await readFile(pair.onnx).catch((error: Error) => {
      throw new Error(`Cannot read "${show(pair.onnx as string)}": ${error.message}; export it first with \`npm run export\``);
    });
    bytes = new Uint8Array(file.buffer, file.byteOffset, file.byteLength);
    metadata = readModelMetadata(bytes);
    const loaded = await loadTfjsModelFolder(pair.modelDir);
    model = loaded.model;
    log(`${metadata.task}: ${show(pair.modelDir)} vs ${show(pair.onnx)} (opset ${metadata.opset})`);
    if (loaded.sha256 !== metadata.source.sha256) {
      log(`  note: ${show(pair.onnx)} was exported from a different model (source sha256 ${metadata.source.sha256.slice(0, 12)}..., this folder ${loaded.sha256.slice(0, 12)}...)`);
    }
  }
  try {
    const { height, width, channels } = metadata.input;
    const size = height * width * channels;
    // The inputs, built once: random tensors, then real faces decoded and preprocessed as the server does.
    const inputs: { label: string; batches: Float32Array[] }[] = [];
    if (config.random > 0) inputs.push({ label: `random inputs ${config.random}`, batches: [randomValues(config.random * size, config.seed)] });
    if (faces !== undefined && 'skip' in faces) {
      log(`  real faces: skipped, ${faces.skip}`);
    } else if (faces !== undefined) {
      const read = await readFaces(faces.files, config.faces, metadata.input, log);
      inputs.push({ label: `UTKFace faces ${read.count}`, batches: read.batches });
    }
    let ok = true;
    // tfjs on the cpu backend is most of the time a check takes: its answers are computed once, for every runtime.
    const references = new Map<Float32Array, RunOutputs['tfjs']>();
    for (const runtime of config.runtimes) {
      const runner = await ONNX_RUNTIMES[runtime](bytes);
      try {
        if (config.runtimes.length > 1) log(`  ${runtime}:`);
        for (const { label, batches } of inputs) {
          const parts: OutputComparison[][] = [];
          for (const batch of batches) {
            const shape = [batch.length / size, height, width, channels];
            let reference = references.get(batch);
            if (reference === undefined) references.set(batch, (reference = predictTfjs(model, batch, shape)));
            parts.push(await compareModels(model, runner, batch, shape, metadata.outputs, reference));
          }
          for (const c of mergeComparisons(parts)) {
            log(formatComparison(label, c));
            if (!(c.maxAbsDiff <= config.tolerance) || (c.argmaxAgree !== undefined && c.argmaxAgree !== c.rows)) ok = false;
          }
        }
      } finally {
        await runner.release();
      }
    }
    log(ok ? `  ok (tolerance ${config.tolerance})` : `  FAILED (tolerance ${config.tolerance})`);
    return ok;
  } finally {
    model.dispose();
  }
}

/** One comparison per output over several batches. */
function mergeComparisons(parts: OutputComparison[][]): OutputComparison[] {
  return parts[0].map((first, i) => {
    const all = parts.map((p) => p[i]);
    const rows = all.reduce((n, c) => n + c.rows, 0);
    return {
      name: first.name,
      shape: [rows, ...first.shape.slice(1)],
      maxAbsDiff: Math.max(...all.map((c) => c.maxAbsDiff)),
      argmaxAgree: first.argmaxAgree === undefined ? undefined : all.reduce((n, c) => n + (c.argmaxAgree ?? 0), 0),
      rows,
    };
  });
}

export async function runCheck(config: CheckConfig, log: (line: string) => void = console.log): Promise<boolean> {
  // A --data folder that gives no faces is refused before any model is loaded (parseCheckArgs refuses --random 0
  // with --faces 0).
  const faces = config.faces > 0 ? await listFaces(config) : undefined;
  if (config.random === 0 && faces !== undefined && 'skip' in faces) throw new UsageError(`nothing to compare: --random is 0 and the faces are skipped (${faces.skip})`);
  // The cpu backend: exact reference arithmetic for parity, and no tfjs banner.
  await selectBackend('cpu', () => {});
  let ok = true;
  for (const pair of config.pairs) ok = (await checkPair(config, pair, faces, log)) && ok;
  return ok;
}

if (isMain(import.meta.url)) {
  runCli(USAGE, async (argv) => {
    const config = parseCheckArgs(argv);
    if (config === 'help') throw new UsageError('');
    if (!(await runCheck(config))) process.exitCode = 1;
  });
}
