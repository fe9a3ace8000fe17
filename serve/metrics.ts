/**
 * Prometheus metrics in text exposition format 0.0.4: counters, gauges and histograms with labels.
 * A registry's state is a plain snapshot, so that the processes of a cluster can be summed into one scrape.
 */
import { performance as nodePerformance } from 'node:perf_hooks';

type Labels = Record<string, string>;

interface MetricSnapshot {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  buckets?: number[];
  /** label key (JSON of the label pairs) -> value, or for histograms [bucket counts..., count, sum] */
  series: Record<string, number | number[]>;
}

export type RegistrySnapshot = MetricSnapshot[];

const labelKey = (labels: Labels): string => JSON.stringify(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : 1)));

abstract class Metric {
  protected readonly series = new Map<string, number | number[]>();
  abstract readonly type: MetricSnapshot['type'];
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}

  snapshot(): MetricSnapshot {
    return { name: this.name, help: this.help, type: this.type, series: Object.fromEntries([...this.series].map(([k, v]) => [k, Array.isArray(v) ? [...v] : v])) };
  }
}

export class Counter extends Metric {
  readonly type = 'counter';
  inc(labels: Labels = {}, by = 1): void {
    const key = labelKey(labels);
    this.series.set(key, ((this.series.get(key) as number | undefined) ?? 0) + by);
  }

  /** For a total kept elsewhere (read when scraped). */
  setTotal(value: number, labels: Labels = {}): void {
    this.series.set(labelKey(labels), value);
  }
}

export class Gauge extends Metric {
  readonly type = 'gauge';
  set(value: number, labels: Labels = {}): void {
    this.series.set(labelKey(labels), value);
  }
}

export class Histogram extends Metric {
  readonly type = 'histogram';
  constructor(
    name: string,
    help: string,
    readonly buckets: readonly number[],
  ) {
    super(name, help);
  }

  observe(value: number, labels: Labels = {}): void {
    const key = labelKey(labels);
    let counts = this.series.get(key) as number[] | undefined;
    if (counts === undefined) {
      counts = new Array<number>(this.buckets.length + 2).fill(0);
      this.series.set(key, counts);
    }
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]) counts[i]++;
    counts[this.buckets.length]++;
    counts[this.buckets.length + 1] += value;
  }

  override snapshot(): MetricSnapshot {
    return { ...super.snapshot(), buckets: [...this.buckets] };
  }
}

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const STAGE_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];

/** A predictor's queue, as the queue gauges read it when scraped. */
export interface QueueSource {
  /** Images admitted and not yet answered. */
  readonly depth: number;
  /** Images waiting for a decode thread. */
  readonly backlog: number;
}

/** The server's metrics. */
export class ServeMetrics {
  readonly requests = new Counter('http_requests_total', 'HTTP requests answered, by route, method and status.');
  readonly latency = new Histogram('http_request_duration_seconds', 'Time from request to response, by route.', LATENCY_BUCKETS);
  readonly decode = new Histogram('image_decode_seconds', 'Decode and preprocessing time of one image in a decode thread.', STAGE_BUCKETS);
  readonly inference = new Histogram('inference_seconds', 'Time of one onnxruntime run of a batch, by graph (its tasks, joined by +); model="detector": one image\'s face search in a decode thread.', STAGE_BUCKETS);
  readonly batchSize = new Histogram('inference_batch_size', 'Images per onnxruntime run.', [1, 2, 4, 8, 16, 32, 64, 128]);
  readonly errors = new Counter('errors_total', 'Error responses and per-image errors, by error code.');
  readonly queueDepth = new Gauge('queue_depth', 'Images admitted and not yet answered, by the models being served and those a reload replaced.');
  readonly decodeBacklog = new Gauge('decode_backlog', 'Images waiting for a decode thread, by the models being served and those a reload replaced.');
  readonly threadsReplaced = new Counter('decode_threads_replaced_total', 'Decode threads replaced after being stuck on one image past the time limit.');
  readonly eventLoopBusy = new Counter('event_loop_busy_seconds_total', 'Time the main thread was busy (HTTP, batching, inference), not idle in the event loop.');

  private readonly all: Metric[] = [this.requests, this.latency, this.decode, this.inference, this.batchSize, this.errors, this.queueDepth, this.decodeBacklog, this.threadsReplaced, this.eventLoopBusy];
  // After a reload the old predictor drains while the new one admits: the gauges are their sum, read when scraped.
  private readonly queues = new Set<QueueSource>();

  /** Counts `queue` in queue_depth and decode_backlog until the returned function is called. */
  trackQueue(queue: QueueSource): () => void {
    this.queues.add(queue);
    return () => void this.queues.delete(queue);
  }

  snapshot(): RegistrySnapshot {
    this.eventLoopBusy.setTotal(nodePerformance.eventLoopUtilization().active / 1000);
    let depth = 0;
    let backlog = 0;
    for (const queue of this.queues) {
      depth += queue.depth;
      backlog += queue.backlog;
    }
    this.queueDepth.set(depth);
    this.decodeBacklog.set(backlog);
    return this.all.map((metric) => metric.snapshot());
  }
}

/** Sums the snapshots of several processes (gauges included: each process reports its own depth). */
export function mergeSnapshots(snapshots: readonly RegistrySnapshot[]): RegistrySnapshot {
  const merged = new Map<string, MetricSnapshot>();
  for (const snapshot of snapshots) {
    for (const metric of snapshot) {
      const into = merged.get(metric.name);
      if (into === undefined) {
        merged.set(metric.name, structuredClone(metric));
        continue;
      }
      for (const [key, value] of Object.entries(metric.series)) {
        const prior = into.series[key];
        if (prior === undefined) into.series[key] = structuredClone(value);
        else if (Array.isArray(prior) && Array.isArray(value)) into.series[key] = prior.map((p, i) => p + value[i]);
        else into.series[key] = (prior as number) + (value as number);
      }
    }
  }
  return [...merged.values()];
}

const escapeLabel = (value: string): string => value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');

function formatLabels(pairs: [string, string][]): string {
  return pairs.length === 0 ? '' : `{${pairs.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',')}}`;
}

/** The Prometheus text exposition of a snapshot. */
export function formatPrometheus(snapshot: RegistrySnapshot): string {
  const lines: string[] = [];
  for (const metric of snapshot) {
    lines.push(`# HELP ${metric.name} ${metric.help}`, `# TYPE ${metric.name} ${metric.type}`);
    for (const [key, value] of Object.entries(metric.series)) {
      const pairs = JSON.parse(key) as [string, string][];
      if (metric.type !== 'histogram') {
        lines.push(`${metric.name}${formatLabels(pairs)} ${value as number}`);
        continue;
      }
      const counts = value as number[];
      const buckets = metric.buckets ?? [];
      buckets.forEach((le, i) => lines.push(`${metric.name}_bucket${formatLabels([...pairs, ['le', String(le)]])} ${counts[i]}`));
      lines.push(`${metric.name}_bucket${formatLabels([...pairs, ['le', '+Inf']])} ${counts[buckets.length]}`);
      lines.push(`${metric.name}_sum${formatLabels(pairs)} ${counts[buckets.length + 1]}`);
      lines.push(`${metric.name}_count${formatLabels(pairs)} ${counts[buckets.length]}`);
    }
  }
  return `${lines.join('\n')}\n`;
}
