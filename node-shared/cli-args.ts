import { constants } from 'node:fs';
import { access, mkdir, readdir, rmdir, stat } from 'node:fs/promises';
import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Small helpers shared by the command-line programs: flag validation and a uniform way to fail. */

/** A mistake in how the program was called: printed with a pointer to --help, exit code 2. */
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

/** The error's code (ENOENT, EACCES, ...) or message, for a one-line reason. */
function reason(error: unknown): string {
  return (error as { code?: string }).code ?? (error instanceof Error ? error.message : String(error));
}

/**
 * Checks, before any work, that `file` can be written: not a folder, its folder created if missing (as export
 * does) and writable. `flag` names the option in the messages.
 */
export async function prepareOutputFile(flag: string, file: string): Promise<void> {
  const info = await stat(file).catch(() => undefined);
  if (info?.isDirectory()) throw new UsageError(`${flag} "${file}" is a folder; expected the path of a file to write`);
  const folder = dirname(file);
  try {
    await mkdir(folder, { recursive: true });
  } catch (error) {
    throw new UsageError(`${flag} "${file}": its folder "${folder}" cannot be created (${reason(error)})`);
  }
  try {
    await access(info === undefined ? folder : file, constants.W_OK);
  } catch (error) {
    throw new UsageError(`${flag} "${file}" cannot be written (${reason(error)})`);
  }
}

/**
 * Checks, before any work, that a run can be written to `folder`: a new or empty folder, so that one run never
 * mixes with another's files. Creates it; the returned function removes what it created while it is still empty
 * (for a run that failed before writing anything).
 */
export async function prepareRunFolder(flag: string, folder: string): Promise<() => Promise<void>> {
  const info = await stat(folder).catch(() => undefined);
  if (info !== undefined && !info.isDirectory()) {
    throw new UsageError(`${flag} "${folder}" is a file; a run is written to a folder: choose a new folder`);
  }
  if (info !== undefined) {
    const entries = await readdir(folder);
    if (entries.length > 0) {
      const shown = entries.sort().slice(0, 3).join(', ') + (entries.length > 3 ? ', ...' : '');
      throw new UsageError(
        `${flag} "${folder}" is not empty (${shown}); a run there would mix with what it holds: choose a new folder, or delete this one`,
      );
    }
  }
  let created: string | undefined;
  try {
    created = await mkdir(folder, { recursive: true });
    await access(folder, constants.W_OK);
  } catch (error) {
    throw new UsageError(`${flag} "${folder}" cannot be created or written (${reason(error)})`);
  }
  return async () => {
    if (created === undefined) return;
    // From the run folder up to the first folder mkdir created, each while empty; rmdir refuses a non-empty one.
    for (let dir = folder; ; dir = dirname(dir)) {
      if (!(await rmdir(dir).then(() => true, () => false)) || dir === created || relative(created, dir).startsWith('..')) return;
    }
  };
}

/**
 * The line after a usage error: how to see the whole usage. Names the npm script the usage text starts with,
 * because `npm run export --help` (without the `--`) prints npm's help, not the program's.
 */
export function helpPointer(usage: string): string {
  const script = /\bnpm (?:run [\w:.-]+|start)\b/.exec(usage)?.[0];
  if (script !== undefined) return `Run \`${script} -- --help\` for usage.`;
  const file = /\bnpx tsx \S+\.ts\b/.exec(usage)?.[0];
  return file === undefined ? 'Run with --help for usage.' : `Run \`${file} --help\` for usage.`;
}

/** A usage error on stderr: the message, then one line pointing to --help (the whole usage would bury the message). */
export function reportUsageError(message: string, usage: string): void {
  process.stderr.write(`error: ${message}\n${helpPointer(usage)}\n`);
}

/**
 * Runs a CLI's main function: usage errors print their message and where the usage is, exit 2; other errors print
 * their message, exit 1. `--help` (a UsageError without a message) prints the usage on stdout, exit 0.
 */
export function runCli(usage: string, main: (argv: string[]) => Promise<void>): void {
  main(process.argv.slice(2)).catch((error: unknown) => {
    if (error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      const message = (error as Error).message;
      if (message === '') {
        process.stdout.write(`${usage}\n`);
        process.exitCode = 0;
        return;
      }
      reportUsageError(message, usage);
      process.exitCode = 2;
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
