import assert from 'node:assert/strict';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { BACKENDS, ORT_FILES } from '../web-demo/src/browser/runtime.ts';
import { DIST_DIR, ensureWebDemoBuilt } from '../web-demo/src/node/build.ts';
import { CROSS_ORIGIN_ISOLATION_HEADERS } from '../web-demo/src/node/static-server.ts';

describe('web demo build (web-demo/dist)', () => {
  before(async () => {
    await ensureWebDemoBuilt((line) => console.log(`# ${line}`));
  });

  it('holds the page: index.html loading app.js and app.css, both bundled and small', async () => {
    const html = await readFile(join(DIST_DIR, 'index.html'), 'utf8');
    assert.match(html, /<script type="module" src="app\.js"><\/script>/);
    assert.match(html, /<link rel="stylesheet" href="app\.css">/);
    const app = await readFile(join(DIST_DIR, 'app.js'), 'utf8');
    assert.doesNotMatch(app, /^\s*import\s/m, 'no static imports left: one bundle');
    assert.ok(app.length < 100 * 1024, `app.js is ${app.length} bytes`);
  });

  it('bundles the shared preprocessing, metadata reader and labels from contract', async () => {
    const info = JSON.parse(await readFile(join(DIST_DIR, '.build-info.json'), 'utf8')) as { inputs: Record<string, string> };
    for (const file of ['contract/preprocess.ts', 'contract/metadata.ts', 'contract/labels.ts']) assert.ok(file in info.inputs, `${file} is an input of the bundle`);
    assert.ok(!Object.keys(info.inputs).some((file) => file.startsWith('serve/') || file.startsWith('training/')), 'nothing from serve/ or training/');
  });

  it('ships only the onnxruntime-web files the two backends load, each with brotli and gzip copies', async () => {
    const files = (await readdir(join(DIST_DIR, 'ort'))).sort();
    const wanted = BACKENDS.flatMap((backend) => ORT_FILES[backend]);
    assert.deepEqual(files, wanted.flatMap((file) => [file, `${file}.br`, `${file}.gz`]).sort());
    const wasm = await stat(join(DIST_DIR, 'ort', ORT_FILES.wasm[2]));
    const brotli = await stat(join(DIST_DIR, 'ort', `${ORT_FILES.wasm[2]}.br`));
    assert.ok(brotli.size < wasm.size / 3, `the WebAssembly binary compresses from ${wasm.size} to ${brotli.size} bytes`);
  });

  it('writes the headers a static host must send, in the _headers format', async () => {
    const headers = await readFile(join(DIST_DIR, '_headers'), 'utf8');
    for (const [name, value] of Object.entries(CROSS_ORIGIN_ISOLATION_HEADERS)) assert.ok(headers.includes(`${name}: ${value}`), name);
  });

  it('does nothing when called again with nothing changed', async () => {
    const again = await ensureWebDemoBuilt();
    assert.equal(again.built, false);
    assert.equal(again.reason, 'web-demo/dist is up to date');
  });
});
