/** Flag parsing shared by the export programs: validated values, errors that name the flag, one way to fail. */
import { resolve } from 'node:path';
import { validateInputSpec, validateOutputSpec, type OutputSpec } from '../contract/metadata.ts';
import type { InputSpec } from '../contract/preprocess.ts';
import { UsageError } from '../node-shared/cli-args.ts';
import { DEFAULT_UTKFACE, REPO_ROOT } from '../node-shared/paths.ts';

// One way to fail and to validate for every CLI in the project: the training CLIs' helpers.
export { isMain, parseChoice, parsePositiveInt as parseWholeNumber, runCli, UsageError } from '../node-shared/cli-args.ts';
export { DEFAULT_UTKFACE, REPO_ROOT };

/** Where the training CLI points `latest` at the newest run. */
export const DEFAULT_RUNS = resolve(REPO_ROOT, 'runs', 'latest');
/** Where the shipped models live. */
export const DEFAULT_MODELS = resolve(REPO_ROOT, 'models');

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
