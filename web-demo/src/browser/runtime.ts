/**
 * The onnxruntime-web adapter: the only file that touches onnxruntime-web. `webRuntime` is the `ModelRuntime`
 * contract/model-set.ts loads model sets with, as node-shared/onnxruntime-node.ts's is in Node.
 *
 * onnxruntime-web is not bundled: the build copies one prebuilt ort module per backend (and the WebAssembly
 * binary it loads) into `ort/`, and `loadRuntime` imports the one the page asked for from the page's own
 * origin. The WebGPU build is 26 MB, so a page that never asks for WebGPU never fetches it.
 */
import type * as Ort from 'onnxruntime-web';
import type { FloatTensor, ModelRuntime, Session, TensorInfo } from '../../../contract/model-set.ts';

export type Backend = 'wasm' | 'webgpu';
export const BACKENDS: readonly Backend[] = ['wasm', 'webgpu'];

/**
 * The files each backend needs from onnxruntime-web's dist/, the ort module first. The build copies exactly
 * these; ort loads the .mjs glue and the .wasm from `env.wasm.wasmPaths`.
 */
export const ORT_FILES: Readonly<Record<Backend, readonly string[]>> = {
  wasm: ['ort.wasm.min.mjs', 'ort-wasm-simd-threaded.mjs', 'ort-wasm-simd-threaded.wasm'],
  webgpu: ['ort.webgpu.min.mjs', 'ort-wasm-simd-threaded.asyncify.mjs', 'ort-wasm-simd-threaded.asyncify.wasm'],
};

export interface WebSession extends Session {
  readonly inner: Ort.InferenceSession;
}

export interface RuntimeInfo {
  backend: Backend;
  /** onnxruntime-web's version */
  version: string;
  /** WebAssembly threads onnxruntime got: 1 unless the page is cross-origin isolated */
  threads: number;
  crossOriginIsolated: boolean;
}

let ort: typeof Ort | undefined;
let loadedBackend: Backend | undefined;

/**
 * Imports the backend's ort build from `assetsUrl` (the folder holding ORT_FILES) and points ort at the same
 * folder for its .wasm, so nothing is fetched from anywhere else. Once per page: ort's WebAssembly settings
 * are fixed when its first session is created. `threads` 0 lets onnxruntime choose.
 */
export async function loadRuntime(backend: Backend, assetsUrl: string, threads = 0): Promise<void> {
  if (ort !== undefined) {
    if (loadedBackend !== backend) throw new Error(`onnxruntime-web is already loaded for "${loadedBackend}"; reload the page to use "${backend}"`);
    return;
  }
  const url = new URL(ORT_FILES[backend][0], assetsUrl).href;
  const module = (await import(url)) as typeof Ort;
  module.env.wasm.wasmPaths = assetsUrl;
  // 0 keeps onnxruntime's choice: half the cores, at most 4, and 1 where the page is not cross-origin isolated.
  if (threads > 0) module.env.wasm.numThreads = threads;
  module.env.logLevel = 'error';
  ort = module;
  loadedBackend = backend;
}

function loaded(): typeof Ort {
  if (ort === undefined) throw new Error('onnxruntime-web is not loaded; call loadRuntime first');
  return ort;
}

/** What the runtime ended up with; `threads` is final once a session exists. */
export function runtimeInfo(): RuntimeInfo {
  const module = loaded();
  return {
    backend: loadedBackend ?? 'wasm',
    version: module.env.versions.web ?? module.env.versions.common,
    threads: module.env.wasm.numThreads ?? 1,
    crossOriginIsolated: globalThis.crossOriginIsolated === true,
  };
}

function describe(metadata: readonly Ort.InferenceSession.ValueMetadata[]): TensorInfo[] {
  return metadata.map((value) => (value.isTensor ? { name: value.name, type: value.type, shape: [...value.shape] } : { name: value.name, type: 'non-tensor', shape: [] }));
}

export async function createSession(modelBytes: Uint8Array): Promise<WebSession> {
  const module = loaded();
  const inner = await module.InferenceSession.create(modelBytes, {
    executionProviders: loadedBackend === 'webgpu' ? ['webgpu', 'wasm'] : ['wasm'],
    graphOptimizationLevel: 'all',
    logSeverityLevel: 3,
  });
  return { inputs: describe(inner.inputMetadata), outputs: describe(inner.outputMetadata), inner };
}

export async function releaseSession(session: WebSession): Promise<void> {
  await session.inner.release();
}

/** Runs the model on float32 inputs and returns every output as float32. */
export async function run(session: WebSession, inputs: Record<string, FloatTensor>): Promise<Record<string, FloatTensor>> {
  const module = loaded();
  const feeds: Record<string, Ort.Tensor> = {};
  for (const [name, tensor] of Object.entries(inputs)) feeds[name] = new module.Tensor('float32', tensor.data, tensor.dims);
  const results = await session.inner.run(feeds);
  const outputs: Record<string, FloatTensor> = {};
  for (const [name, value] of Object.entries(results)) {
    if (value.type !== 'float32') throw new Error(`Output "${name}" is ${value.type}; expected float32`);
    // WebGPU outputs may live on the GPU; getData() downloads them (and is a copy-free view on wasm).
    outputs[name] = { data: (await value.getData()) as Float32Array, dims: value.dims };
    value.dispose();
  }
  return outputs;
}

/** onnxruntime-web as the model-set loader's runtime, on the backend `loadRuntime` loaded. */
export const webRuntime: ModelRuntime<WebSession> = { createSession, run, releaseSession };

/** The part of WebGPU used here (TypeScript's DOM library does not declare navigator.gpu). */
interface WebGpu {
  requestAdapter(): Promise<object | null>;
}

function webGpu(): WebGpu | undefined {
  return typeof navigator !== 'undefined' && 'gpu' in navigator ? (navigator.gpu as WebGpu | undefined) : undefined;
}

/** Whether this browser exposes WebGPU at all (an adapter may still be refused: see `webGpuAdapterAvailable`). */
export function webGpuAvailable(): boolean {
  return webGpu() !== undefined;
}

/** Whether WebGPU would give onnxruntime a GPU adapter here; without one its WebGPU build runs on the CPU. */
export async function webGpuAdapterAvailable(): Promise<boolean> {
  try {
    return (await webGpu()?.requestAdapter()) != null;
  } catch {
    return false;
  }
}
