/**
 * The page's one config object, read from its URL query (`?backend=webgpu&threads=2`) and validated at
 * start-up: an unknown key or a wrong value is an error that names it and what is allowed.
 */
import { BACKENDS, type Backend } from './runtime.ts';

export interface PageConfig {
  /** onnxruntime-web backend: `wasm` (default) or `webgpu` (where the browser has navigator.gpu) */
  backend: Backend;
  /** WebAssembly threads; 0 (default) lets onnxruntime choose (half the cores, at most 4; 1 without cross-origin isolation) */
  threads: number;
  /** where the models and manifest.json are, relative to the page; default `models/` */
  models: string;
}

export const DEFAULT_PAGE_CONFIG: Readonly<PageConfig> = { backend: 'wasm', threads: 0, models: 'models/' };

export class PageConfigError extends Error {
  override name = 'PageConfigError';
}

const MAX_THREADS = 64;

/** The config from a URL query string; throws `PageConfigError` naming the key at fault. */
export function readPageConfig(search: string): PageConfig {
  const config: PageConfig = { ...DEFAULT_PAGE_CONFIG };
  const known = Object.keys(DEFAULT_PAGE_CONFIG);
  for (const [key, value] of new URLSearchParams(search)) {
    switch (key) {
      case 'backend':
        if (!(BACKENDS as readonly string[]).includes(value)) throw new PageConfigError(`Unsupported backend "${value}"; expected one of: ${BACKENDS.join(', ')}`);
        config.backend = value as Backend;
        break;
      case 'threads': {
        const threads = Number(value);
        if (value.trim() === '' || !Number.isInteger(threads) || threads < 0 || threads > MAX_THREADS) {
          throw new PageConfigError(`threads must be a whole number from 0 (automatic) to ${MAX_THREADS}; got "${value}"`);
        }
        config.threads = threads;
        break;
      }
      case 'models':
        // Same origin only: a relative path, never a URL with a host.
        if (value === '' || /^[a-z][a-z0-9+.-]*:|^\/\/|\\/i.test(value)) throw new PageConfigError(`models must be a path on this site, like "models/"; got "${value}"`);
        config.models = value.endsWith('/') ? value : `${value}/`;
        break;
      default:
        throw new PageConfigError(`Unknown option "${key}" in the page address; expected one of: ${known.join(', ')}`);
    }
  }
  return config;
}
