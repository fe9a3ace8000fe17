/**
 * A pool of worker threads that decode images, preprocess them and find their faces (each thread holds its own
 * detector session), so that this CPU work never stalls the event loop. Each thread takes a couple of images at a
 * time (so it does not idle between messages); the rest wait here in order. A thread stuck past the time limit (a
 * pathological image) is replaced.
 */
import { Worker } from 'node:worker_threads';
import { errorFromCode, RequestTimeoutError, ShuttingDownError } from './errors.ts';
import type { DecodedPhotoReply, DecodeReply, DecodeRequest, DecodeWorkerData } from './decode-worker.ts';
import { prepareWorker, type WorkerEntry } from '../node-shared/workers.ts';
import type { FaceSearch } from '../contract/face/photo.ts';

/** A decoded upload and what its models read (see decode-worker.ts). */
export type DecodedImage = DecodedPhotoReply;

export interface DecodePoolOptions extends DecodeWorkerData {
  threads: number;
  /** Images one thread holds at once. */
  perThread: number;
  /** A thread busy with one image for longer than this is replaced. */
  taskTimeoutMs: number;
  onError?: (error: Error) => void;
  /** Called when a thread stuck past the time limit is replaced. */
  onReplaced?: () => void;
}

interface Task {
  id: number;
  bytes: Uint8Array;
  search: FaceSearch | false;
  resolve: (image: DecodedImage) => void;
  reject: (error: unknown) => void;
  signal?: AbortSignal;
  startedAt?: number;
}

interface Thread {
  worker: Worker;
  tasks: Map<number, Task>;
  ready: Promise<void>;
  /** Whether its modules are loaded: a thread gets images (and its time limit runs) only from then on. */
  loaded: boolean;
}

const WORKER_ENTRY = new URL('./decode-worker.ts', import.meta.url);

export class DecodePool {
  private readonly threads: Thread[] = [];
  private readonly waiting: Task[] = [];
  private nextId = 1;
  private closed = false;
  private readonly watchdog: NodeJS.Timeout;

  /** Prepares the thread's code (see node-shared/workers.ts); independent of the models, so it can run beside their loading. */
  static prepare(): Promise<WorkerEntry> {
    return prepareWorker(WORKER_ENTRY);
  }

  /** Starts the threads; `ready()` resolves once they have loaded. */
  static async start(options: DecodePoolOptions, entry: Promise<WorkerEntry> = DecodePool.prepare()): Promise<DecodePool> {
    return new DecodePool(options, await entry);
  }

  private constructor(
    private readonly options: DecodePoolOptions,
    /** How the threads were started (see node-shared/workers.ts). */
    readonly entry: WorkerEntry,
  ) {
    for (let i = 0; i < options.threads; i++) this.threads.push(this.spawn());
    this.watchdog = setInterval(() => this.replaceStuckThreads(), Math.min(1000, options.taskTimeoutMs)).unref();
  }

  /** Resolves once every thread has loaded its modules. */
  async ready(): Promise<void> {
    await Promise.all(this.threads.map((thread) => thread.ready));
  }

  /** Images waiting for a thread. */
  get backlog(): number {
    return this.waiting.length;
  }

  /** Whether the threads find faces (the pool was given a detector). */
  get detects(): boolean {
    return this.options.detector !== undefined;
  }

