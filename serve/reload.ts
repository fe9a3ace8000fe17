/**
 * What serves a set of models (the onnxruntime sessions, decode threads prepared for their inputs, each with its
 * own session of the set's detector, a predictor) and swapping a newly loaded set in on request (SIGHUP). The
 * page's /models/ files, /v1/models and the predictor always come from one set, published in one synchronous
 * step; requests in flight finish on the set that admitted them, which is released once no image of it is in
 * progress. A set that fails to load changes nothing.
 */
import type { ServeState } from './app-state.ts';
import type { ServeConfig } from './config.ts';
import { DecodePool } from './decode-pool.ts';
import type { Logger } from './log.ts';
import type { ServeMetrics } from './metrics.ts';
import { loadModels, type LoadedModels } from './models.ts';
import { Predictor } from './predictor.ts';
import type { WorkerEntry } from '../node-shared/workers.ts';

/** One loaded model set and what serves it. */
export interface ServingSet {
  models: LoadedModels;
  pool: DecodePool;
  predictor: Predictor;
  /** When the set finished loading (Date.now()), for the logs. */
  loadedAt: number;
  /** Takes its predictor out of the queue gauges, closes the decode threads and releases the sessions. */
  close(): Promise<void>;
}

export interface ServingDeps {
  metrics: ServeMetrics;
  log: Logger;
  /** The decode threads' code, prepared once per process (see DecodePool.prepare). */
  workerEntry: Promise<WorkerEntry>;
}

/** Images a decode thread holds at once, so that it never idles between messages. */
const IMAGES_PER_DECODE_THREAD = 2;

/** How often a retired set checks whether its last image is answered. */
const IDLE_POLL_MS = 50;

/** Loads the models of `config.modelsDir` and starts decode threads for them; on failure, releases what it loaded. */
export async function loadServingSet(config: ServeConfig, deps: ServingDeps): Promise<ServingSet> {
  const { metrics, log } = deps;
  const models = await loadModels(config.modelsDir, { device: config.device, merge: config.mergeModels, threads: config.inferenceThreads, log });
  let pool: DecodePool | undefined;
  try {
    // The first detector the manifest lists finds the faces; without one, every image is taken as one face.
    const detector = models.detectors[0];
    pool = await DecodePool.start(
      {
        threads: config.decodeThreads,
        perThread: IMAGES_PER_DECODE_THREAD,
        taskTimeoutMs: config.requestTimeoutMs,
        specs: models.specs,
        // Each thread opens its own session of the detector from the checked bytes: it runs beside decoding there.
        ...(detector === undefined ? {} : { detector: { bytes: detector.bytes, inputName: detector.inputName, inputSize: detector.input.height } }),
        maxPixels: config.maxPixels,
        minImageSide: config.minImageSide,
        onError: (error) => log.error('decode thread failed', error),
        onReplaced: () => {
          metrics.threadsReplaced.inc();
          log.warn(`a decode thread was busy with one image for over ${config.requestTimeoutMs} ms; replaced it`);
        },
      },
      deps.workerEntry,
    );
    await pool.ready();
    const predictor = new Predictor(models.graphs, pool, metrics, config);
    const started = pool;
    return {
      models,
      pool,
      predictor,
      loadedAt: Date.now(),
      close: async () => {
        predictor.close();
        await started.close();
        await models.release();
      },
    };
  } catch (error) {
    await pool?.close().catch(() => {});
    await models.release().catch(() => {});
    throw error;
  }
}

/** One line on what a set serves: the detector, the graphs and their provider, the decode threads. */
export function describeServingSet(set: ServingSet, config: ServeConfig): string {
  const detector = set.models.detectors[0];
  return (
    `${detector === undefined ? 'no face detector (every image is one face), ' : `faces found by ${detector.name} in the decode threads (cpu), `}` +
    `${set.models.graphs.map((g) => g.tasks.join('+')).join(', ')} on ${set.models.report.provider}, ` +
    `${config.decodeThreads} decode thread(s) (${set.pool.entry.how}), batches of up to ${config.maxBatch}`
  );
}

/** Makes `set` the one new requests get: the predictor, /v1/models and the /models/ files change together. */
export function publish(state: ServeState, set: ServingSet): void {
  state.models = set.models.report;
  state.modelFiles = set.models.files;
  state.predictor = set.predictor;
}

export type ReloadOutcome = { reloaded: true; ms: number } | { reloaded: false; reason: string };

/**
 * Holds the set being served and swaps in a fresh load of the models folder on `reload()`. Reloads run one at a
 * time; a reload asked for while one runs is done once after it (so that the last change on disk is seen).
 */
export class ModelReloader {
  private running?: Promise<ReloadOutcome>;
  private queued?: Promise<ReloadOutcome>;
  /** Sets replaced by a reload and not yet released (their requests still in flight). */
  private readonly retiring = new Set<Promise<void>>();
  private closed = false;

  constructor(
    private current: ServingSet,
    private readonly state: ServeState,
    private readonly load: () => Promise<ServingSet>,
    private readonly config: ServeConfig,
    private readonly log: Logger,
  ) {}

  /** The set new requests get. */
  get serving(): ServingSet {
    return this.current;
  }

  reload(): Promise<ReloadOutcome> {
    if (this.queued !== undefined) return this.queued;
    if (this.running === undefined) return this.start();
    const queued = this.running.then(() => {
      this.queued = undefined;
      return this.start();
    });
    this.queued = queued;
    return queued;
  }

  private start(): Promise<ReloadOutcome> {
    const running = this.reloadOnce().finally(() => {
      if (this.running === running) this.running = undefined;
    });
    this.running = running;
    return running;
  }

  private async reloadOnce(): Promise<ReloadOutcome> {
    if (this.closed || this.state.draining) return { reloaded: false, reason: 'the server is shutting down' };
    const started = performance.now();
    this.log.info(`loading the models of ${this.config.modelsDir} again; the current ones serve meanwhile`);
    let next: ServingSet;
    try {
      next = await this.load();
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      this.log.error(`reload failed, still serving the models loaded at ${new Date(this.current.loadedAt).toISOString()}: ${reason}`);
      return { reloaded: false, reason };
    }
    if (this.closed || this.state.draining) {
      await next.close();
      return { reloaded: false, reason: 'the server is shutting down' };
    }
    const previous = this.current;
    this.current = next;
    publish(this.state, next);
    const ms = Math.round(performance.now() - started);
    this.log.info(
      `reloaded in ${ms} ms: ${describeServingSet(next, this.config)}; the previous models are released once their ${previous.predictor.depth} image(s) in flight are answered`,
    );
    this.retire(previous);
    return { reloaded: true, ms };
  }

  /** Releases `set` once no image it admitted is in progress (its requests hold it until they are answered). */
  private retire(set: ServingSet): void {
    const released = (async () => {
      while (set.predictor.depth > 0 && !this.closed) await new Promise((resolve) => setTimeout(resolve, IDLE_POLL_MS));
      await set.close();
      this.log.info(`released the models loaded at ${new Date(set.loadedAt).toISOString()}`);
    })()
      .catch((error: unknown) => this.log.error('releasing the previous models failed', error))
      .finally(() => this.retiring.delete(released));
    this.retiring.add(released);
  }

  /** For shutdown (after requests in flight are done or cut off): waits for a reload in progress, then releases every set. */
  async close(): Promise<void> {
    this.closed = true;
    await this.queued?.catch(() => {});
    await this.running?.catch(() => {});
    await Promise.all([...this.retiring]);
    await this.current.close();
  }
}
