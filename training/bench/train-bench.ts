/**
 * npm run bench:train [-- --backends node-gpu,node,wasm,cpu] [--model seed-age|residual|multitask] [--seconds N]
 *                         [--wasm-kernels fast|reference] [--profile]
 *
 * Training throughput on random images, one JSON line per backend on stdout:
 * {"backend":"wasm","model":"seed-age","imgPerSec":...,...}. Models: the seed age model (the coursework's,
 * batch 128), or `residual`, the residual preset's age network as training runs it (residual-48: a small
 * ResNet with widths 16, 32 and 64, batch normalization, stride-2 downsampling, global average pooling, logits
 * over every age; batch 64), or `multitask`, the multitask preset's shared network on 64x64 colour faces (three
 * heads) at one replica's share of a batch (64 of 128: training runs one replica per core). Each backend runs in its own process, one after the other, so that none disturbs
 * another's state or timing.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { SEED_INPUT } from '../../contract/preprocess.ts';
import { BACKEND_NAMES, isBackendInstalled, selectBackend, type BackendName } from '../../node-shared/tfjs/select.ts';
import { registerWasmTrainingKernels, type WasmKernelSet } from '../../node-shared/tfjs/wasm-kernels.ts';
import { parseChoice, runCli, UsageError } from '../../node-shared/cli-args.ts';
import { TASKS, taskLabels, type Task } from '../../contract/labels.ts';
import { MULTITASK_TRAINING } from '../fit-multitask.ts';
import { RESIDUAL_TRAINING } from '../fit-residual.ts';
import { AGE_BINS, buildMultitaskModels, buildResidualModels } from '../models/residual.ts';
import { buildSeedModel, SEED_TRAINING } from '../models/seed.ts';

const USAGE = `Usage: npm run bench:train -- [options]

Options:
  --backends LIST      comma-separated, from: ${BACKEND_NAMES.join(', ')}
                       (default: those installed; node-gpu and node only where tfjs-node is)
  --model M            seed-age: the seed age model, batch 128; residual: residual-48, batch 64;
                       multitask: multitask-64 (64x64x3, three heads), batch 64 = one replica's share
                       (default: seed-age)
  --seconds N          time spent measuring each backend after a warm-up step      (default: 10)
                       (at least 2 steps are measured, however long they take)
  --wasm-kernels K     fast: our training kernels; reference: the stock wasm kernels (default: fast)
  --profile            add the median time per step of each kernel (tf.profile) to the JSON line
  --help               this text`;

const WASM_KERNEL_SETS = ['fast', 'reference'] as const;
const MODEL_OPTIONS = ['seed-age', 'residual', 'multitask'] as const;
type ModelOption = (typeof MODEL_OPTIONS)[number];
/** The model name each --model prints. */
const MODEL_NAMES = { 'seed-age': 'seed-age', residual: 'residual-48', multitask: 'multitask-64' } as const;
const AGE_CLASSES = 6;
const MIN_STEPS = 2;

interface BenchConfig {
  backends: BackendName[];
  model: ModelOption;
  seconds: number;
  wasmKernels: WasmKernelSet;
  profile: boolean;
}

/** One JSON line of output. */
interface BenchResult {
  backend: BackendName;
  model: (typeof MODEL_NAMES)[ModelOption];
  imgPerSec: number;
  batchSize: number;
  steps: number;
  seconds: number;
  wasmKernels?: WasmKernelSet;
  /** median milliseconds per training step spent in each kernel, largest first */
  kernelMs?: Record<string, number>;
}

function parseBenchArgs(argv: string[]): BenchConfig {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      backends: { type: 'string' },
      model: { type: 'string', default: 'seed-age' },
      seconds: { type: 'string', default: '10' },
      'wasm-kernels': { type: 'string', default: 'fast' },
      profile: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) throw new UsageError('');
  const seconds = Number(values.seconds);
  if (!Number.isFinite(seconds) || seconds <= 0) throw new UsageError(`--seconds must be a positive number; got "${values.seconds}"`);
  const backends =
    values.backends === undefined
      ? BACKEND_NAMES.filter(isBackendInstalled)
      : values.backends.split(',').map((name) => parseChoice('--backends', name.trim(), BACKEND_NAMES));
  if (backends.length === 0) throw new UsageError('--backends lists no backend');
  return {
    backends: [...new Set(backends)],
    model: parseChoice('--model', values.model ?? 'seed-age', MODEL_OPTIONS),
    seconds,
    wasmKernels: parseChoice('--wasm-kernels', values['wasm-kernels'] ?? 'fast', WASM_KERNEL_SETS),
    profile: values.profile ?? false,
  };
}

