import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import { CROSS_ORIGIN_ISOLATION_HEADERS, startStaticServer, type RunningServer } from '../web-demo/src/node/static-server.ts';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** A raw request: fetch would normalise the path (and hide what the server does with "..") and decompress. */
function get(url: string, path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Answer> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request({ hostname, port, path, method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('web demo static server', () => {
  let root = '';
  let server: RunningServer;
  const wasm = Buffer.from([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]);

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'web-static-'));
    const dist = join(root, 'dist');
    const models = join(root, 'models');
    await mkdir(join(dist, 'ort'), { recursive: true });
    await mkdir(join(models, 'spec'), { recursive: true });
    await writeFile(join(dist, 'index.html'), '<!doctype html><title>demo</title>');
    await writeFile(join(dist, 'app.js'), 'console.log("plain")');
    await writeFile(join(dist, 'app.js.br'), 'BROTLI');
    await writeFile(join(dist, 'app.js.gz'), gzipSync('console.log("plain")'));
    await writeFile(join(dist, 'ort', 'ort-wasm-simd-threaded.wasm'), wasm);
    await writeFile(join(dist, 'ort', 'ort-wasm-simd-threaded.mjs'), 'export default 1');
    await writeFile(join(dist, '.build-info.json'), '{}');
    await writeFile(join(dist, 'notes.exe'), 'MZ');
    await writeFile(join(models, 'manifest.json'), '{"schemaVersion":1,"models":[]}');
    await writeFile(join(models, 'age.onnx'), Buffer.from([8, 7]));
    await writeFile(join(models, 'spec', 'labels.ts'), 'export {}');
    await writeFile(join(root, 'secret.json'), '{"secret":true}');
    server = await startStaticServer({ distDir: dist, modelsDir: models });
  });

  after(async () => {
    await server?.close();
    await rm(root, { recursive: true, force: true });
  });

  it('sends COOP, COEP and CORP on every response, a 404 and a 405 included', async () => {
    for (const [path, method, status] of [['/', 'GET', 200], ['/ort/ort-wasm-simd-threaded.mjs', 'GET', 200], ['/missing.js', 'GET', 404], ['/', 'POST', 405]] as const) {
      const answer = await get(server.url, path, {}, method);
      assert.equal(answer.status, status, `${method} ${path}`);
      for (const [name, value] of Object.entries(CROSS_ORIGIN_ISOLATION_HEADERS)) assert.equal(answer.headers[name.toLowerCase()], value, `${method} ${path}: ${name}`);
    }
  });

  it('serves the page at / and the WebAssembly binary as application/wasm', async () => {
    const page = await get(server.url, '/');
    assert.equal(page.headers['content-type'], 'text/html; charset=utf-8');
    assert.match(page.body.toString(), /<title>demo<\/title>/);
    const binary = await get(server.url, '/ort/ort-wasm-simd-threaded.wasm');
    assert.equal(binary.headers['content-type'], 'application/wasm');
    assert.deepEqual(binary.body, wasm);
    const script = await get(server.url, '/ort/ort-wasm-simd-threaded.mjs');
    assert.equal(script.headers['content-type'], 'text/javascript; charset=utf-8', 'module workers need a JavaScript type');
  });

  it('sends the precompressed copy the client accepts: brotli first, then gzip, else the file as it is', async () => {
    const brotli = await get(server.url, '/app.js', { 'Accept-Encoding': 'gzip, deflate, br' });
    assert.equal(brotli.headers['content-encoding'], 'br');
    assert.equal(brotli.body.toString(), 'BROTLI');
    assert.equal(brotli.headers.vary, 'Accept-Encoding');
    const gzip = await get(server.url, '/app.js', { 'Accept-Encoding': 'gzip' });
    assert.equal(gzip.headers['content-encoding'], 'gzip');
    assert.equal(gunzipSync(gzip.body).toString(), 'console.log("plain")');
    const plain = await get(server.url, '/app.js');
    assert.equal(plain.headers['content-encoding'], undefined);
    assert.equal(plain.body.toString(), 'console.log("plain")');
    assert.equal(plain.headers['content-length'], String(plain.body.length));
  });

  it('answers 304 when the file is unchanged since the client’s copy', async () => {
    const first = await get(server.url, '/app.js', { 'Accept-Encoding': 'br' });
    const etag = first.headers.etag as string;
    assert.match(etag, /^".+-br"$/);
    const again = await get(server.url, '/app.js', { 'Accept-Encoding': 'br', 'If-None-Match': etag });
    assert.equal(again.status, 304);
    assert.equal(again.body.length, 0);
    const otherEncoding = await get(server.url, '/app.js', { 'Accept-Encoding': 'gzip', 'If-None-Match': etag });
    assert.equal(otherEncoding.status, 200, 'an ETag names one encoding');
  });

  it('serves the models folder under /models/: the .onnx files and manifest.json, not its sources', async () => {
    const manifest = await get(server.url, '/models/manifest.json');
    assert.equal(manifest.status, 200);
    assert.equal(manifest.headers['content-type'], 'application/json; charset=utf-8');
    const model = await get(server.url, '/models/age.onnx');
    assert.equal(model.headers['content-type'], 'application/octet-stream');
    assert.deepEqual([...model.body], [8, 7]);
    assert.equal((await get(server.url, '/contract/labels.ts')).status, 404);
  });

  it('refuses paths that climb out of its folders, dotfiles, and types it does not serve', async () => {
    for (const path of ['/../secret.json', '/%2e%2e/secret.json', '/models/..%2fsecret.json', '/models/%2e%2e/secret.json', '/.build-info.json', '/notes.exe', '/app.js%00.html', '/%E0%A4%A']) {
      const answer = await get(server.url, path);
      assert.equal(answer.status, 404, path);
      assert.doesNotMatch(answer.body.toString(), /"secret":true/, path);
    }
  });

  it('answers HEAD with the headers and no body, and other methods with 405 and Allow', async () => {
    const head = await get(server.url, '/app.js', {}, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], String('console.log("plain")'.length));
    assert.equal(head.body.length, 0);
    const post = await get(server.url, '/app.js', {}, 'POST');
    assert.equal(post.status, 405);
    assert.equal(post.headers.allow, 'GET, HEAD');
  });
});
