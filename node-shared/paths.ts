/** Where things are, relative to the repository root rather than the current directory. */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** The UTKFace folder beside the repository (`../shared/data/utkface`), where this project's data lives. */
export const DEFAULT_UTKFACE = resolve(REPO_ROOT, '..', 'shared', 'data', 'utkface');

export const RUNS_DIR = join(REPO_ROOT, 'runs');

export function defaultDataSource(): string | undefined {
  return existsSync(DEFAULT_UTKFACE) ? DEFAULT_UTKFACE : undefined;
}
