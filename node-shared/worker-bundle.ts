/**
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
    const tsx = import.meta.resolve('tsx/esm/api');
    const bootstrap = `import(${JSON.stringify(tsx)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(entry.href)}); });`;
    return { source: bootstrap, eval: true, how: `through tsx (bundling failed: ${(error as Error).message.split('\n')[0]})` };
  }
}
