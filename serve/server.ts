/**
 * One serving process: listens at once (so /healthz answers while the models load), loads the models and
 * starts the decode threads side by side, reloads the models when asked (reload.ts), and shuts down gracefully:
 * stop accepting, finish what is in flight, release everything.
 */
import { createServer, STATUS_CODES, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createApp, type ServeState } from './app.ts';
import { OPTIONS, type ServeConfig } from './config.ts';
import { DecodePool } from './decode-pool.ts';
import type { Logger } from './log.ts';
import { ServeMetrics, type RegistrySnapshot } from './metrics.ts';
import { describeServingSet, loadServingSet, ModelReloader, publish, type ReloadOutcome } from './reload.ts';

/** What a connection gets when Node's HTTP parser refuses it, by the parser's error code. */
const CLIENT_ERRORS: Record<string, [number, string, string]> = {
  HPE_INVALID_EOF_STATE: [400, 'incomplete_upload', 'The upload ended before the whole body arrived; send it again'],
  HPE_HEADER_OVERFLOW: [431, 'headers_too_large', 'The request headers are too large; send fewer or shorter headers'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'upload_timeout', 'The request did not arrive in time; send it again'],
  default: [400, 'bad_request', 'The request is not valid HTTP/1.1; check the request line and headers'],
};

export interface RunningServer {
  readonly url: string;
  readonly port: number;
  /** Resolves when the models are loaded and the decode threads started; rejects if start-up failed. */
  readonly ready: Promise<void>;
  readonly metrics: ServeMetrics;
  readonly state: ServeState;
  /**
   * Loads the models folder again and, if it loads, serves it from then on (requests in flight finish on the old
   * models); if it does not, keeps serving the old ones. Waits for start-up first; rejects if start-up failed.
   */
  reload(): Promise<ReloadOutcome>;
  /** Stops accepting, lets requests in flight finish (up to the shutdown time limit), and releases everything. */
  shutdown(): Promise<void>;
}

export interface StartOptions {
  log: Logger;
  /** Where a cluster gathers every process's metrics; this process's own by default. */
  collectMetrics?: (own: () => RegistrySnapshot) => Promise<RegistrySnapshot>;
}

export async function startServer(config: ServeConfig, options: StartOptions): Promise<RunningServer> {
  const { log } = options;
  const metrics = new ServeMetrics();
  const own = (): RegistrySnapshot => metrics.snapshot();
  const collect = options.collectMetrics;
  const state: ServeState = { draining: false, collectMetrics: collect === undefined ? async () => own() : () => collect(own) };
  const app = createApp(config, state, metrics, log);
  const server = createServer({ keepAliveTimeout: 5_000, requestTimeout: 0 }, app);
  server.headersTimeout = Math.min(config.requestTimeoutMs, 60_000);
  // Requests that never reach the app (unparseable, cut off, headers too large) still get a JSON error.
  server.on('clientError', (error: NodeJS.ErrnoException, socket) => {
    if (!socket.writable || socket.destroyed || error.code === 'ECONNRESET') {
      socket.destroy();
      return;
    }
    const [status, code, message] = CLIENT_ERRORS[error.code ?? ''] ?? CLIENT_ERRORS.default;
    metrics.errors.inc({ code });
    const body = JSON.stringify({ error: { code, message } });
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  });
  await listen(server, config);
  const port = (server.address() as AddressInfo).port;
  const shownHost = config.host === '' || config.host === '0.0.0.0' || config.host === '::' ? 'localhost' : config.host;
  const url = `http://${shownHost.includes(':') ? `[${shownHost}]` : shownHost}:${port}`;
  log.info(`listening on ${url}`);

  const reloader = (async (): Promise<ModelReloader> => {
    const started = performance.now();
    const workerEntry = DecodePool.prepare();
    // An unobserved rejection would crash the process before loadModels' own error is reported.
    workerEntry.catch(() => {});
    const load = () => loadServingSet(config, { metrics, log, workerEntry });
    const first = await load();
    publish(state, first);
    log.info(`ready in ${Math.round(performance.now() - started)} ms: ${describeServingSet(first, config)}`);
    return new ModelReloader(first, state, load, config, log);
  })();
  const ready = reloader.then(() => {});
  // The caller decides what a failed start-up means; an unobserved rejection must not crash the process first.
  ready.catch(() => {});

  let shutdownPromise: Promise<void> | undefined;
  const shutdown = (): Promise<void> => {
    shutdownPromise ??= (async () => {
      state.draining = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Keep-alive connections close as soon as their request in flight is answered.
      const sweeper = setInterval(() => server.closeIdleConnections(), 50);
      server.closeIdleConnections();
      const timedOut = new Promise<boolean>((resolve) => setTimeout(() => resolve(true), config.shutdownTimeoutMs).unref());
      if (await Promise.race([closed.then(() => false), timedOut])) {
        log.warn(`requests still in flight after ${config.shutdownTimeoutMs} ms; closing their connections`);
        server.closeAllConnections();
        await closed;
      }
      clearInterval(sweeper);
      await reloader.then((r) => r.close(), () => {});
    })();
    return shutdownPromise;
  };

  const reload = async (): Promise<ReloadOutcome> => (await reloader).reload();

  return { url, port, ready, metrics, state, reload, shutdown };
}

/** Listens on the configured address; a port in use or refused says which and how to choose another. */
function listen(server: Server, config: ServeConfig): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const fail = (error: NodeJS.ErrnoException): void => {
      const where = `${config.host === '' ? 'port' : `${config.host} port`} ${config.port}`;
      const hint = `choose another with ${OPTIONS.port.flag} (or ${OPTIONS.port.env}); ${OPTIONS.port.flag} 0 takes any free one`;
      if (error.code === 'EADDRINUSE') reject(new Error(`${where} is already in use (another server, or an earlier one still running); ${hint}`, { cause: error }));
      else if (error.code === 'EACCES') reject(new Error(`${where} needs privileges this process does not have; ${hint}`, { cause: error }));
      else reject(error);
    };
    server.once('error', fail);
    const done = (): void => {
      server.off('error', fail);
      resolve();
    };
    if (config.host === '') server.listen(config.port, done);
    else server.listen(config.port, config.host, done);
  });
}
