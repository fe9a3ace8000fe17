/**
 * From image bytes to an answer per face: admission into a bounded queue, decoding and the face detector in the
 * pool's threads (contract/face/photo.ts, as the page runs it), each face cut out as the models were trained to
 * see it, and one micro-batched onnxruntime run per graph over the faces of every request in flight. With
 * `detect=none` the whole image is one face. Labels and their order come from each model's metadata.
 */
import { MicroBatcher } from './batcher.ts';
import type { DecodedImage, DecodePool } from './decode-pool.ts';
import { DetectionUnavailableError, OverloadedError } from './errors.ts';
import type { ServeMetrics } from './metrics.ts';
import type { ServedGraph } from './models.ts';
import { run, type NodeSession } from '../node-shared/onnxruntime-node.ts';
import { answerFaces } from '../contract/model-set.ts';
import { TASKS, type Task } from '../contract/labels.ts';
import type { TaskPrediction } from '../contract/prediction.ts';
import { faceAnswer, facePosition, wholeImagePosition, type FacePrediction, type FaceSearch, type PhotoPrediction } from '../contract/face/photo.ts';

export type { PhotoPrediction } from '../contract/face/photo.ts';

/** How a request wants its photo read: find the faces (with these limits), or take the image as one face. */
export type FaceQuery = ({ detect: true } & FaceSearch) | { detect: false };

/** One face's model inputs, one per input spec. */
interface FaceInputs {
  inputs: Float32Array[];
}

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

/** Answers images with one model set; counts in the queue gauges from construction until `close()`. */
export class Predictor {
  private inProgress = 0;
  private readonly taskOrder: string[];
  private readonly batcher: MicroBatcher<FaceInputs, InferenceResult>;
  private readonly untrackQueue: () => void;
  /** Each graph's session and the label its runs are timed under: its tasks, joined by +. */
  private readonly graphLabels: Map<NodeSession, string>;

  constructor(
    private readonly graphs: readonly ServedGraph[],
    private readonly pool: DecodePool,
    private readonly metrics: ServeMetrics,
    private readonly options: PredictorOptions,
  ) {
    this.graphLabels = new Map(graphs.map((graph) => [graph.session, graph.tasks.join('+')]));
    this.taskOrder = graphs.flatMap((g) => g.tasks).sort((a, b) => TASKS.indexOf(a as Task) - TASKS.indexOf(b as Task));
    this.batcher = new MicroBatcher({ maxBatch: options.maxBatch, maxWaitMs: options.batchWaitMs, runBatch: (faces) => this.infer(faces) });
    this.untrackQueue = metrics.trackQueue(this);
  }

  /** Whether the server finds faces itself, in its decode threads (else every image is taken as one face). */
  get detects(): boolean {
    return this.pool.detects;
  }

  /** Images admitted and not yet answered. */
  get depth(): number {
    return this.inProgress;
  }

  /** Images waiting for a decode thread. */
  get backlog(): number {
    return this.pool.backlog;
  }

  /** Stops counting in the queue gauges: its models are being released. */
  close(): void {
    this.untrackQueue();
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
  }

  release(count: number): void {
    this.inProgress -= count;
  }

  /** Answers one image; `startedAt` (performance.now()) is when the request arrived. */
  async predict(bytes: Uint8Array, startedAt: number, query: FaceQuery, signal?: AbortSignal): Promise<PhotoPrediction> {
    // Refused before decoding: the caller asked for something this server cannot do, whatever the image.
    if (query.detect && !this.detects) throw new DetectionUnavailableError();
    const image = await this.pool.decode(bytes, query.detect && { minScore: query.minScore, maxFaces: query.maxFaces }, signal);
    this.metrics.decode.observe(image.ms / 1000);
    signal?.throwIfAborted();
    const { faces, detectMs, alignMs, inferenceMs } = query.detect ? await this.answerFaces(image) : await this.answerWhole(image);
    const timingsMs = { decode: round(image.ms), detect: round(detectMs), align: round(alignMs), inference: round(inferenceMs), total: round(performance.now() - startedAt) };
    return { image: { width: image.width, height: image.height }, faces, timingsMs };
  }

  private async answerWhole(image: DecodedImage): Promise<{ faces: FacePrediction[]; detectMs: number; alignMs: number; inferenceMs: number }> {
    if (image.prepared.kind !== 'whole') throw new Error('The decode thread found faces for a whole-image request');
    const result = await this.batcher.submit({ inputs: image.prepared.inputs });
    return { faces: [faceAnswer(wholeImagePosition(image.width, image.height), this.inTaskOrder(result.tasks))], detectMs: 0, alignMs: 0, inferenceMs: result.ms };
  }

  /** The faces the decode thread found and cut out (in its pixels' coordinates), judged in the batcher. */
  private async answerFaces(image: DecodedImage): Promise<{ faces: FacePrediction[]; detectMs: number; alignMs: number; inferenceMs: number }> {
    if (image.prepared.kind !== 'faces') throw new Error('The decode thread looked for no face in a detection request');
    const { faces: found, detectMs, alignMs } = image.prepared;
    this.metrics.inference.observe(detectMs / 1000, { model: 'detector' });
    const inferenceStarted = performance.now();
    const judged = await Promise.all(found.map((face) => ('reason' in face ? undefined : this.batcher.submit({ inputs: face.inputs }))));
    const faces = found.map((found, i) => {
      const result = judged[i];
      return faceAnswer(facePosition(found.face, image.scale), result === undefined ? { reason: 'reason' in found ? found.reason : '' } : this.inTaskOrder(result.tasks));
    });
    return { faces, detectMs, alignMs, inferenceMs: performance.now() - inferenceStarted };
  }

  /** The usual task order, whichever graph answered first. */
  private inTaskOrder(tasks: Record<string, TaskPrediction>): Record<string, TaskPrediction> {
    return Object.fromEntries(this.taskOrder.map((task) => [task, tasks[task]]));
  }

  /** One run per graph over the whole batch (or one per face where a graph's batch size is fixed at 1), each run timed by graph. */
  private async infer(faces: FaceInputs[]): Promise<InferenceResult[]> {
    const started = performance.now();
    this.metrics.batchSize.observe(faces.length);
    const answers = await answerFaces({ graphs: this.graphs }, this.timedRun, faces.map((face) => face.inputs));
    const ms = performance.now() - started;
    return answers.map((tasks) => ({ tasks, ms }));
  }

  /** `run`, observed in inference_seconds under the graph's tasks. */
  private readonly timedRun: typeof run = async (session, inputs) => {
    const started = performance.now();
    const outputs = await run(session, inputs);
    this.metrics.inference.observe((performance.now() - started) / 1000, { model: this.graphLabels.get(session) ?? 'unknown' });
    return outputs;
  };
}
