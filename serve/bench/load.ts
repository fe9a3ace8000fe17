/**
 * A closed-loop HTTP load generator for loopback only: `concurrency` clients each send the next image as soon
 * as their previous answer arrives, until a time limit or a request count is reached (whichever comes first).
 */
import { connect, type Socket } from 'node:net';

export interface LoadOptions {
  /** Must be a loopback URL (127.0.0.1); anything else is refused. */
  url: string;
  bodies: readonly Uint8Array[];
  contentType: string;
  concurrency: number;
  durationMs: number;
  maxRequests: number;
  /** A client gives up on one request after this long (counted as a timeout). */
  requestTimeoutMs?: number;
}

export interface LoadResult {
  concurrency: number;
  seconds: number;
  requests: number;
  /** responses by status code; 0 = no response (connection error) and -1 = timed out in the client */
  byStatus: Record<number, number>;
  requestsPerSecond: number;
  okPerSecond: number;
  /** latency percentiles of 200 answers, in ms */
  okP50: number;
  okP99: number;
  /** latency percentiles of every answer, in ms */
  p50: number;
  p99: number;
  retryAfterSeen: boolean;
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function assertLoopback(url: string): URL {
  const parsed = new URL(url);
  if (parsed.hostname !== '127.0.0.1') throw new Error(`The load generator only targets 127.0.0.1; got "${parsed.hostname}"`);
  return parsed;
}

/** A prebuilt HTTP/1.1 request: head and body in one buffer, written with one call. */
function buildRequest(target: URL, contentType: string, body: Uint8Array): Uint8Array {
  const head = new TextEncoder().encode(`POST ${target.pathname}${target.search} HTTP/1.1\r\nHost: ${target.host}\r\nContent-Type: ${contentType}\r\nContent-Length: ${body.length}\r\n\r\n`);
  const request = new Uint8Array(head.length + body.length);
  request.set(head);
  request.set(body, head.length);
  return request;
}

/** Index of the blank line that ends a response head, or -1. */
function headEnd(bytes: Uint8Array): number {
  for (let i = 0; i + 3 < bytes.length; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) return i;
  }
  return -1;
}

const latin1 = new TextDecoder('latin1');

/**
 * One keep-alive connection that sends requests one after another and reads each answer's status line and
 * Content-Length, nothing more: a load generator must cost the shared CPU as little as it can.
 */
class LoopbackConnection {
  private socket: Socket | undefined;
  private buffered: Uint8Array = new Uint8Array(0);
  private waiting: ((answer: { status: number; retryAfter: boolean }) => void) | undefined;

  constructor(private readonly target: URL) {}

  send(request: Uint8Array, timeoutMs: number): Promise<{ status: number; retryAfter: boolean }> {
    return new Promise((resolve) => {
      const socket = this.socket ?? this.connect();
      const timer = setTimeout(() => {
        this.reset();
        resolve({ status: -1, retryAfter: false });
      }, timeoutMs);
      this.waiting = (answer) => {
        clearTimeout(timer);
        resolve(answer);
      };
      socket.write(request);
    });
  }

  close(): void {
    this.socket?.destroy();
    this.socket = undefined;
  }

  private connect(): Socket {
    const socket = connect({ host: this.target.hostname, port: Number(this.target.port) });
    socket.setNoDelay(true);
    socket.on('data', (chunk: Uint8Array) => this.onData(chunk));
    const lost = (): void => {
      if (this.socket !== socket) return;
      this.reset();
      this.answer({ status: 0, retryAfter: false });
    };
    socket.on('error', lost);
    socket.on('close', lost);
    this.socket = socket;
    this.buffered = new Uint8Array(0);
    return socket;
  }

  private reset(): void {
    const socket = this.socket;
    this.socket = undefined;
    socket?.destroy();
  }

  private answer(answer: { status: number; retryAfter: boolean }): void {
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.(answer);
  }

  private onData(chunk: Uint8Array): void {
    if (this.buffered.length === 0) this.buffered = chunk;
    else {
      const joined = new Uint8Array(this.buffered.length + chunk.length);
      joined.set(this.buffered);
      joined.set(chunk, this.buffered.length);
      this.buffered = joined;
    }
    const end = headEnd(this.buffered);
    if (end === -1) return;
    const head = latin1.decode(this.buffered.subarray(0, end)).toLowerCase();
    const length = Number(/\r\ncontent-length: *(\d+)/.exec(head)?.[1] ?? 0);
    if (this.buffered.length < end + 4 + length) return;
    this.buffered = this.buffered.subarray(end + 4 + length);
    const status = Number(head.slice(9, 12));
    // A server that closes after this answer: the next request opens a new connection.
    if (head.includes('\r\nconnection: close')) this.reset();
    this.answer({ status, retryAfter: head.includes('\r\nretry-after:') });
  }
}

export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const target = assertLoopback(options.url);
  const timeoutMs = options.requestTimeoutMs ?? 30_000;
  const requests = options.bodies.map((body) => buildRequest(target, options.contentType, body));
  const okLatencies: number[] = [];
  const allLatencies: number[] = [];
  const byStatus: Record<number, number> = {};
  let retryAfterSeen = false;
  let sent = 0;
  let next = 0;
  const started = performance.now();
  const deadline = started + options.durationMs;

  const client = async (): Promise<void> => {
    const connection = new LoopbackConnection(target);
    while (performance.now() < deadline && sent < options.maxRequests) {
      sent++;
      const t0 = performance.now();
      const { status, retryAfter } = await connection.send(requests[next++ % requests.length], timeoutMs);
      const ms = performance.now() - t0;
      byStatus[status] = (byStatus[status] ?? 0) + 1;
      allLatencies.push(ms);
      if (status === 200) okLatencies.push(ms);
      if (retryAfter) retryAfterSeen = true;
    }
    connection.close();
  };
  await Promise.all(Array.from({ length: options.concurrency }, client));

  const seconds = (performance.now() - started) / 1000;
  okLatencies.sort((a, b) => a - b);
  allLatencies.sort((a, b) => a - b);
  return {
    concurrency: options.concurrency,
    seconds,
    requests: allLatencies.length,
    byStatus,
    requestsPerSecond: allLatencies.length / seconds,
    okPerSecond: okLatencies.length / seconds,
    okP50: percentile(okLatencies, 50),
    okP99: percentile(okLatencies, 99),
    p50: percentile(allLatencies, 50),
    p99: percentile(allLatencies, 99),
    retryAfterSeen,
  };
}
