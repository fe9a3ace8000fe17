/**
 * The server's test harness: a server started in this process on fixture models, images made to
 * order, and raw HTTP over a socket for requests that fetch() refuses to send (cut-off uploads, odd paths).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32, deflateSync } from 'node:zlib';
import { Jimp } from 'jimp';
import { loadConfig, type ServeConfig } from '../../serve/config.ts';
import type { Logger } from '../../serve/log.ts';
import { startServer, type RunningServer } from '../../serve/server.ts';
import { writeFixtureModels, type FixtureOptions } from './fixture-models.ts';

export interface TestServer {
  server: RunningServer;
  url: string;
  config: ServeConfig;
  modelsDir: string;
  logs: string[];
  close(): Promise<void>;
}

/** A logger that keeps its lines (for assertions) instead of printing them. */
export function memoryLogger(lines: string[]): Logger {
  const keep = (level: string) => (message: string, error?: unknown) => lines.push(`${level} ${message}${error instanceof Error ? `: ${error.stack}` : ''}`);
  return { error: keep('error'), warn: keep('warn'), info: keep('info'), debug: () => {} };
}

/** Starts a server on 127.0.0.1 and a free port, on fixture models unless `modelsDir` is given. */
export async function startTestServer(options: { flags?: string[]; fixture?: FixtureOptions; modelsDir?: string; env?: NodeJS.ProcessEnv } = {}): Promise<TestServer> {
  let scratch: string | undefined;
  let modelsDir = options.modelsDir;
  if (modelsDir === undefined) {
    scratch = mkdtempSync(join(tmpdir(), 'serve-test-models-'));
    await writeFixtureModels(scratch, options.fixture);
    modelsDir = scratch;
  }
  const config = loadConfig(['--host', '127.0.0.1', '--port', '0', '--models', modelsDir, ...(options.flags ?? [])], options.env ?? {});
  const logs: string[] = [];
  const server = await startServer(config, { log: memoryLogger(logs) });
  await server.ready;
  const url = `http://127.0.0.1:${server.port}`;
  return {
    server,
    url,
    config,
    modelsDir,
    logs,
    close: async () => {
      await server.shutdown();
      if (scratch !== undefined) rmSync(scratch, { recursive: true, force: true });
    },
  };
}

/** An image of the given size and format with a deterministic pattern (not a face: tests check plumbing). */
export async function makeImage(width: number, height: number, mime: 'image/jpeg' | 'image/png' | 'image/bmp' = 'image/jpeg', seed = 0): Promise<Uint8Array<ArrayBuffer>> {
  const image = new Jimp({ width, height, color: 0xffffffff });
  const data = image.bitmap.data;
  for (let p = 0; p < data.length; p += 4) {
    const x = (p / 4) % width;
    const y = Math.floor(p / 4 / width);
    data[p] = (x * 5 + seed * 31) & 0xff;
    data[p + 1] = (y * 3 + x * y) & 0xff;
    data[p + 2] = (x + y + seed) & 0xff;
  }
  const bytes = mime === 'image/jpeg' ? await image.getBuffer('image/jpeg', { quality: 90 }) : await image.getBuffer(mime);
  return new Uint8Array(bytes);
}

/** Adam7's seven passes: the first column and row each samples, and its step across and down. */
const ADAM7_PASSES = [
  { x0: 0, y0: 0, dx: 8, dy: 8 },
  { x0: 4, y0: 0, dx: 8, dy: 8 },
  { x0: 0, y0: 4, dx: 4, dy: 8 },
  { x0: 2, y0: 0, dx: 4, dy: 4 },
  { x0: 0, y0: 2, dx: 2, dy: 4 },
  { x0: 1, y0: 0, dx: 2, dy: 2 },
  { x0: 0, y0: 1, dx: 1, dy: 2 },
] as const;

/** Bytes of a grayscale image's filtered rows (a filter byte per row), in Adam7's seven sub-images or as one. */
function grayscaleRowBytes(width: number, height: number, interlaced: boolean): number {
  if (!interlaced) return height * (width + 1);
  let bytes = 0;
  for (const { x0, y0, dx, dy } of ADAM7_PASSES) {
    const columns = Math.ceil((width - x0) / dx);
    const rows = Math.ceil((height - y0) / dy);
    if (columns > 0 && rows > 0) bytes += rows * (columns + 1);
  }
  return bytes;
}

/**
 * A black 8-bit grayscale PNG of any size, built directly: its pixels compress to almost nothing, so a
 * 10000x10000 one (a decompression bomb: 400 MB as RGBA) is a few hundred KB. `interlaced` (Adam7) makes a
 * decoder hold and reassemble the whole image rather than stream its rows: seconds of work for a large one.
 */
export function blackPng(width: number, height: number, options: { interlaced?: boolean } = {}): Uint8Array<ArrayBuffer> {
  const interlaced = options.interlaced === true;
  const chunk = (type: string, data: Uint8Array): Buffer => {
    const typed = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const framed = Buffer.alloc(typed.length + 8);
    framed.writeUInt32BE(data.length, 0);
    typed.copy(framed, 4);
    framed.writeUInt32BE(crc32(typed), typed.length + 4);
    return framed;
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth; colour type 0 (grayscale), compression and filter 0
  header[12] = interlaced ? 1 : 0;
  // Each row: filter type 0, then zero bytes.
  const pixels = deflateSync(Buffer.alloc(grayscaleRowBytes(width, height, interlaced)), { level: 9 });
  return new Uint8Array(Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', header), chunk('IDAT', pixels), chunk('IEND', Buffer.alloc(0))]));
}

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * Sends bytes as they are over a new connection and reads until the server closes it or `waitMs` passes.
 * Resolves with the first response, or undefined when none came (the server closed the connection first).
 */
export function rawRequest(port: number, chunks: (string | Uint8Array)[], options: { waitMs?: number; endAfterWrite?: boolean; destroyAfterWrite?: boolean } = {}): Promise<RawResponse | undefined> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    const received: Uint8Array[] = [];
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(parseResponse(Buffer.concat(received).toString('latin1')));
    };
    const timer = setTimeout(finish, options.waitMs ?? 3000);
    socket.on('data', (chunk: Uint8Array) => {
      received.push(chunk);
      const parsed = parseResponse(Buffer.concat(received).toString('latin1'));
      if (parsed !== undefined && Buffer.byteLength(parsed.body, 'latin1') >= Number(parsed.headers['content-length'] ?? Number.POSITIVE_INFINITY)) finish();
    });
    socket.on('close', finish);
    socket.on('error', finish);
    socket.on('connect', () => {
      for (const chunk of chunks) socket.write(chunk);
      if (options.destroyAfterWrite === true) {
        socket.destroy();
        finish();
      } else if (options.endAfterWrite === true) socket.end();
    });
  });
}

function parseResponse(text: string): RawResponse | undefined {
  const end = text.indexOf('\r\n\r\n');
  if (end === -1) return undefined;
  const [statusLine, ...lines] = text.slice(0, end).split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status: Number(statusLine.split(' ')[1]), headers, body: text.slice(end + 4) };
}
