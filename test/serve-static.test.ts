import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { brotliCompressSync, brotliDecompressSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import { startTestServer, type TestServer } from './helpers/serve-harness.ts';

describe('the server hosting the web demo and its models', () => {
  let t: TestServer;
  let demo = '';
  const script = 'console.log("demo");\n'.repeat(50);

  before(async () => {
    demo = mkdtempSync(join(tmpdir(), 'serve-static-'));
    writeFileSync(join(demo, 'index.html'), '<!doctype html><title>demo</title>');
    writeFileSync(join(demo, 'app.js'), script);
    writeFileSync(join(demo, 'app.js.br'), brotliCompressSync(script));
    t = await startTestServer({ flags: ['--web-demo', demo] });
  });
  after(async () => {
    await t.close();
    rmSync(demo, { recursive: true, force: true });
  });

  it('sends cross-origin isolation headers on pages, API answers and errors alike', async () => {
    for (const path of ['/', '/healthz', '/no/such/route']) {
      const res = await fetch(`${t.url}${path}`);
      await res.arrayBuffer();
      assert.equal(res.headers.get('cross-origin-opener-policy'), 'same-origin', path);
      assert.equal(res.headers.get('cross-origin-embedder-policy'), 'require-corp', path);
    }
  });

  it('serves the precompressed copy of a file to a client that accepts brotli, with the original type', async () => {
    const res = await fetch(`${t.url}/app.js`, { headers: { 'Accept-Encoding': 'br' }, decompress: false } as RequestInit);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-encoding'), 'br');
    assert.match(res.headers.get('content-type') ?? '', /javascript/);
    assert.match(res.headers.get('vary') ?? '', /Accept-Encoding/i);
    const body = Buffer.from(await res.arrayBuffer());
    // fetch may or may not have decoded it; either way the bytes are the script.
    const text = body.toString('utf8') === script ? script : brotliDecompressSync(body).toString('utf8');
    assert.equal(text, script);
  });

  it('serves the plain file to a client that does not accept brotli', async () => {
    const res = await fetch(`${t.url}/app.js`, { headers: { 'Accept-Encoding': 'identity' } });
    assert.equal(res.headers.get('content-encoding'), null);
    assert.equal(await res.text(), script);
  });

  it('serves the models manifest and every .onnx file it lists (the detector too) under /models, and nothing else from that folder', async () => {
    const manifest = await fetch(`${t.url}/models/manifest.json`);
    assert.equal(manifest.status, 200);
    const entries = ((await manifest.json()) as { models: { kind?: string; file: string; bytes: number }[] }).models;
    // The three classifiers, and the face detector the server read from its npm package, under its file name.
    assert.deepEqual(entries.map((entry) => entry.kind ?? 'classifier'), ['classifier', 'classifier', 'classifier', 'detector']);
    for (const entry of entries) {
      const model = await fetch(`${t.url}/models/${entry.file}`);
      assert.equal(model.status, 200, entry.file);
      assert.equal((await model.arrayBuffer()).byteLength, entry.bytes, entry.file);
    }
    for (const path of ['/models/', '/models/../package.json', '/models/%2e%2e/package.json', '/models/notes.txt']) {
      const res = await fetch(`${t.url}${path}`);
      assert.equal(res.status, 404, path);
      assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'not_found', path);
    }
  });
});
