/**
 * The web demo's own static server (`npm run demo`): the built page at `/`, the models at `/models/`, and on
 * every response the headers the page needs. Any static host can stand in for it if it sends the same
 * headers; `CROSS_ORIGIN_ISOLATION_HEADERS` and `CONTENT_TYPES` are the list to copy.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, resolve, sep } from 'node:path';

/**
 * Cross-origin isolation: without it the browser gives onnxruntime-web no SharedArrayBuffer, so no threads.
 * Sent on every response, the worker scripts included (a worker's own response must carry COEP too).
 */
export const CROSS_ORIGIN_ISOLATION_HEADERS: Readonly<Record<string, string>> = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

/** Content types by extension; `.wasm` must be application/wasm for streaming compilation, `.mjs` JavaScript for module workers. */
export const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
  '.onnx': 'application/octet-stream',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.map': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
};

/** Precompressed siblings the build writes (`app.js.br`, `app.js.gz`), best first. */
const ENCODINGS: readonly { name: string; suffix: string }[] = [
  { name: 'br', suffix: '.br' },
  { name: 'gzip', suffix: '.gz' },
];

export interface StaticServerOptions {
  /** the built page (web-demo/dist) */
  distDir: string;
  /** the folder with the .onnx files and manifest.json, served under /models/ */
  modelsDir: string;
  port?: number;
  host?: string;
}

export interface RunningServer {
  server: Server;
  url: string;
  close(): Promise<void>;
}

/** A file under `root` for a URL path, or undefined when the path is malformed or leaves the folder. */
function confine(root: string, urlPath: string): string | undefined {
  let decoded: string;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return undefined;
  }
  if (decoded.includes('\0') || decoded.split(/[\\/]/).some((part) => part === '..' || part.startsWith('.'))) return undefined;
  const file = resolve(root, `.${decoded}`);
  return file === root || file.startsWith(root + sep) ? file : undefined;
}

async function fileInfo(path: string): Promise<{ size: number; mtimeMs: number } | undefined> {
  try {
    const info = await stat(path);
    return info.isFile() ? info : undefined;
  } catch {
    return undefined;
  }
}

function acceptedEncodings(req: IncomingMessage): Set<string> {
  const header = String(req.headers['accept-encoding'] ?? '');
  return new Set(header.split(',').map((part) => part.split(';')[0].trim().toLowerCase()).filter((name) => name !== ''));
}

function sendText(res: ServerResponse, status: number, text: string, extra: Record<string, string> = {}): void {
  res.writeHead(status, { ...CROSS_ORIGIN_ISOLATION_HEADERS, 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': String(Buffer.byteLength(text)), ...extra });
  res.end(text);
}

async function handle(req: IncomingMessage, res: ServerResponse, distDir: string, modelsDir: string): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    sendText(res, 405, `${req.method} is not allowed; use GET or HEAD\n`, { Allow: 'GET, HEAD' });
    return;
  }
  const path = new URL(req.url ?? '/', 'http://localhost').pathname;
  const [root, rest] = path.startsWith('/models/') ? [modelsDir, path.slice('/models'.length)] : [distDir, path.endsWith('/') ? `${path}index.html` : path];
  const file = confine(root, rest);
  const type = file === undefined ? undefined : CONTENT_TYPES[extname(file)];
  const info = file === undefined || type === undefined ? undefined : await fileInfo(file);
  if (file === undefined || type === undefined || info === undefined) {
    sendText(res, 404, `Not found: ${path.slice(0, 200)}\n`);
    return;
  }
  let body = file;
  let length = info.size;
  // Revalidated on every load (no-cache), answered 304 while the file is unchanged.
  const headers: Record<string, string> = { ...CROSS_ORIGIN_ISOLATION_HEADERS, 'Content-Type': type, 'Cache-Control': 'no-cache', Vary: 'Accept-Encoding' };
  const accepted = acceptedEncodings(req);
  for (const encoding of ENCODINGS) {
    if (!accepted.has(encoding.name)) continue;
    const compressed = await fileInfo(file + encoding.suffix);
    if (compressed === undefined) continue;
    body = file + encoding.suffix;
    length = compressed.size;
    headers['Content-Encoding'] = encoding.name;
    break;
  }
  headers.ETag = `"${info.size.toString(16)}-${Math.floor(info.mtimeMs).toString(16)}${headers['Content-Encoding'] === undefined ? '' : `-${headers['Content-Encoding']}`}"`;
  if (req.headers['if-none-match'] === headers.ETag) {
    res.writeHead(304, { ...CROSS_ORIGIN_ISOLATION_HEADERS, ETag: headers.ETag, 'Cache-Control': 'no-cache', Vary: 'Accept-Encoding' });
    res.end();
    return;
  }
  headers['Content-Length'] = String(length);
  res.writeHead(200, headers);
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  const stream = createReadStream(body);
  stream.on('error', () => res.destroy());
  stream.pipe(res);
}

/** Starts the server; port 0 (the default) picks a free one. */
export async function startStaticServer(options: StaticServerOptions): Promise<RunningServer> {
  const distDir = resolve(options.distDir);
  const modelsDir = resolve(options.modelsDir);
  const server = createServer((req, res) => {
    handle(req, res, distDir, modelsDir).catch(() => {
      if (!res.headersSent) sendText(res, 500, 'Internal error\n');
      else res.destroy();
    });
  });
  await new Promise<void>((done, fail) => {
    server.once('error', fail);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => done());
  });
  const { port, address } = server.address() as AddressInfo;
  const host = address.includes(':') ? `[${address}]` : address;
  return {
    server,
    url: `http://${host}:${port}/`,
    close: () =>
      new Promise<void>((done) => {
        server.closeAllConnections();
        server.close(() => done());
      }),
  };
}
