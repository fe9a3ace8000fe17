/**
 * Worker threads on TypeScript entries, the one place that starts them. `startTsWorker` runs an entry through tsx
 * (training's workers); `prepareWorker` bundles one for a thread started many times (the server's decode threads).
 *
 * How a TypeScript worker file runs in a worker thread. Loader hooks (tsx) do not reach worker threads, and
 * registering them inside one routes every dynamic import through a hooks thread: jimp imports a module on
 * each decode, which cost ~15% more CPU per image. So the worker is bundled once with esbuild (what tsx itself
 * uses) into plain JavaScript under node_modules/.cache, keyed by its content; if that fails, the thread
 * registers tsx itself.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { REPO_ROOT } from './paths.ts';

export interface WorkerEntry {
  /** What to pass to `new Worker`: a file URL, or code to evaluate. */
  source: URL | string;
  eval: boolean;
  /** How the entry was prepared, for the start-up log. */
  how: string;
}

const CACHE_DIR = join(REPO_ROOT, 'node_modules', '.cache', 'face-attributes-serve');

/** Plain JavaScript for a .ts worker entry, or a bootstrap that loads it through tsx. */
export async function prepareWorker(entry: URL): Promise<WorkerEntry> {
  try {
    const { build } = await import('esbuild');
    const result = await build({
      entryPoints: [fileURLToPath(entry)],
      bundle: true,
      packages: 'external',
      format: 'esm',
      platform: 'node',
      target: 'node20',
      write: false,
      logLevel: 'silent',
    });
    const code = result.outputFiles[0].text;
    const hash = createHash('sha256').update(code).digest('hex').slice(0, 16);
    const file = join(CACHE_DIR, `${hash}.mjs`);
    if (!existsSync(file)) {
      mkdirSync(CACHE_DIR, { recursive: true });
      // Written aside and renamed, so that processes starting together never read half a file.
      const partial = `${file}.${process.pid}.tmp`;
      writeFileSync(partial, code);
      renameSync(partial, file);
    }
    return { source: pathToFileURL(file), eval: false, how: 'bundled with esbuild' };
  } catch (error) {
    return { source: tsxBootstrapUrl(entry), eval: false, how: `through tsx (bundling failed: ${(error as Error).message.split('\n')[0]})` };
  }
}

/**
 * An ES module that registers tsx, then imports `entry`: Node 20 does not run a worker's .ts entry through the
 * --import hooks the parent was started with (`node --import tsx` and the tsx CLI alike).
 */
function tsxBootstrapUrl(entry: URL): URL {
  const source = `import { register } from ${JSON.stringify(import.meta.resolve('tsx/esm/api'))};\nregister();\nawait import(${JSON.stringify(entry.href)});`;
  return new URL(`data:text/javascript,${encodeURIComponent(source)}`);
}

/** Starts a worker thread on a TypeScript entry, through tsx. */
export function startTsWorker(entry: URL, workerData: unknown): Worker {
  return new Worker(tsxBootstrapUrl(entry), { workerData });
}
