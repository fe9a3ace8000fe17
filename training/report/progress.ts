/** Terminal output while training: one aligned line per epoch and a small progress bar. */
import { formatDuration } from '../../node-shared/format.ts';

export interface EpochStats {
  /** 1-based */
  epoch: number;
  epochs: number;
  loss: number;
  /** absent for models without an accuracy metric (e.g. age regression) */
  accuracy?: number;
  valLoss?: number;
  valAccuracy?: number;
  /** wall time of the epoch */
  seconds?: number;
  /** training throughput of the epoch */
  imagesPerSecond?: number;
}

/** A number in a fixed-width column; NaN and infinities (a diverged run) print as text of the same width. */
function column(value: number, decimals: number, width: number): string {
  const text = Number.isFinite(value) ? value.toFixed(decimals) : String(value).toLowerCase();
  return text.padStart(width);
}

/**
 * One line per epoch whose columns stay aligned from the first epoch to the last:
 *
 *     epoch  3/20  loss 0.8123  acc 0.6512  val_loss 0.9011  val_acc 0.6102    12.3s   2345 img/s
 */
export function formatEpochLine(stats: EpochStats): string {
  const epochWidth = String(stats.epochs).length;
  const parts = [`epoch ${String(stats.epoch).padStart(epochWidth)}/${stats.epochs}`, `loss ${column(stats.loss, 4, 7)}`];
  if (stats.accuracy !== undefined) parts.push(`acc ${column(stats.accuracy, 4, 6)}`);
  if (stats.valLoss !== undefined) parts.push(`val_loss ${column(stats.valLoss, 4, 7)}`);
  if (stats.valAccuracy !== undefined) parts.push(`val_acc ${column(stats.valAccuracy, 4, 6)}`);
  if (stats.seconds !== undefined) parts.push(`${column(stats.seconds, 1, 7)}s`);
  if (stats.imagesPerSecond !== undefined) parts.push(`${column(stats.imagesPerSecond, 0, 6)} img/s`);
  return parts.join('  ');
}

/** One epoch of a network trained for several tasks at once, as `formatSharedEpochLine` prints it. */
export interface SharedEpochStats {
  epoch: number;
  epochs: number;
  /** in the order printed; valMae: the mean absolute error in years of a task that predicts the age */
  tasks: { task: string; valAccuracy: number; valMae?: number }[];
  /** what chooses the kept epoch */
  score: number;
  improved: boolean;
  seconds: number;
  imagesPerSecond: number;
  elapsedSeconds: number;
  leftSeconds: number;
}

/**
 * The one line an epoch of the multitask run prints without --verbose:
 *
 *     epoch 2/32 done, validation: age 60.4% (MAE 16.74 years), ethnicity 45.8%, gender 75.0%, score 0.6042 (best); 18.2 s, 21 img/s; 0:58 elapsed, about 29:00 left
 */
export function formatSharedEpochLine(stats: SharedEpochStats): string {
  const percent = (x: number) => (Number.isFinite(x) ? `${(x * 100).toFixed(1)}%` : String(x).toLowerCase());
  const tasks = stats.tasks.map((t) => `${t.task} ${percent(t.valAccuracy)}${t.valMae === undefined ? '' : ` (MAE ${column(t.valMae, 2, 0)} years)`}`);
  return (
    `epoch ${stats.epoch}/${stats.epochs} done, validation: ${tasks.join(', ')}, score ${column(stats.score, 4, 0)}${stats.improved ? ' (best)' : ''}; ` +
    `${column(stats.seconds, 1, 0)} s, ${column(stats.imagesPerSecond, 0, 0)} img/s; ${formatDuration(stats.elapsedSeconds)} elapsed, about ${formatDuration(stats.leftSeconds)} left`
  );
}

export { formatDuration };

/** Where the bar writes: process.stderr, or anything with `write` (tests). */
export interface ProgressStream {
  write(text: string): unknown;
  isTTY?: boolean;
}

