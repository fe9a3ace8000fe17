/** Flag parsing shared by the export programs: validated values, errors that name the flag, one way to fail. */
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { validateInputSpec, validateOutputSpec, type OutputSpec } from '../models/spec/metadata.ts';
import type { InputSpec } from '../models/spec/preprocess.ts';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/** Where the training CLI points `latest` at the newest run. */
export const DEFAULT_RUNS = resolve(REPO_ROOT, 'runs', 'latest');
/** Where the shipped models live. */
export const DEFAULT_MODELS = resolve(REPO_ROOT, 'models');
export const DEFAULT_UTKFACE = resolve(REPO_ROOT, '..', 'shared', 'data', 'utkface');

/** A mistake in how the program was called: printed with the usage text, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export function parseChoice<T extends string>(flag: string, value: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(value)) throw new UsageError(`Unsupported ${flag} "${value}"; expected one of: ${allowed.join(', ')}`);
  return value as T;
}

export function parseWholeNumber(flag: string, value: string, min = 1): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < min) throw new UsageError(`${flag} must be a whole number of at least ${min}; got "${value}"`);
  return n;
}

export function parsePositiveNumber(flag: string, value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0) throw new UsageError(`${flag} must be a positive number; got "${value}"`);
  return n;
}

/** "48x48x1" (height x width x channels) with unit scaling. */
export function parseInputSpec(flag: string, value: string, scaling: string): InputSpec {
  const match = /^(\d+)x(\d+)x(\d+)$/.exec(value);
  if (match === null) throw new UsageError(`${flag} must be HEIGHTxWIDTHxCHANNELS, e.g. 48x48x1; got "${value}"`);
  try {
    return validateInputSpec({ height: Number(match[1]), width: Number(match[2]), channels: Number(match[3]), scaling }, flag);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

/** "a,b,c" -> ["a", "b", "c"]. */
export function parseLabels(flag: string, value: string): string[] {
  const labels = value.split(',').map((l) => l.trim());
  if (labels.some((l) => l === '')) throw new UsageError(`${flag} must be comma-separated non-empty labels; got "${value}"`);
  return labels;
}

/** A JSON list of `{ name, kind, labels? }`. */
export function parseOutputs(flag: string, value: string): OutputSpec[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch (error) {
    throw new UsageError(`${flag} is not valid JSON: ${(error as Error).message}`);
  }
  if (!Array.isArray(parsed)) throw new UsageError(`${flag} must be a JSON list of {"name", "kind", "labels"}`);
  try {
    return parsed.map((o, i) => validateOutputSpec(o, `${flag}[${i}]`));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

/** Runs a CLI's main function: usage errors print the usage and exit 2, other errors print their message and exit 1. */
export function runCli(usage: string, main: (argv: string[]) => Promise<void>): void {
  main(process.argv.slice(2)).catch((error: unknown) => {
    if (error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      const message = (error as Error).message;
      if (message !== '') console.error(`error: ${message}\n`);
      console.error(usage);
      process.exitCode = message === '' ? 0 : 2;
    } else {
      console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
      if (process.env.DEBUG) console.error(error);
      process.exitCode = 1;
    }
  });
}

/** Whether the module at `moduleUrl` is the program being run (not imported, e.g. by a test). */
export function isMain(moduleUrl: string): boolean {
  return process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(moduleUrl);
}
