/**
 * Chooses the TensorFlow.js backend at run time.
 *
 * Names, as `--backend` takes them, best first:
 * - `node-gpu`: @tensorflow/tfjs-node-gpu, libtensorflow with CUDA (tfjs backend "tensorflow")
 * - `node`:     @tensorflow/tfjs-node, libtensorflow on the CPU (tfjs backend "tensorflow")
 * - `wasm`:     @tensorflow/tfjs-backend-wasm (XNNPACK, one thread in Node) with our training kernels
 *               (./wasm-kernels.ts)
 * - `cpu`:      plain JavaScript, slow; always there
 *
 * The two libtensorflow packages are optional dependencies: their install downloads libtensorflow, which
 * works on real hosts and fails where there is no network, so they may be absent. Without a request (or
 * with `auto`) the best one that loads is taken, and one line says which and why each better one was not.
 */
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs';

export const BACKEND_NAMES = ['node-gpu', 'node', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

export interface SelectedBackend {
  name: BackendName;
  /** the tfjs backend name now active: "tensorflow", "wasm" or "cpu" */
  tfjsName: string;
  /** Why each better backend was not taken (auto), or ["requested"] for an explicit request. */
  reasons: string[];
}

/** How to load each backend; `packageName` is what the user would install. */
interface BackendEntry {
  tfjsName: string;
  packageName: string;
  load: () => Promise<void>;
  /** what to tell someone who asked for this backend and cannot have it */
  remedy: string;
}

const BACKENDS: Record<BackendName, BackendEntry> = {
  'node-gpu': {
    tfjsName: 'tensorflow',
    packageName: '@tensorflow/tfjs-node-gpu',
    load: () => importOptional('@tensorflow/tfjs-node-gpu'),
    remedy:
      'install it on a Linux x64 host with CUDA 11.2 and cuDNN 8.1 (`npm install @tensorflow/tfjs-node-gpu`, which downloads libtensorflow)',
  },
  node: {
    tfjsName: 'tensorflow',
    packageName: '@tensorflow/tfjs-node',
    load: () => importOptional('@tensorflow/tfjs-node'),
    remedy: 'install it on a host that can download libtensorflow (`npm install @tensorflow/tfjs-node`)',
  },
  wasm: {
    tfjsName: 'wasm',
    packageName: '@tensorflow/tfjs-backend-wasm',
    load: async () => {
      const { registerWasmTrainingKernels } = await import('./wasm-kernels.ts');
      registerWasmTrainingKernels();
    },
    remedy: 'reinstall the dependencies (`npm ci`)',
  },
  cpu: {
    tfjsName: 'cpu',
    packageName: '@tensorflow/tfjs-backend-cpu',
    load: async () => {},
    remedy: 'reinstall the dependencies (`npm ci`)',
  },
};

/**
 * Whether a backend's package is installed here. Only the optional tfjs-node packages can be absent; wasm and cpu
 * come with the dependencies.
 */
export function isBackendInstalled(name: BackendName): boolean {
  if (name === 'wasm' || name === 'cpu') return true;
  try {
    createRequire(import.meta.url).resolve(`${BACKENDS[name].packageName}/package.json`);
    return true;
  } catch {
    return false;
  }
}

/** Thrown when a package is absent, as opposed to present but failing to load. */
class NotInstalledError extends Error {
  override name = 'NotInstalledError';
}

async function importOptional(packageName: string): Promise<void> {
  try {
    // a string variable, so that TypeScript does not need the optional package's types to compile
    const specifier: string = packageName;
    await import(specifier);
  } catch (error) {
    const code = (error as { code?: string }).code;
    const message = error instanceof Error ? error.message : String(error);
    if ((code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') && message.includes(packageName)) {
      throw new NotInstalledError(`${packageName} is not installed`);
    }
    throw new Error(`${packageName} failed to load: ${firstLine(message)}`);
  }
}

function firstLine(text: string): string {
  return text.split('\n', 1)[0].trim();
}

/** Validates a backend name from a flag or the environment; `auto` means the best available. */
export function parseBackendName(value: string): BackendName | 'auto' {
  if (value === 'auto' || (BACKEND_NAMES as readonly string[]).includes(value)) return value as BackendName | 'auto';
  throw new Error(`Unsupported backend "${value}"; expected one of: auto, ${BACKEND_NAMES.join(', ')}`);
}

/**
 * Loads and activates a backend: `requested` if given (failing with what to do when it cannot run),
 * otherwise the best available. Logs one line with the choice and the reasons. Calling it again switches.
 * `flag` is the option the caller's program took the request from, named in the failure's advice.
 */
export async function selectBackend(
  requested: BackendName | 'auto' = 'auto',
  log: (line: string) => void = (line) => console.error(line),
  flag = '--backend',
): Promise<SelectedBackend> {
  const wanted = parseBackendName(requested);
  silenceCpuBanner();
  if (wanted !== 'auto') {
    const failure = await activate(wanted);
    if (failure !== undefined) {
      const entry = BACKENDS[wanted];
      const others = BACKEND_NAMES.filter((name) => name !== wanted).join(', ');
      // Only names the flags take: none of the CLIs takes "auto" (leaving the flag out means it).
      throw new Error(`Backend "${wanted}" is not available: ${failure}. To use it, ${entry.remedy}; or choose another ${flag}: ${others}`);
    }
    log(`backend: ${await describe(wanted)}, as requested`);
    return { name: wanted, tfjsName: tf.getBackend(), reasons: ['requested'] };
  }
  const reasons: string[] = [];
  for (const name of BACKEND_NAMES) {
    const failure = await activate(name);
    if (failure === undefined) {
      log(`backend: ${await describe(name)}${reasons.length > 0 ? `; better ones not taken: ${reasons.join('; ')}` : ''}`);
      return { name, tfjsName: tf.getBackend(), reasons };
    }
    reasons.push(failure);
  }
  throw new Error(`No TensorFlow.js backend could be started: ${reasons.join('; ')}`);
}

/** Loads and switches to a backend; returns why it could not, or undefined when it is active. */
async function activate(name: BackendName): Promise<string | undefined> {
  const entry = BACKENDS[name];
  try {
    await entry.load();
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
  if (tf.findBackendFactory(entry.tfjsName) == null) {
    return `${entry.packageName} loaded but registered no "${entry.tfjsName}" backend with this copy of @tensorflow/tfjs (a version mismatch?)`;
  }
  let started: boolean;
  try {
    started = await tf.setBackend(entry.tfjsName);
  } catch (error) {
    return `${entry.packageName} failed to start: ${firstLine(error instanceof Error ? error.message : String(error))}`;
  }
  return started && tf.getBackend() === entry.tfjsName ? undefined : `${entry.packageName} failed to start`;
}

async function describe(name: BackendName): Promise<string> {
  const entry = BACKENDS[name];
  if (name === 'wasm') {
    const { getThreadsCount } = await import('@tensorflow/tfjs-backend-wasm');
    const simd = (await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT')) ? 'SIMD' : 'no SIMD';
    const threads = getThreadsCount();
    return `wasm (${entry.packageName}, ${simd}, ${threads} thread${threads === 1 ? '' : 's'}, with our training kernels)`;
  }
  return `${name} (${entry.packageName})`;
}

/**
 * The cpu backend prints "Hi, looks like you are running TensorFlow.js in Node.js..." on its first use,
 * advice our own log line already gives. Its only switch is PROD mode, which would also hide every other
 * tfjs warning, so we mark the banner as shown instead.
 */
function silenceCpuBanner(): void {
  if (tf.findBackendFactory('cpu') == null) return;
  const cpu = tf.findBackend('cpu') as unknown as { firstUse?: boolean } | null;
  if (cpu !== null && typeof cpu.firstUse === 'boolean') cpu.firstUse = false;
}
