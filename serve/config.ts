/**
 * The server's one typed config: every option has a flag, an environment variable and a documented default,
 * and is validated at start-up. Unknown flags, unknown SERVE_* variables and wrong types are errors that name the key.
 */
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { DEFAULT_MAX_PIXELS, DEFAULT_MIN_IMAGE_SIDE } from '../contract/limits.ts';
import { REPO_ROOT } from '../node-shared/paths.ts';

export type Device = 'auto' | 'cpu' | 'cuda';
export type MergeMode = 'auto' | 'off';
export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

export interface ServeConfig {
  port: number;
  /** The address to listen on: loopback by default; '' or 0.0.0.0 listens on every interface (a container's choice). */
  host: string;
  modelsDir: string;
  webDemoDir: string;
  device: Device;
  /** auto: models that read the same input run as one merged graph, their shared layers computed once; off: a session per model. */
  mergeModels: MergeMode;
  /** Processes sharing the port (node:cluster); 1 runs in this process. */
  workers: number;
  /** Decode threads per process; 0 means one per core divided among the processes. */
  decodeThreads: number;
  /** onnxruntime intra-op threads per session. */
  inferenceThreads: number;
  maxBatch: number;
  batchWaitMs: number;
  /** Images admitted and not yet answered, per process; beyond it requests get 503 with Retry-After. */
  maxQueue: number;
  requestTimeoutMs: number;
  maxBodyBytes: number;
  maxPixels: number;
  minImageSide: number;
  maxBatchImages: number;
  shutdownTimeoutMs: number;
  logLevel: LogLevel;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

type Kind =
  | { type: 'int'; min: number; max: number }
  | { type: 'string' }
  | { type: 'path' }
  | { type: 'enum'; values: readonly string[] };

interface OptionSpec {
  flag: string;
  env: string;
  kind: Kind;
  default: string | number;
  doc: string;
}

const INT_MAX = 2 ** 31 - 1;
const int = (min: number, max = INT_MAX): Kind => ({ type: 'int', min, max });

/** The options, declared once: flags, environment variables, parsing and `--help` all come from this table. */
export const OPTIONS: { readonly [K in keyof ServeConfig]: OptionSpec } = {
  port: { flag: '--port', env: 'PORT', kind: int(0, 65535), default: 3000, doc: 'TCP port (0 picks a free one)' },
  host: {
    flag: '--host',
    env: 'HOST',
    kind: { type: 'string' },
    // Loopback unless told otherwise: a developer's server is not offered to the network by surprise.
    default: '127.0.0.1',
    doc: 'address to listen on: 127.0.0.1 = this machine only; 0.0.0.0 (or ::, or "") = every interface, as in a container',
  },
  modelsDir: { flag: '--models', env: 'SERVE_MODELS_DIR', kind: { type: 'path' }, default: resolve(REPO_ROOT, 'models'), doc: 'folder with age.onnx, ethnicity.onnx, gender.onnx and manifest.json' },
  webDemoDir: { flag: '--web-demo', env: 'SERVE_WEB_DEMO_DIR', kind: { type: 'path' }, default: resolve(REPO_ROOT, 'web-demo', 'dist'), doc: 'static web demo served at /' },
  device: { flag: '--device', env: 'SERVE_DEVICE', kind: { type: 'enum', values: ['auto', 'cpu', 'cuda'] }, default: 'auto', doc: 'execution provider: auto tries CUDA, then CPU' },
  mergeModels: { flag: '--merge-models', env: 'SERVE_MERGE_MODELS', kind: { type: 'enum', values: ['auto', 'off'] }, default: 'auto', doc: 'auto: run models that read the same input as one graph (shared layers once); off: a session each' },
  workers: { flag: '--workers', env: 'SERVE_WORKERS', kind: int(1, 256), default: 1, doc: 'processes sharing the port (node:cluster)' },
  decodeThreads: { flag: '--decode-threads', env: 'SERVE_DECODE_THREADS', kind: int(0, 256), default: 0, doc: 'image decode threads per process; 0 = cores / workers' },
  inferenceThreads: { flag: '--inference-threads', env: 'SERVE_INFERENCE_THREADS', kind: int(1, 256), default: 1, doc: 'onnxruntime intra-op threads per session (a model, or models merged into one graph)' },
  maxBatch: { flag: '--max-batch', env: 'SERVE_MAX_BATCH', kind: int(1, 1024), default: 32, doc: 'most images in one onnxruntime run' },
  batchWaitMs: { flag: '--batch-wait-ms', env: 'SERVE_BATCH_WAIT_MS', kind: int(0, 1000), default: 1, doc: 'longest wait for a batch to fill' },
  maxQueue: { flag: '--max-queue', env: 'SERVE_MAX_QUEUE', kind: int(1, 100_000), default: 32, doc: 'images in progress per process before 503' },
  requestTimeoutMs: { flag: '--timeout-ms', env: 'SERVE_TIMEOUT_MS', kind: int(100, 600_000), default: 10_000, doc: 'per-request time limit, upload included' },
  maxBodyBytes: { flag: '--max-body-bytes', env: 'SERVE_MAX_BODY_BYTES', kind: int(1024), default: 10 * 1024 * 1024, doc: 'largest request body (413 beyond)' },
  maxPixels: { flag: '--max-pixels', env: 'SERVE_MAX_PIXELS', kind: int(1), default: DEFAULT_MAX_PIXELS, doc: 'largest width x height, read from the image header (413 beyond)' },
  minImageSide: { flag: '--min-image-side', env: 'SERVE_MIN_IMAGE_SIDE', kind: int(1, 65535), default: DEFAULT_MIN_IMAGE_SIDE, doc: 'smallest width or height accepted (422 below)' },
  maxBatchImages: { flag: '--max-batch-images', env: 'SERVE_MAX_BATCH_IMAGES', kind: int(1, 1024), default: 32, doc: 'most images in one /v1/predict/batch request; at most --max-queue (a smaller --max-queue lowers the default to match)' },
  shutdownTimeoutMs: { flag: '--shutdown-timeout-ms', env: 'SERVE_SHUTDOWN_TIMEOUT_MS', kind: int(0, 600_000), default: 15_000, doc: 'longest wait for requests in flight after SIGTERM' },
  logLevel: { flag: '--log-level', env: 'SERVE_LOG_LEVEL', kind: { type: 'enum', values: ['error', 'warn', 'info', 'debug'] }, default: 'info', doc: 'least severe log line printed' },
};

const KEYS = Object.keys(OPTIONS) as (keyof ServeConfig)[];
const ENV_PREFIX = 'SERVE_';

function parseValue(key: keyof ServeConfig, raw: string, source: string): string | number {
  const { kind } = OPTIONS[key];
  switch (kind.type) {
    case 'int': {
      const value = Number(raw.trim());
      if (raw.trim() === '' || !Number.isInteger(value) || value < kind.min || value > kind.max) {
        throw new ConfigError(`${source} must be a whole number from ${kind.min} to ${kind.max}; got "${raw}"`);
      }
      return value;
    }
    case 'enum':
      if (!kind.values.includes(raw)) throw new ConfigError(`Unsupported ${source} "${raw}"; expected one of: ${kind.values.join(', ')}`);
      return raw;
    case 'path':
      if (raw === '') throw new ConfigError(`${source} must not be empty`);
      return resolve(raw);
    case 'string':
      return raw;
  }
}

/**
 * Builds the config from command-line arguments (after the script name) and the environment.
 * Flags win over environment variables, which win over defaults. `--help` is handled by the caller.
 */
export function loadConfig(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): ServeConfig {
  const values = new Map<keyof ServeConfig, string | number>();
  for (const key of KEYS) values.set(key, OPTIONS[key].default);

  const knownEnv = new Set(KEYS.map((key) => OPTIONS[key].env));
  for (const name of Object.keys(env)) {
    if (name.startsWith(ENV_PREFIX) && !knownEnv.has(name)) {
      throw new ConfigError(`Unknown environment variable ${name}; expected one of: ${[...knownEnv].filter((n) => n.startsWith(ENV_PREFIX)).join(', ')}`);
    }
  }
  /** where each option not left at its default was set: its flag or its environment variable */
  const setBy = new Map<keyof ServeConfig, string>();
  for (const key of KEYS) {
    const raw = env[OPTIONS[key].env];
    if (raw === undefined) continue;
    values.set(key, parseValue(key, raw, OPTIONS[key].env));
    setBy.set(key, OPTIONS[key].env);
  }

  const byFlag = new Map(KEYS.map((key) => [OPTIONS[key].flag, key]));
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const eq = arg.indexOf('=');
    const flag = eq === -1 ? arg : arg.slice(0, eq);
    const key = byFlag.get(flag);
    if (key === undefined) {
      const what = arg.startsWith('-') ? `option ${flag}` : `argument "${arg}"`;
      throw new ConfigError(`Unknown ${what}; expected one of: ${[...byFlag.keys()].join(', ')}, --help`);
    }
    let raw: string;
    if (eq !== -1) raw = arg.slice(eq + 1);
    else if (i + 1 < argv.length) raw = argv[++i];
    else throw new ConfigError(`Option ${flag} needs a value`);
    values.set(key, parseValue(key, raw, flag));
    setBy.set(key, flag);
  }

