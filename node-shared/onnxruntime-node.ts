/**
 * The onnxruntime-node adapter: the only file that imports onnxruntime-node. The server, training's evaluation
 * and the benches call `nodeRuntime(options)` (the `ModelRuntime` contract/model-set.ts loads model sets with),
 * or `createSession(modelBytes, options)` and `run(session, inputs)` with plain typed arrays.
 */
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import type { FloatTensor, ModelRuntime, Session, TensorInfo } from '../contract/model-set.ts';

export type { FloatTensor, TensorInfo } from '../contract/model-set.ts';

export type Provider = 'cpu' | 'cuda';

export interface SessionOptions {
  provider: Provider;
  /** Intra-op threads; onnxruntime's default (one per core, spinning) would starve the decode threads. */
  threads: number;
}

export interface NodeSession extends Session {
  readonly provider: Provider;
  readonly inner: ort.InferenceSession;
}

export const RUNTIME_NAME = `onnxruntime-node ${ort.env.versions.node ?? ort.env.versions.common}`;

function describe(metadata: readonly ort.InferenceSession.ValueMetadata[]): TensorInfo[] {
  return metadata.map((value) => (value.isTensor ? { name: value.name, type: value.type, shape: [...value.shape] } : { name: value.name, type: 'non-tensor', shape: [] }));
}

export async function createSession(modelBytes: Uint8Array, options: SessionOptions): Promise<NodeSession> {
  const inner = await ort.InferenceSession.create(modelBytes, {
    executionProviders: [options.provider],
    intraOpNumThreads: options.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    logSeverityLevel: 3,
    extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
  });
  return { provider: options.provider, inputs: describe(inner.inputMetadata), outputs: describe(inner.outputMetadata), inner };
}

/** Runs the model on float32 inputs and returns every output as float32. */
export async function run(session: NodeSession, inputs: Record<string, FloatTensor>): Promise<Record<string, FloatTensor>> {
  const feeds: Record<string, ort.Tensor> = {};
  for (const [name, tensor] of Object.entries(inputs)) feeds[name] = new ort.Tensor('float32', tensor.data, tensor.dims);
  const results = await session.inner.run(feeds);
  const outputs: Record<string, FloatTensor> = {};
  for (const [name, value] of Object.entries(results)) {
    if (value.type !== 'float32') throw new Error(`Output "${name}" is ${value.type}; expected float32`);
    outputs[name] = { data: value.data as Float32Array, dims: value.dims };
  }
  return outputs;
}

export async function releaseSession(session: NodeSession): Promise<void> {
  await session.inner.release();
}

/** onnxruntime-node as the model-set loader's runtime, every session on `options`' provider and threads. */
export function nodeRuntime(options: SessionOptions): ModelRuntime<NodeSession> {
  return { createSession: (modelBytes) => createSession(modelBytes, options), run, releaseSession };
}

/**
 * Whether the CUDA provider's binaries are installed next to onnxruntime-node's binding; the npm package ships
 * only the CPU ones, and `npm run setup:cuda` fetches the rest. Returns why not, or undefined when present.
 */
export function missingCudaBinaries(): string | undefined {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    return `onnxruntime-node has a CUDA provider only on linux/x64; this host is ${process.platform}/${process.arch}`;
  }
  const packageDir = dirname(dirname(createRequire(import.meta.url).resolve('onnxruntime-node')));
  const binDir = join(packageDir, 'bin');
  const napiDirs = existsSync(binDir) ? readdirSync(binDir).filter((name) => name.startsWith('napi-v')) : [];
  const found = napiDirs.some((napi) => existsSync(join(binDir, napi, 'linux', 'x64', 'libonnxruntime_providers_cuda.so')));
  return found ? undefined : 'libonnxruntime_providers_cuda.so is not installed in node_modules/onnxruntime-node (the npm package ships CPU binaries only)';
}