/** A model compiled for training, with a batch of random images and labels for it. */
interface BenchModel {
  model: tf.LayersModel;
  batchSize: number;
  images: tf.Tensor;
  labels: tf.Tensor[];
}

function makeBenchModel(option: ModelOption): BenchModel {
  const { height, width, channels } = SEED_INPUT;
  if (option === 'seed-age') {
    const batchSize = SEED_TRAINING.age.batchSize;
    return {
      model: buildSeedModel('age', AGE_CLASSES, 1),
      batchSize,
      images: tf.randomUniform([batchSize, height, width, channels], 0, 1, 'float32', 1),
      labels: [tf.tidy(() => tf.floor(tf.randomUniform([batchSize], 0, AGE_CLASSES, 'float32', 2)))],
    };
  }
  if (option === 'multitask') {
    // The multitask preset's network; each replica trains on its share of the batch.
    const batchSize = MULTITASK_TRAINING.batchSize / 2;
    const { input } = MULTITASK_TRAINING.architecture;
    const labelsByTask = Object.fromEntries(TASKS.map((task) => [task, taskLabels(task)])) as Record<Task, string[]>;
    const model = buildMultitaskModels(labelsByTask, MULTITASK_TRAINING.architecture, 'coursework', 1).train;
    model.compile({
      optimizer: tf.train.momentum(0.1, 0.9, true),
      loss: [
        (targets: tf.Tensor, logits: tf.Tensor) => tf.losses.softmaxCrossEntropy(targets, logits),
        (targets: tf.Tensor, logits: tf.Tensor) => tf.losses.softmaxCrossEntropy(targets, logits),
        (targets: tf.Tensor, logits: tf.Tensor) => tf.losses.sigmoidCrossEntropy(targets, logits),
      ],
    });
    return {
      model,
      batchSize,
      images: tf.randomUniform([batchSize, input.height, input.width, input.channels], 0, 1, 'float32', 1),
      labels: tf.tidy(() => [
        tf.oneHot(tf.randomUniform([batchSize], 0, AGE_BINS, 'int32', 2), AGE_BINS).toFloat(),
        tf.oneHot(tf.randomUniform([batchSize], 0, labelsByTask.ethnicity.length, 'int32', 3), labelsByTask.ethnicity.length).toFloat(),
        tf.randomUniform([batchSize, 1], 0, 1, 'float32', 4).round(),
      ]),
    };
  }
  // The residual preset's own network, as training runs it: the age model (logits over every age) at batch 64.
  const { batchSize, architecture } = RESIDUAL_TRAINING;
  const model = buildResidualModels('age', taskLabels('age'), architecture, 'coursework', 1).train;
  model.compile({ optimizer: tf.train.momentum(0.05, 0.9, true), loss: (targets: tf.Tensor, logits: tf.Tensor) => tf.losses.softmaxCrossEntropy(targets, logits) });
  return {
    model,
    batchSize,
    images: tf.randomUniform([batchSize, height, width, channels], 0, 1, 'float32', 1),
    labels: [tf.tidy(() => tf.oneHot(tf.randomUniform([batchSize], 0, AGE_BINS, 'int32', 2), AGE_BINS).toFloat())],
  };
}

