/**
 * Micro-batching: items submitted while a run is in progress (or within `maxWaitMs` of the first) go into one
 * run of at most `maxBatch` items. An idle batcher runs as soon as it has waited `maxWaitMs`, so a lone request
 * pays at most that wait; under load, batches form by themselves while the previous run works.
 */

export interface BatcherOptions<I, O> {
  maxBatch: number;
  maxWaitMs: number;
  /** Runs one batch; must return one result per item, in order. */
  runBatch: (items: I[]) => Promise<O[]>;
}

interface Pending<I, O> {
  item: I;
  resolve: (value: O) => void;
  reject: (error: unknown) => void;
}

export class MicroBatcher<I, O> {
  private queue: Pending<I, O>[] = [];
  private running = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly options: BatcherOptions<I, O>) {}

  get pending(): number {
    return this.queue.length;
  }

  submit(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.running || this.queue.length === 0) return;
    if (this.queue.length >= this.options.maxBatch || this.options.maxWaitMs === 0) {
      this.flush();
    } else if (this.timer === undefined) {
      this.timer = setTimeout(() => this.flush(), this.options.maxWaitMs);
    }
  }

  private flush(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.running || this.queue.length === 0) return;
    const batch = this.queue.splice(0, this.options.maxBatch);
    this.running = true;
    this.options
      .runBatch(batch.map((pending) => pending.item))
      .then(
        (results) => {
          if (results.length !== batch.length) throw new Error(`A batch of ${batch.length} returned ${results.length} results`);
          batch.forEach((pending, i) => pending.resolve(results[i]));
        },
        (error: unknown) => batch.forEach((pending) => pending.reject(error)),
      )
      .catch((error: unknown) => batch.forEach((pending) => pending.reject(error)))
      .finally(() => {
        this.running = false;
        // What arrived during the run has already waited: run it now.
        if (this.queue.length > 0) this.flush();
      });
  }
}
