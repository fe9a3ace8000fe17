/** One-line logs on stderr, filtered by level; a 5xx's stack goes here and never to the caller. */
import type { LogLevel } from './config.ts';

const RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

export interface Logger {
  error(message: string, error?: unknown): void;
  warn(message: string): void;
  info(message: string): void;
  debug(message: string): void;
}

export function createLogger(level: LogLevel, prefix = ''): Logger {
  const write = (at: LogLevel, message: string): void => {
    if (RANK[at] <= RANK[level]) process.stderr.write(`${new Date().toISOString()} ${at.padEnd(5)} ${prefix}${message}\n`);
  };
  return {
    error: (message, error) => write('error', error === undefined ? message : `${message}: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`),
    warn: (message) => write('warn', message),
    info: (message) => write('info', message),
    debug: (message) => write('debug', message),
  };
}
