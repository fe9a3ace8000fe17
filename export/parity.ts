/**
 * Runs a tfjs model and its ONNX export on the same inputs and says how far apart their outputs are.
 * Used by `npm run export:check`, by the exporter's self-check and by the tests.
 */
import * as tf from '@tensorflow/tfjs';
import { seededRandom } from '../node-shared/random.ts';
import * as ort from 'onnxruntime-node';
import type { OutputSpec } from '../contract/metadata.ts';

/** One ONNX runtime's session, reduced to what a parity check needs. */
export interface OnnxRunner {
  runtime: OnnxRuntimeName;
  inputNames: readonly string[];
  outputNames: readonly string[];
  /** runs the one input; outputs in `outputNames` order */
  run(input: Float32Array, shape: readonly number[]): Promise<{ type: string; dims: number[]; data: unknown }[]>;
  release(): Promise<void>;
}

export type OnnxRuntimeName = 'onnxruntime-node' | 'onnxruntime-web';

/** Session options both runtimes get: every graph optimization on, as the server and the browser run them. */
const SESSION_OPTIONS = { graphOptimizationLevel: 'all' } as const;

/** An onnxruntime-node session with every graph optimization on. */
export function createOnnxSession(bytes: Uint8Array): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(bytes, SESSION_OPTIONS);
}

async function nodeRunner(bytes: Uint8Array): Promise<OnnxRunner> {
  const session = await createOnnxSession(bytes);
  return {
    runtime: 'onnxruntime-node',
    inputNames: session.inputNames,
    outputNames: session.outputNames,
    run: async (input, shape) => {
      const results = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', input, [...shape]) });
      return session.outputNames.map((name) => ({ type: results[name].type, dims: [...results[name].dims], data: results[name].data }));
    },
    release: () => session.release(),
  };
}

/** onnxruntime-web's wasm backend, as a browser without WebGPU runs it (single-threaded under Node). */
async function webRunner(bytes: Uint8Array): Promise<OnnxRunner> {
  const web = await import('onnxruntime-web');
  web.env.wasm.numThreads = 1;
  const session = await web.InferenceSession.create(bytes, { ...SESSION_OPTIONS, executionProviders: ['wasm'] });
  return {
    runtime: 'onnxruntime-web',
    inputNames: session.inputNames,
    outputNames: session.outputNames,
    run: async (input, shape) => {
      const results = await session.run({ [session.inputNames[0]]: new web.Tensor('float32', input, [...shape]) });
      return session.outputNames.map((name) => ({ type: results[name].type, dims: [...results[name].dims], data: results[name].data }));
    },
    release: () => session.release(),
  };
}

export const ONNX_RUNTIMES: Readonly<Record<OnnxRuntimeName, (bytes: Uint8Array) => Promise<OnnxRunner>>> = {
  'onnxruntime-node': nodeRunner,
  'onnxruntime-web': webRunner,
};

export interface OutputComparison {
  name: string;
  /** the output's shape, identical in both runtimes (checked) */
  shape: number[];
  maxAbsDiff: number;
  /** rows whose predicted class is the same in both (sigmoid: the same side of 0.5); undefined for outputs without classes */
  argmaxAgree?: number;
  rows: number;
}

export interface RunOutputs {
  tfjs: { shape: number[]; values: Float32Array }[];
  onnx: { shape: number[]; values: Float32Array }[];
}

/** The tfjs model's outputs for one float32 NHWC batch: the reference each runtime is compared with. */
export function predictTfjs(model: tf.LayersModel, input: Float32Array, shape: readonly number[]): RunOutputs['tfjs'] {
  return tf.tidy(() => {
    const result = model.predict(tf.tensor(input, [...shape], 'float32'));
    return (Array.isArray(result) ? result : [result]).map((t) => ({ shape: t.shape, values: t.dataSync() as Float32Array }));
  });
}

/**
 * Runs both models on one float32 NHWC batch; throws if the ONNX outputs' count, dtype or shapes differ from tfjs'.
 * `reference`: the tfjs outputs for this batch where already computed (for another runtime, say).
 */
export async function runBoth(model: tf.LayersModel, runner: OnnxRunner, input: Float32Array, shape: readonly number[], reference?: RunOutputs['tfjs']): Promise<RunOutputs> {
  const tfOutputs = reference ?? predictTfjs(model, input, shape);
  if (runner.inputNames.length !== 1) throw new Error(`The ONNX model has ${runner.inputNames.length} inputs; expected 1`);
  if (runner.outputNames.length !== tfOutputs.length) throw new Error(`The ONNX model has ${runner.outputNames.length} outputs, tfjs ${tfOutputs.length}`);
  const results = await runner.run(input, shape);
  const onnxOutputs = results.map((tensor, i) => {
    const name = runner.outputNames[i];
    if (tensor.type !== 'float32' || !(tensor.data instanceof Float32Array)) throw new Error(`${runner.runtime}: output "${name}" is ${tensor.type}; expected float32`);
    if (tensor.dims.join(',') !== tfOutputs[i].shape.join(',')) {
      throw new Error(`${runner.runtime}: output "${name}" has shape [${tensor.dims.join(', ')}]; tfjs output ${i} has [${tfOutputs[i].shape.join(', ')}]`);
    }
    return { shape: tensor.dims, values: tensor.data };
  });
  return { tfjs: tfOutputs, onnx: onnxOutputs };
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`Cannot compare ${a.length} values with ${b.length}`);
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    // NaN on either side counts as an infinite difference.
    max = Number.isNaN(d) ? Infinity : Math.max(max, d);
  }
  return max;
}

function predictedClasses(values: Float32Array, rows: number, kind: OutputSpec['kind'] | undefined): number[] | undefined {
  const width = values.length / rows;
  if (kind === 'years') return undefined;
  if (width === 1) return Array.from(values, (p) => (p >= 0.5 ? 1 : 0));
  const classes: number[] = [];
  for (let r = 0; r < rows; r++) {
    let best = 0;
    for (let c = 1; c < width; c++) if (values[r * width + c] > values[r * width + best]) best = c;
    classes.push(best);
  }
  return classes;
}

/** Per output: the largest absolute difference and how many rows predict the same class. */
export async function compareModels(
  model: tf.LayersModel,
  runner: OnnxRunner,
  input: Float32Array,
  shape: readonly number[],
  outputs?: readonly OutputSpec[],
  reference?: RunOutputs['tfjs'],
): Promise<OutputComparison[]> {
  const run = await runBoth(model, runner, input, shape, reference);
  return run.onnx.map((out, i) => {
    const rows = out.shape[0];
    const kind = outputs?.[i]?.kind;
    const a = predictedClasses(run.tfjs[i].values, rows, kind);
    const b = predictedClasses(out.values, rows, kind);
    return {
      name: runner.outputNames[i],
      shape: out.shape,
      maxAbsDiff: maxAbsDiff(run.tfjs[i].values, out.values),
      argmaxAgree: a === undefined || b === undefined ? undefined : a.filter((v, r) => v === b[r]).length,
      rows,
    };
  });
}

/** Deterministic uniform [low, high) values (seeded), so a failing check can be rerun exactly. */
export function randomValues(count: number, seed: number, low = 0, high = 1): Float32Array {
  const random = seededRandom(seed);
  return Float32Array.from({ length: count }, () => low + (high - low) * random());
}
