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
import { readdir, readFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../training/backend/select.ts';
import { decodeImage } from '../models/spec/decode.ts';
import { TASKS } from '../models/spec/labels.ts';
import { readModelMetadata, type ModelMetadata } from '../models/spec/metadata.ts';
import { preprocess } from '../models/spec/preprocess.ts';
import { DEFAULT_MODELS, DEFAULT_RUNS, DEFAULT_UTKFACE, isMain, parsePositiveNumber, parseWholeNumber, runCli, UsageError } from './args.ts';
import { exportModelFolderInMemory } from './export-model.ts';
import { compareModels, ONNX_RUNTIMES, randomValues, type OnnxRuntimeName, type OutputComparison } from './parity.ts';
import { loadTfjsModelFolder } from './tfjs-model.ts';

const USAGE = `Usage:
  npm run export:check -- [--all] [--runs DIR] [--models DIR]   each task's run model vs models/<task>.onnx
  npm run export:check -- --model DIR [--onnx FILE]             one model (exported in memory without --onnx)

Options:
  --runs DIR       the training run for --all                                  (default: runs/latest)
  --models DIR     where the .onnx files are for --all                           (default: models)
  --random N       random inputs, uniform in [0, 1)                                   (default: 16)
  --faces N        real faces from the UTKFace folder, 0 for none                     (default: 256)
  --data DIR       the UTKFace folder                            (default: ../shared/data/utkface)
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
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) return 'help';
  const common = {
    random: parseWholeNumber('--random', values.random ?? '16', 0),
    faces: parseWholeNumber('--faces', values.faces ?? '256', 0),
    data: resolve(values.data ?? DEFAULT_UTKFACE),
    tolerance: parsePositiveNumber('--tolerance', values.tolerance ?? '1e-4'),
    seed: parseWholeNumber('--seed', values.seed ?? '1', 0),
    runtimes: values.web ? (['onnxruntime-node', 'onnxruntime-web'] as OnnxRuntimeName[]) : (['onnxruntime-node'] as OnnxRuntimeName[]),
  };
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

/** Seeded choice of `count` face files (sorted first, so the sample does not depend on directory order). */
async function sampleFaces(dir: string, count: number, seed: number): Promise<string[] | undefined> {
  const names = await readdir(dir).catch(() => undefined);
  if (names === undefined) return undefined;
  const images = names.filter((n) => /\.(jpe?g|png)$/i.test(n)).sort();
  const keys = randomValues(images.length, seed + 1);
  const order = images.map((_, i) => i).sort((a, b) => keys[a] - keys[b]);
  return order.slice(0, count).map((i) => join(dir, images[i]));
}

/** Checks one pair; returns whether it passed. */
async function checkPair(config: CheckConfig, pair: CheckConfig['pairs'][number], log: (line: string) => void): Promise<boolean> {
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
    if (config.faces > 0) {
      const files = await sampleFaces(config.data, config.faces, config.seed);
      if (files === undefined || files.length === 0) {
        log(`  real faces: skipped, no images in "${show(config.data)}" (pass --data DIR)`);
      } else {
        const batches: Float32Array[] = [];
        for (let start = 0; start < files.length; start += FACE_BATCH) {
          const batch = files.slice(start, start + FACE_BATCH);
          const input = new Float32Array(batch.length * size);
          for (let i = 0; i < batch.length; i++) {
            const pixels = await decodeImage(new Uint8Array(await readFile(batch[i])));
            input.set(preprocess(pixels, metadata.input), i * size);
          }
          batches.push(input);
        }
        inputs.push({ label: `UTKFace faces ${files.length}`, batches });
      }
    }
    let ok = true;
    for (const runtime of config.runtimes) {
      const runner = await ONNX_RUNTIMES[runtime](bytes);
      try {
        if (config.runtimes.length > 1) log(`  ${runtime}:`);
        for (const { label, batches } of inputs) {
          const parts: OutputComparison[][] = [];
          for (const batch of batches) parts.push(await compareModels(model, runner, batch, [batch.length / size, height, width, channels], metadata.outputs));
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
  // The cpu backend: exact reference arithmetic for parity, and no tfjs banner.
  await selectBackend('cpu', () => {});
  let ok = true;
  for (const pair of config.pairs) ok = (await checkPair(config, pair, log)) && ok;
  return ok;
}

if (isMain(import.meta.url)) {
  runCli(USAGE, async (argv) => {
    const config = parseCheckArgs(argv);
    if (config === 'help') throw new UsageError('');
    if (!(await runCheck(config))) process.exitCode = 1;
  });
}