  /** Decodes an upload and finds its faces with `search`; with false (or no detector) the whole image is one face. */
  decode(bytes: Uint8Array, search: FaceSearch | false, signal?: AbortSignal): Promise<DecodedImage> {
    if (this.closed || this.threads.length === 0) return Promise.reject(new Error('The decode pool is closed or has no thread'));
    return new Promise<DecodedImage>((resolve, reject) => {
      const task: Task = { id: this.nextId++, bytes, search, resolve, reject, signal };
      this.waiting.push(task);
      this.dispatch();
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.watchdog);
    for (const task of this.waiting.splice(0)) task.reject(new Error('The decode pool is closed'));
    await Promise.all(this.threads.map((thread) => thread.worker.terminate()));
  }

  private spawn(): Thread {
    const { threads: _threads, perThread: _perThread, taskTimeoutMs: _timeout, onError: _onError, onReplaced: _onReplaced, ...data } = this.options;
    const worker = new Worker(this.entry.source, { eval: this.entry.eval, workerData: data satisfies DecodeWorkerData });
    const tasks = new Map<number, Task>();
    let markReady: () => void = () => {};
    let markFailed: (error: Error) => void = () => {};
    const ready = new Promise<void>((resolve, reject) => {
      markReady = resolve;
      markFailed = reject;
    });
    // Replacements' readiness is awaited by no one: a failure is reported through onError and the exit handler.
    ready.catch(() => {});
    const thread: Thread = { worker, tasks, ready, loaded: false };
    worker.on('message', (reply: DecodeReply | 'ready') => {
      if (reply === 'ready') {
        thread.loaded = true;
        markReady();
        this.dispatch();
        return;
      }
      const task = tasks.get(reply.id);
      if (task === undefined) return;
      tasks.delete(reply.id);
      if (reply.ok) {
        const { id: _id, ok: _ok, ...photo } = reply;
        task.resolve(photo);
      }
      else task.reject(errorFromCode(reply.code, reply.message));
      this.dispatch();
    });
    worker.on('error', (error) => {
      markFailed(error);
      this.options.onError?.(error);
    });
    worker.on('exit', () => {
      const index = this.threads.indexOf(thread);
      if (index === -1) return;
      if (this.closed) {
        for (const task of tasks.values()) task.reject(new ShuttingDownError('The server shut down while decoding this image; send it again'));
        tasks.clear();
        return;
      }
      // An unexpected exit: fail what it held and put a fresh thread in its place, unless it never
      // loaded (its code is broken: a replacement would fail the same way, over and over).
      for (const task of tasks.values()) task.reject(new Error('A decode thread exited while decoding this image'));
      tasks.clear();
      if (!thread.loaded) {
        markFailed(new Error('A decode thread exited while loading'));
        this.threads.splice(index, 1);
        if (this.threads.length === 0) for (const task of this.waiting.splice(0)) task.reject(new Error('No decode thread could start'));
        else this.dispatch();
        return;
      }
      this.threads[index] = this.spawn();
      this.dispatch();
    });
    return thread;
  }

  private dispatch(): void {
    while (this.waiting.length > 0) {
      let target: Thread | undefined;
      for (const thread of this.threads) {
        if (thread.loaded && thread.tasks.size < this.options.perThread && (target === undefined || thread.tasks.size < target.tasks.size)) target = thread;
      }
      if (target === undefined) return;
      const task = this.waiting.shift() as Task;
      // A request that was abandoned while it waited (timed out, client gone) is not decoded.
      if (task.signal?.aborted) {
        task.reject(task.signal.reason);
        continue;
      }
      task.startedAt = performance.now();
      target.tasks.set(task.id, task);
      // The bytes are copied into a buffer of their own so that it can be transferred rather than cloned.
      const copy = new Uint8Array(task.bytes);
      target.worker.postMessage({ id: task.id, bytes: copy, search: task.search } satisfies DecodeRequest, [copy.buffer]);
    }
  }

  private replaceStuckThreads(): void {
    const now = performance.now();
    for (const [index, thread] of this.threads.entries()) {
      const stuck = [...thread.tasks.values()].some((task) => task.startedAt !== undefined && now - task.startedAt > this.options.taskTimeoutMs);
      if (!stuck) continue;
      // Threads take their images in order: the oldest is the one stuck, the others go back to the front of the line.
      const [culprit, ...innocent] = [...thread.tasks.values()];
      thread.tasks.clear();
      culprit.reject(new RequestTimeoutError('Decoding this image took longer than the time limit; try a smaller or simpler image'));
      for (const task of innocent) task.startedAt = undefined;
      this.waiting.unshift(...innocent);
      // The replacement takes the thread's place now: the old one stays alive until terminate() ends it, and
      // must get no image in the meantime (its exit handler, no longer finding it in the pool, does nothing).
      this.threads[index] = this.spawn();
      void thread.worker.terminate();
      this.options.onReplaced?.();
    }
    // The images put back in line go to whichever thread is free first, the replacement once it has loaded.
    this.dispatch();
  }
}
