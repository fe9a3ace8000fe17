/** Pieces the dataset loaders share: the skip report, the seeded subset, and the progress display. */
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
  /** the last update, then a newline on a terminal */
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
  stream?: { isTTY?: boolean; write(text: string): unknown };
}

const BAR_WIDTH = 24;
const REDRAW_MS = 100;

/** A progress bar with count, rate and ETA on a terminal; on a pipe or file, one line every ~10%. */
export function createProgress(options: ProgressOptions): Progress {
  const { label, total, enabled = true, stream = process.stderr } = options;
  const formatCount = options.formatCount ?? ((n: number) => n.toLocaleString('en-US'));
  if (!enabled || total <= 0) return { update: () => {}, finish: () => {} };
  const tty = stream.isTTY === true;
  const started = performance.now();
  let done = 0;
  let lastDraw = 0;
  let lastTenth = 0;

  const line = (): string => {
    const seconds = (performance.now() - started) / 1000;
    const rate = seconds > 0 ? done / seconds : 0;
    const eta = rate > 0 ? (total - done) / rate : Number.NaN;
    const percent = Math.floor((100 * done) / total);
    const counts = `${formatCount(done)}/${formatCount(total)} ${percent}%`;
    const timing = `${formatCount(Math.round(rate))}/s  ETA ${formatDuration(eta)}`;
    if (!tty) return `${label}: ${counts}, ${timing}`;
    const filled = Math.round((BAR_WIDTH * done) / total);
    return `${label} [${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}] ${counts}  ${timing}`;
  };

  return {
    update(value: number) {
      done = Math.min(value, total);
      if (tty) {
        const now = performance.now();
        if (now - lastDraw >= REDRAW_MS || done === total) {
          lastDraw = now;
          stream.write(`\r${line()}\x1b[K`);
        }
        return;
      }
      const tenth = Math.floor((10 * done) / total);
      if (tenth > lastTenth) {
        lastTenth = tenth;
        stream.write(`${line()}\n`);
      }
    },
    finish() {
      const seconds = (performance.now() - started) / 1000;
      if (tty) stream.write(`\r${line()}\x1b[K\n`);
      else if (lastTenth < 10) stream.write(`${line()}\n`);
      else stream.write(`${label}: done in ${formatDuration(seconds)}\n`);
    },
  };
}

/** 75 -> "1:15", 3725 -> "1:02:05"; "-:--" when unknown. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '-:--';
  const s = Math.round(seconds);
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, '0');
  return hours > 0 ? `${hours}:${String(minutes).padStart(2, '0')}:${rest}` : `${minutes}:${rest}`;
}
