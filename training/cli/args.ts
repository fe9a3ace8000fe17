import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Small helpers shared by the command-line programs: flag validation and a uniform way to fail. */

/** A mistake in how the program was called: printed with the usage text, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export function parseChoice<T extends string>(flag: string, value: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(value)) {
    throw new UsageError(`Unsupported ${flag} "${value}"; expected one of: ${allowed.join(', ')}`);
  }
  return value as T;
}

export function parsePositiveInt(flag: string, value: string, min = 1): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < min) {
    throw new UsageError(`${flag} must be a whole number of at least ${min}; got "${value}"`);
  }
  return n;
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
