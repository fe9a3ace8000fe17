/**
 * Model files on disk for the model-set loader (contract/model-set.ts): entries read from the manifest's folder,
 * and a detector entry that names an npm package read from that package as installed in node_modules.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { isDetectorEntry } from '../contract/metadata.ts';
import { MANIFEST_FILE, ModelLoadError, type ModelSource, type ModelToLoad } from '../contract/model-set.ts';

const requireHere = createRequire(import.meta.url);

/** The installed file a package entry names: the package's folder (found as Node finds it) joined with packagePath. */
export function packageFilePath(packageName: string, packagePath: string): string {
  let packageJson: string;
  try {
    packageJson = requireHere.resolve(`${packageName}/package.json`);
  } catch (error) {
    throw new ModelLoadError(`Cannot find the npm package "${packageName}" (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}); install it with \`npm ci\``);
  }
  return join(dirname(packageJson), packagePath);
}

/** Where an entry's file is: inside its package when it names one, else beside the manifest in `dir`. */
function filePath(dir: string, entry: ModelToLoad): string {
  return isDetectorEntry(entry) && entry.package !== undefined && entry.packagePath !== undefined ? packageFilePath(entry.package, entry.packagePath) : join(dir, entry.file);
}

/** The models of the folder `dir` (and of the packages its manifest names). */
export function folderModelSource(dir: string): ModelSource {
  return {
    manifestPath: join(dir, MANIFEST_FILE),
    pathOf: (entry) => (isDetectorEntry(entry) && entry.package !== undefined ? `${entry.package}/${entry.packagePath}` : join(dir, entry.file)),
    async readFile(entry) {
      const buffer = await readFile(filePath(dir, entry));
      return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    },
  };
}
