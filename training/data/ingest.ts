/** Pieces the dataset loaders share: the skip report, the seeded subset, and the progress display. */
import { formatDuration, ProgressBar, type ProgressStream } from '../report/progress.ts';
import { shuffledIndices } from './split.ts';
import type { SkipReport } from './dataset.ts';

/** Seed of the `limit` subset when the caller gives none. */
export const DEFAULT_SUBSET_SEED = 42;

const EXAMPLES_PER_REASON = 3;
const MAX_EXAMPLES = 30;

/** Collects skipped entries: counts by reason, and the first few examples of each reason. */
export class SkipCollector {
  private readonly report: SkipReport = { count: 0, byReason: {}, examples: [] };

  /** `reason` is the category that is counted; `detail` (e.g. the offending value) only goes into the example. */
  add(entry: string, reason: string, detail?: string): void {
    this.report.count++;
    const seen = this.report.byReason[reason] ?? 0;
    this.report.byReason[reason] = seen + 1;
    if (seen < EXAMPLES_PER_REASON && this.report.examples.length < MAX_EXAMPLES) {
      this.report.examples.push({ entry, reason: detail === undefined ? reason : `${reason}: ${detail}` });
    }
  }

  toReport(): SkipReport {
    return { count: this.report.count, byReason: { ...this.report.byReason }, examples: [...this.report.examples] };
  }
}

/**
 * The entries a `limit` keeps: a seeded shuffle of the names in sorted order, the first `limit` of it.
 * Returns the shuffled order of all indices into `names` (take from the front; failures can be topped up
 * from further along); the same names and seed give the same order on every run and machine.
 */
export function subsetOrder(names: readonly string[], seed: number): number[] {
  const sorted = names.map((_, i) => i).sort((a, b) => compareNames(names[a], names[b]) || a - b);
  return Array.from(shuffledIndices(sorted.length, seed), (i) => sorted[i]);
}

/** Code-unit order, independent of the locale. */
export function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function validateLimit(limit: number | undefined): void {
  if (limit !== undefined && !(Number.isSafeInteger(limit) && limit >= 1)) {
    throw new RangeError(`limit must be a whole number of at least 1; got ${limit}`);
  }
}

export interface Progress {
  /** `done` of the total so far */
  update(done: number): void;
  /** the final state, with the elapsed time */
  finish(): void;
}

export interface ProgressOptions {
  /** what is being done, e.g. "decoding utkface" */
  label: string;
  total: number;
  /** `LoadOptions.progress`: false shows nothing; otherwise a bar on a terminal and a line per ~10% elsewhere */
  enabled?: boolean;
  /** how a count is written, e.g. as megabytes for a byte count */
  formatCount?: (n: number) => string;
  /** default: process.stderr */
  stream?: ProgressStream;
}

/** The project's progress bar (training/report/progress.ts), or nothing when progress is turned off. */
export function createProgress(options: ProgressOptions): Progress {
  const { label, total, enabled = true, stream, formatCount } = options;
  if (!enabled || total <= 0) return { update: () => {}, finish: () => {} };
  const bar = new ProgressBar(total, { label, stream, formatCount, unit: 'images' });
  return { update: (done) => bar.update(done), finish: () => bar.done() };
}

export { formatDuration };