export interface ProgressBarOptions {
  /** printed before the bar, e.g. "decoding" */
  label?: string;
  /** what is counted, e.g. "images" (default "items") */
  unit?: string;
  /** default process.stderr */
  stream?: ProgressStream;
  /** redraw one line in place; default: whether the stream is a TTY. Otherwise a line every 10%. */
  tty?: boolean;
  /** milliseconds clock; default performance.now */
  now?: () => number;
  /** characters of the bar on a TTY (default 24) */
  width?: number;
  /** how a count is written, e.g. as megabytes for a byte count (default: the plain number) */
  formatCount?: (n: number) => string;
}

/** How often a TTY bar may redraw, so that tight loops do not spend their time printing. */
const REDRAW_MS = 100;

/**
 * Count, percentage, rate and ETA of a known amount of work. On a TTY it redraws one line with "\r";
 * in a log file it prints a line at every 10% instead.
 */
export class ProgressBar {
  private completed = 0;
  private readonly started: number;
  private lastDraw = -Infinity;
  private lastDecile = 0;
  private finished = false;
  private readonly label: string;
  private readonly unit: string;
  private readonly stream: ProgressStream;
  private readonly tty: boolean;
  private readonly now: () => number;
  private readonly barWidth: number;
  private readonly formatCount?: (n: number) => string;

  constructor(
    readonly total: number,
    options: ProgressBarOptions = {},
  ) {
    if (!Number.isFinite(total) || total < 0) throw new RangeError(`total must be a number of at least 0; got ${total}`);
    this.label = options.label ?? '';
    this.unit = options.unit ?? 'items';
    this.stream = options.stream ?? process.stderr;
    this.tty = options.tty ?? this.stream.isTTY === true;
    this.now = options.now ?? (() => performance.now());
    this.barWidth = options.width ?? 24;
    this.formatCount = options.formatCount;
    this.started = this.now();
  }

  /** Sets how many items are done so far (not an increment; see `tick`). */
  update(completed: number): void {
    if (this.finished) return;
    this.completed = Math.max(0, Math.min(this.total, completed));
    const time = this.now();
    if (this.tty) {
      if (time - this.lastDraw >= REDRAW_MS) {
        this.lastDraw = time;
        this.stream.write(`\r${this.line(time, true)}\x1b[K`);
      }
      return;
    }
    const decile = this.total === 0 ? 10 : Math.floor((this.completed / this.total) * 10);
    if (decile > this.lastDecile) {
      this.lastDecile = decile;
      this.stream.write(`${this.line(time, false)}\n`);
    }
  }

  /** Adds `count` finished items. */
  tick(count = 1): void {
    this.update(this.completed + count);
  }

  /** Takes the bar off a TTY's line without a final state, for work whose end something else reports; later updates are ignored. */
  clear(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.tty) this.stream.write('\r\x1b[K');
  }

  /** Prints the final state (with the elapsed time) and ends the line; later updates are ignored. */
  done(): void {
    if (this.finished) return;
    this.finished = true;
    const time = this.now();
    const line = this.line(time, this.tty, true);
    if (this.tty) this.stream.write(`\r${line}\x1b[K\n`);
    else this.stream.write(`${line}\n`);
  }

  private line(time: number, withBar: boolean, final = false): string {
    const seconds = Math.max(0, (time - this.started) / 1000);
    const fraction = this.total === 0 ? 1 : this.completed / this.total;
    const rate = seconds > 0 ? this.completed / seconds : 0;
    const count = this.formatCount ?? String;
    const totalText = count(this.total);
    const parts: string[] = [];
    if (this.label) parts.push(this.label);
    if (withBar) {
      const filled = Math.round(fraction * this.barWidth);
      parts.push(`[${'#'.repeat(filled)}${'-'.repeat(this.barWidth - filled)}]`);
    }
    parts.push(`${count(this.completed).padStart(totalText.length)}/${totalText}`);
    parts.push(`${(fraction * 100).toFixed(0).padStart(3)}%`);
    parts.push(this.formatCount === undefined ? `${rate >= 100 ? rate.toFixed(0) : rate.toFixed(1)} ${this.unit}/s` : `${this.formatCount(rate)}/s`);
    if (final) parts.push(`in ${formatDuration(seconds)}`);
    else parts.push(`ETA ${rate > 0 ? formatDuration((this.total - this.completed) / rate) : '--:--'}`);
    return parts.join('  ');
  }
}
