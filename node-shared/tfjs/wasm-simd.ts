/**
 * Loads ./wasm-simd-kernels.wat (assembled into ./wasm-simd-binary.ts) onto the heap of a tfjs wasm
 * backend: the module imports the backend's WebAssembly.Memory, so its functions read and write tensors in
 * place, given their byte addresses (`heapAddress`).
 */
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { TensorInfo } from '@tensorflow/tfjs';
import { WASM_SIMD_KERNELS_BASE64 } from './wasm-simd-binary.ts';

/** The exports of wasm-simd-kernels.wat; see there for what each computes. Pointers are heap byte addresses. */
export interface SimdKernels {
  filterGradientRow(x: number, xStride: number, dy: number, count: number, channelsIn: number, channelsOut: number, acc: number): void;
  addColumnSums(x: number, rows: number, rowBytes: number, out: number): void;
  channelAffine(x: number, rows: number, rowBytes: number, shift: number, scale: number, offset: number, out: number): void;
  addRowProduct(input: number, inStride: number, out: number, outStride: number, count: number, k: number, channelsOut: number, w: number): void;
}

/** Vectors of this many floats: the SIMD loops need rows of a multiple of it. */
export const SIMD_FLOATS = 4;

/** One instance per backend (per heap); null where it could not be made (no wasm SIMD). */
const instances = new WeakMap<BackendWasm, SimdKernels | null>();

/** The kernels on this backend's heap, or undefined where this runtime cannot run them. */
export function simdKernels(backend: BackendWasm): SimdKernels | undefined {
  let kernels = instances.get(backend);
  if (kernels === undefined) {
    kernels = instantiate(backend);
    instances.set(backend, kernels);
  }
  return kernels ?? undefined;
}

function instantiate(backend: BackendWasm): SimdKernels | null {
  // the Emscripten module keeps the wasm instance's exports, its memory among them, as `asm`
  const memory = (backend.wasm as unknown as { asm?: { memory?: unknown } }).asm?.memory;
  if (!(memory instanceof WebAssembly.Memory)) return null;
  const bytes = Buffer.from(WASM_SIMD_KERNELS_BASE64, 'base64');
  if (!WebAssembly.validate(bytes)) return null; // a runtime without wasm SIMD
  const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } });
  return instance.exports as unknown as SimdKernels;
}

/** The byte address of a tensor's data in the wasm heap. */
export function heapAddress(backend: BackendWasm, tensor: TensorInfo): number {
  return backend.getMemoryOffset(tensor.dataId);
}
