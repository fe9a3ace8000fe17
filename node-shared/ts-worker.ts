/**
 * Starts a worker thread on a TypeScript entry. Node 20 does not run a worker's .ts entry through the --import
 * hooks the parent was started with (`node --import tsx` and the tsx CLI alike), so the worker starts from a
 * tiny ES module that registers tsx and then imports the real entry.
 */
import { Worker } from 'node:worker_threads';

export function startTsWorker(entry: URL, workerData: unknown): Worker {
  const source = [
    `import { register } from ${JSON.stringify(import.meta.resolve('tsx/esm/api'))};`,
    'register();',
    `await import(${JSON.stringify(entry.href)});`,
  ].join('\n');
  return new Worker(new URL(`data:text/javascript,${encodeURIComponent(source)}`), { workerData });
}
