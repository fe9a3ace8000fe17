/**
 * From image bytes to a prediction: admission into a bounded queue, decoding in the pool (once per distinct
 * input spec), and one micro-batched onnxruntime run per graph (a model, or models merged into one). Labels and their order come from each model's
 * metadata; nothing here knows what the classes are called.
 */
import { MicroBatcher } from './batcher.ts';
import type { DecodedImage, DecodePool } from './decode-pool.ts';
import { OverloadedError } from './errors.ts';
import type { ServeMetrics } from './metrics.ts';
import type { ServedGraph } from './models.ts';
import { run } from '../node-shared/onnxruntime-node.ts';
import { TASKS, type Task } from '../contract/labels.ts';
import type { Prediction, TaskPrediction, Timings } from '../contract/prediction.ts';

export type { Prediction, TaskPrediction, Timings } from '../contract/prediction.ts';

interface InferenceResult {
  tasks: Record<string, TaskPrediction>;
  ms: number;
}

export interface PredictorOptions {
  maxQueue: number;
  maxBatch: number;
  batchWaitMs: number;
}

const round = (ms: number): number => Math.round(ms * 100) / 100;

export class Predictor {
  private inProgress = 0;
  private readonly taskOrder: string[];
  private readonly batcher: MicroBatcher<DecodedImage, InferenceResult>;

  constructor(
    private readonly graphs: readonly ServedGraph[],
    private readonly pool: DecodePool,
    private readonly metrics: ServeMetrics,
    private readonly options: PredictorOptions,
  ) {
    this.taskOrder = graphs.flatMap((g) => g.tasks).sort((a, b) => TASKS.indexOf(a as Task) - TASKS.indexOf(b as Task));
    this.batcher = new MicroBatcher({ maxBatch: options.maxBatch, maxWaitMs: options.batchWaitMs, runBatch: (images) => this.infer(images) });
  }

  /** Images admitted and not yet answered. */
  get depth(): number {
    return this.inProgress;
  }

  /**
   * Reserves room for `count` images, or throws a 503 when the queue is full. The caller must `release` the
   * same count once it has answered.
   */
  admit(count: number): void {
    if (this.inProgress + count > this.options.maxQueue) {
      throw new OverloadedError(`The server is at capacity (${this.options.maxQueue} images in progress); retry in a second`);
    }
    this.inProgress += count;
    this.updateGauges();
  }

  release(count: number): void {
    this.inProgress -= count;
    this.updateGauges();
  }

  /** Predicts every task for one image; `startedAt` (performance.now()) is when the request arrived. */
  async predict(bytes: Uint8Array, startedAt: number, signal?: AbortSignal): Promise<Prediction> {
    const image = await this.pool.decode(bytes, signal);
    this.metrics.decode.observe(image.ms / 1000);
    signal?.throwIfAborted();
    const result = await this.batcher.submit(image);
    // The usual task order, whichever graph answered first.
    const tasks = Object.fromEntries(this.taskOrder.map((task) => [task, result.tasks[task]]));
    return { ...tasks, timingsMs: { decode: round(image.ms), inference: round(result.ms), total: round(performance.now() - startedAt) } };
  }

  private updateGauges(): void {
    this.metrics.queueDepth.set(this.inProgress);
    this.metrics.decodeBacklog.set(this.pool.backlog);
  }

  /** One run per graph over the whole batch (or one per image where a graph's batch size is fixed at 1). */
  private async infer(images: DecodedImage[]): Promise<InferenceResult[]> {
    const started = performance.now();
    this.metrics.batchSize.observe(images.length);
    const results: InferenceResult[] = images.map(() => ({ tasks: {}, ms: 0 }));
    for (const graph of this.graphs) {
      const groups = graph.batchable ? [images.map((_, i) => i)] : images.map((_, i) => [i]);
      for (const group of groups) {
        const graphStarted = performance.now();
        const [height, width, channels] = [graph.inputSpec.height, graph.inputSpec.width, graph.inputSpec.channels];
        const size = height * width * channels;
        const data = new Float32Array(group.length * size);
        group.forEach((imageIndex, row) => data.set(images[imageIndex].inputs[graph.specIndex], row * size));
        const outputs = await run(graph.session, { [graph.inputName]: { data, dims: [group.length, height, width, channels] } });
        group.forEach((imageIndex, row) => Object.assign(results[imageIndex].tasks, graph.interpret(outputs, row)));
        this.metrics.inference.observe((performance.now() - graphStarted) / 1000, { model: graph.tasks.join('+') });
      }
    }
    const ms = performance.now() - started;
    for (const result of results) result.ms = ms;
    return results;
  }
}
