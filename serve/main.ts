/**
 * `npm start`: serves the models in models/ and the web demo. SIGHUP loads the models folder again and serves it
 * if it loads (serve/reload.ts). With `--workers N`, N processes share the port (node:cluster); the primary
 * restarts a worker that dies, forwards SIGTERM and SIGHUP, and sums metrics across workers.
 */
import cluster, { type Worker } from 'node:cluster';
import { reportUsageError } from '../node-shared/cli-args.ts';
import { ConfigError, helpText, loadConfig, type ServeConfig } from './config.ts';
import { createLogger, type Logger } from './log.ts';
import { mergeSnapshots, type RegistrySnapshot } from './metrics.ts';
import { startServer } from './server.ts';

/** Messages between the primary and its workers, for metrics gathered across the cluster. */
type ClusterMessage =
  | { type: 'metrics:gather'; id: number }
  | { type: 'metrics:request'; id: number }
  | { type: 'metrics:snapshot'; id: number; snapshot: RegistrySnapshot }
  | { type: 'metrics:merged'; id: number; snapshot: RegistrySnapshot };

const GATHER_TIMEOUT_MS = 1_000;

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(helpText());
    return;
  }
  let config: ServeConfig;
  try {
    config = loadConfig(argv);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    reportUsageError(error.message, helpText());
    process.exit(2);
  }
  if (config.workers > 1 && cluster.isPrimary) runPrimary(config);
  else await runWorker(config);
}

async function runWorker(config: ServeConfig): Promise<void> {
  const inCluster = cluster.isWorker;
  const log = createLogger(config.logLevel, inCluster ? `[worker ${cluster.worker?.id}] ` : '');
  const server = await startServer(config, { log, collectMetrics: inCluster ? gatherFromPrimary : undefined }).catch((error: unknown) => {
    log.error(`cannot start: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  });
  if (inCluster) answerSnapshotRequests(() => server.metrics.snapshot());

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info(`${signal}: finishing requests in flight, then exiting`);
    server.shutdown().then(
      () => {
        log.info('stopped');
        process.exit(0);
      },
      (error: unknown) => {
        log.error('shutdown failed', error);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // The reload logs its own outcome; a failed one leaves the models being served as they were.
  process.on('SIGHUP', () => {
    if (stopping) return;
    log.info('SIGHUP: reloading the models');
    server.reload().catch(() => {});
  });

  try {
    await server.ready;
  } catch (error) {
    // A start-up failure (no models, a checksum mismatch, CUDA asked for and missing) says what to do and exits.
    log.error(`cannot serve: ${error instanceof Error ? error.message : String(error)}`);
    await server.shutdown().catch(() => {});
    process.exit(1);
  }
}

function runPrimary(config: ServeConfig): void {
  const log = createLogger(config.logLevel, '[primary] ');
  let stopping = false;
  /** Gathers in progress: the requesting worker, its own request id, and the snapshots so far. */
  const pending = new Map<number, { snapshots: RegistrySnapshot[]; expected: number; requester: Worker; requestId: number; timer: NodeJS.Timeout }>();
  let nextId = 1;

  const finishGather = (id: number): void => {
    const gather = pending.get(id);
    if (gather === undefined) return;
    pending.delete(id);
    clearTimeout(gather.timer);
    if (gather.requester.isConnected()) {
      gather.requester.send({ type: 'metrics:merged', id: gather.requestId, snapshot: mergeSnapshots(gather.snapshots) } satisfies ClusterMessage);
    }
  };

  const fork = (): void => {
    const worker = cluster.fork();
    worker.on('message', (message: ClusterMessage) => {
      if (message.type === 'metrics:gather') {
        const id = nextId++;
        const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined && w.isConnected());
        const timer = setTimeout(() => finishGather(id), GATHER_TIMEOUT_MS);
        pending.set(id, { snapshots: [], expected: workers.length, requester: worker, requestId: message.id, timer });
        for (const w of workers) w.send({ type: 'metrics:request', id } satisfies ClusterMessage);
      } else if (message.type === 'metrics:snapshot') {
        const gather = pending.get(message.id);
        if (gather === undefined) return;
        gather.snapshots.push(message.snapshot);
        if (gather.snapshots.length >= gather.expected) finishGather(message.id);
      }
    });
  };

  log.info(`starting ${config.workers} worker processes`);
  for (let i = 0; i < config.workers; i++) fork();
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) {
        log.info('all workers stopped');
        process.exit(0);
      }
      return;
    }
    if (code === 1) {
      // A worker that cannot start (no models, say) would fail again: stop rather than loop.
      log.error(`worker ${worker.id} could not start; stopping`);
      stopping = true;
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
      process.exitCode = 1;
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(1);
      return;
    }
    log.warn(`worker ${worker.id} exited (${signal ?? `code ${code}`}); starting another`);
    fork();
  });
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    log.info(`${signal}: stopping workers`);
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGTERM');
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => {
    if (stopping) return;
    const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined);
    log.info(`SIGHUP: asking ${workers.length} worker(s) to reload the models`);
    for (const worker of workers) worker.process.kill('SIGHUP');
  });
}

/** In a worker: asks the primary for every worker's metrics, summed; falls back to its own. */
let gatherId = 1;
const gatherWaiters = new Map<number, (snapshot: RegistrySnapshot) => void>();
function gatherFromPrimary(own: () => RegistrySnapshot): Promise<RegistrySnapshot> {
  return new Promise<RegistrySnapshot>((resolve) => {
    const id = gatherId++;
    const timer = setTimeout(() => {
      gatherWaiters.delete(id);
      resolve(own());
    }, GATHER_TIMEOUT_MS * 2);
    gatherWaiters.set(id, (snapshot) => {
      gatherWaiters.delete(id);
      clearTimeout(timer);
      resolve(snapshot);
    });
    process.send?.({ type: 'metrics:gather', id } satisfies ClusterMessage);
  });
}

function answerSnapshotRequests(own: () => RegistrySnapshot): void {
  process.on('message', (message: ClusterMessage) => {
    if (message.type === 'metrics:request') process.send?.({ type: 'metrics:snapshot', id: message.id, snapshot: own() } satisfies ClusterMessage);
    else if (message.type === 'metrics:merged') gatherWaiters.get(message.id)?.(message.snapshot);
  });
}

await main();