/** Trains the chosen model on one backend in this process and returns its throughput. */
async function benchBackend(backend: BackendName, config: BenchConfig): Promise<BenchResult> {
  await selectBackend(backend, (line) => console.error(line), '--backends');
  if (backend === 'wasm') registerWasmTrainingKernels(config.wasmKernels);
  const { model, batchSize, images, labels } = makeBenchModel(config.model);
  const step = async (): Promise<void> => {
    await model.trainOnBatch(images, labels.length === 1 ? labels[0] : labels); // resolves once the loss is read back: the step is done
  };

  await step(); // warm-up: kernel setup, optimizer state, XNNPACK operators
  let steps = 0;
  const started = performance.now();
  while (steps < MIN_STEPS || performance.now() - started < config.seconds * 1000) {
    await step();
    steps++;
  }
  const seconds = (performance.now() - started) / 1000;
  const result: BenchResult = {
    backend,
    model: MODEL_NAMES[config.model],
    imgPerSec: round((steps * batchSize) / seconds, 1),
    batchSize,
    steps,
    seconds: round(seconds, 2),
  };
  if (backend === 'wasm') result.wasmKernels = config.wasmKernels;
  if (config.profile) result.kernelMs = await profileKernels(step, backend === 'cpu' ? 1 : 5);
  model.dispose();
  tf.dispose([images, ...labels]);
  return result;
}

/** Median time per step of each kernel over `steps` profiled steps. */
async function profileKernels(step: () => Promise<void>, steps: number): Promise<Record<string, number>> {
  const perKernel = new Map<string, number[]>();
  for (let i = 0; i < steps; i++) {
    const profile = await tf.profile(step);
    const totals = new Map<string, number>();
    for (const kernel of profile.kernels) {
      // kernelTimeMs is a number, or an {error} object on backends that cannot time kernels
      const ms = typeof kernel.kernelTimeMs === 'number' ? kernel.kernelTimeMs : 0;
      totals.set(kernel.name, (totals.get(kernel.name) ?? 0) + ms);
    }
    for (const [name, ms] of totals) perKernel.set(name, [...(perKernel.get(name) ?? []), ms]);
  }
  const medians = [...perKernel].map(([name, times]) => [name, median(times, steps)] as const);
  medians.sort((a, b) => b[1] - a[1]);
  return Object.fromEntries(medians.filter(([, ms]) => ms >= 0.05).map(([name, ms]) => [name, round(ms, 2)]));
}

/** Median over `count` samples, where kernels missing from a sample ran 0 ms in it. */
function median(values: number[], count: number): number {
  const all = [...values, ...new Array<number>(count - values.length).fill(0)].sort((a, b) => a - b);
  return all[Math.floor(all.length / 2)];
}

function round(value: number, digits: number): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

/** Runs one backend in a child process (this program with --backends X); resolves to its JSON line. */
function benchInChild(backend: BackendName, argv: string[]): Promise<BenchResult> {
  const args = withoutFlag(argv, '--backends');
  return new Promise((resolveResult, reject) => {
    const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), ...args, '--backends', backend], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let stdout = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => (stdout += chunk));
    child.on('error', reject);
    child.on('exit', (code) => {
      const line = stdout.trim().split('\n').pop() ?? '';
      if (code !== 0 || line === '') {
        reject(new Error(`the ${backend} benchmark failed (exit code ${code}); its messages are above`));
        return;
      }
      resolveResult(JSON.parse(line) as BenchResult);
    });
  });
}

function withoutFlag(argv: string[], flag: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === flag) i++;
    else if (!argv[i].startsWith(`${flag}=`)) out.push(argv[i]);
  }
  return out;
}

async function main(argv: string[]): Promise<void> {
  const config = parseBenchArgs(argv);
  if (config.backends.length === 1) {
    console.log(JSON.stringify(await benchBackend(config.backends[0], config)));
    return;
  }
  const results: BenchResult[] = [];
  const failed: string[] = [];
  for (const backend of config.backends) {
    try {
      const result = await benchInChild(backend, argv);
      console.log(JSON.stringify(result));
      results.push(result);
    } catch (error) {
      console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
      failed.push(backend);
    }
  }
  const cpu = results.find((r) => r.backend === 'cpu');
  if (cpu !== undefined) {
    for (const r of results) {
      if (r !== cpu) console.error(`${r.backend}: ${round(r.imgPerSec / cpu.imgPerSec, 1)}x the cpu backend`);
    }
  }
  if (failed.length > 0) throw new Error(`the benchmark failed for: ${failed.join(', ')}`);
}

runCli(USAGE, main);
