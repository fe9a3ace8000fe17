/**
 * The web demo's files: the shipped models under /models/, the built page and its precompressed copies, and a page
 * at / that says how to build the demo while it is not built. Every answer carries the cross-origin isolation headers.
 */
import { existsSync } from 'node:fs';
import { extname, isAbsolute, join, relative } from 'node:path';
import express, { type RequestHandler } from 'express';
import { REPO_ROOT } from '../node-shared/paths.ts';
import { requestContext, type ServeState } from './app-state.ts';
import type { ServeConfig } from './config.ts';
import { NotFoundError, NotReadyError } from './errors.ts';
import type { ServedFile } from './model-files.ts';

const ISOLATION_HEADERS = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

/** Cross-origin isolation on every answer, so the demo's onnxruntime-web can use wasm threads. */
export const crossOriginIsolation: RequestHandler = (_req, res, next) => {
  res.set(ISOLATION_HEADERS);
  next();
};

/** Mounts /models/ (the manifest and the model files the server loaded, from memory), the demo's files, and /. */
export function serveDemo(app: express.Express, config: ServeConfig, state: ServeState): void {
  app.use('/models', (req, res) => {
    requestContext(res).route = 'models';
    if (req.method !== 'GET' && req.method !== 'HEAD') throw new NotFoundError(`No route ${req.method} /models${req.path.slice(0, 200)}`);
    sendModelFile(req, res, state.modelFiles);
  });
  // Static files confined to the demo's folder (send refuses ".." after decoding, and NUL bytes).
  app.use(
    (_req, res, next) => {
      requestContext(res).route = 'static';
      next();
    },
    precompressed(config.webDemoDir),
    express.static(config.webDemoDir, { dotfiles: 'ignore', index: 'index.html', redirect: false, fallthrough: true }),
  );
  app.get('/', (req, res) => {
    if (existsSync(join(config.webDemoDir, 'index.html'))) throw new NotFoundError('The web demo index could not be read');
    res.status(200).type('html').send(demoMissingPage(config.webDemoDir, `${req.protocol}://${req.get('host') ?? `localhost:${config.port}`}`));
  });
}

/** The build's precompressed siblings (app.js.br, app.js.gz), best first. */
const ENCODINGS = [
  { name: 'br', suffix: '.br' },
  { name: 'gzip', suffix: '.gz' },
] as const;

/**
 * Points a request at the build's precompressed copy of a file when the client accepts it (the onnxruntime
 * wasm is 13.6 MiB raw, 2.6 MiB as brotli). express.static still does the serving and the path confinement.
 */
function precompressed(root: string): RequestHandler {
  return (req, res, next) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return next();
    let path: string;
    try {
      path = decodeURIComponent(req.path);
    } catch {
      return next();
    }
    if (path.includes('\0') || path.split('/').includes('..')) return next();
    if (path.endsWith('/')) path += 'index.html';
    const encoding = ENCODINGS.find((e) => req.acceptsEncodings(e.name) === e.name && existsSync(join(root, path + e.suffix)));
    res.vary('Accept-Encoding');
    if (encoding === undefined) return next();
    res.type(extname(path));
    res.set('Content-Encoding', encoding.name);
    req.url = req.url.replace(/^[^?]*/, (urlPath) => (urlPath.endsWith('/') ? `${urlPath}index.html` : urlPath) + encoding.suffix);
    next();
  };
}

const escapeHtml = (text: string): string => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/**
 * The page at / while the demo is not built, naming the folder the server looks in (relative to the repository
 * when inside it: no absolute path goes to a caller) and the address it was reached at.
 */
function demoMissingPage(webDemoDir: string, origin: string): string {
  const inRepo = relative(REPO_ROOT, webDemoDir);
  const folder = inRepo !== '' && !inRepo.startsWith('..') && !isAbsolute(inRepo) ? `<code>${escapeHtml(inRepo)}</code>` : 'the folder given by <code>--web-demo</code>';
  const build = inRepo === join('web-demo', 'dist') ? 'npm run build:web' : 'npm run build:web   # writes web-demo/dist; point --web-demo there, or copy it';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Face attributes server</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:44rem;margin:3rem auto;padding:0 1rem}code,pre{background:#f3f3f3;padding:.1rem .3rem}</style></head>
<body>
<h1>The server is running; the web demo is not built</h1>
<p>The web demo is served from ${folder}, which holds no <code>index.html</code>. Build it with</p>
<pre>${escapeHtml(build)}</pre>
<p>then reload this page; the server does not need a restart.</p>
<p>Meanwhile, the API works:</p>
<pre>curl --data-binary @face.jpg -H 'Content-Type: image/jpeg' ${escapeHtml(origin)}/v1/predict</pre>
<p>See <a href="/openapi.json">/openapi.json</a> for every route, <a href="/v1/models">/v1/models</a> for the models in use,
and <a href="/metrics">/metrics</a> for metrics.</p>
</body></html>
`;
}

/** A model file from memory, in the best encoding the client takes, revalidated by its sha256. */
function sendModelFile(req: express.Request, res: express.Response, files: ReadonlyMap<string, ServedFile> | undefined): void {
  if (files === undefined) throw new NotReadyError('The models are still loading; retry in a second');
  const name = req.path.replace(/^\//, '');
  const file = files.get(name);
  if (file === undefined) throw new NotFoundError(`No model file ${req.path.slice(0, 200)}; see /models/manifest.json`);
  res.vary('Accept-Encoding');
  res.set({ 'Content-Type': file.contentType, ETag: file.etag, 'Cache-Control': 'no-cache' });
  if (req.fresh) {
    res.status(304).end();
    return;
  }
  const encoding = ENCODINGS.find((e) => req.acceptsEncodings(e.name) === e.name);
  const body = encoding === undefined ? file.identity : encoding.name === 'br' ? file.br : file.gzip;
  if (encoding !== undefined) res.set('Content-Encoding', encoding.name);
  res.status(200).end(Buffer.from(body.buffer, body.byteOffset, body.byteLength));
}