  // Every key of OPTIONS is in `values`, each parsed to its kind's type above: the object is a ServeConfig.
  const config = Object.fromEntries(values) as unknown as ServeConfig;
  // A batch is admitted to the queue as a whole: one larger than the queue would be told to retry forever.
  if (config.maxBatchImages > config.maxQueue) {
    const batchSetBy = setBy.get('maxBatchImages');
    if (batchSetBy === undefined) config.maxBatchImages = config.maxQueue;
    else throw new ConfigError(`${batchSetBy} (${config.maxBatchImages}) must not exceed ${setBy.get('maxQueue') ?? OPTIONS.maxQueue.flag} (${config.maxQueue}): a batch that large could never be admitted`);
  }
  if (config.decodeThreads === 0) config.decodeThreads = Math.max(1, Math.floor(availableParallelism() / config.workers));
  return config;
}

/** The `--help` text, generated from the option table. */
export function helpText(): string {
  const rows = KEYS.map((key) => {
    const { flag, env, default: value, doc, kind } = OPTIONS[key];
    const choices = kind.type === 'enum' ? ` (${kind.values.join('|')})` : '';
    const shown = typeof value === 'string' && value.startsWith(REPO_ROOT) ? value.slice(REPO_ROOT.length + 1) : JSON.stringify(value);
    return `  ${flag.padEnd(22)} ${env.padEnd(26)} ${doc}${choices}; default ${shown}`;
  });
  return ['Usage: npm start -- [options]   (each option can also be set by its environment variable)', '', ...rows, ''].join('\n');
}
