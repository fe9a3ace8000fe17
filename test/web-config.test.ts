import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { describe, it } from 'node:test';
import { DEFAULT_PAGE_CONFIG, PageConfigError, readPageConfig } from '../web-demo/src/browser/config.ts';
import { MODELS_DIR } from '../web-demo/src/node/build.ts';
import { DemoConfigError, loadDemoConfig } from '../web-demo/src/node/demo-config.ts';

describe('web demo page options (URL query)', () => {
  it('defaults to WebAssembly, onnxruntime’s thread count, and models/ beside the page', () => {
    assert.deepEqual(readPageConfig(''), DEFAULT_PAGE_CONFIG);
    assert.deepEqual(DEFAULT_PAGE_CONFIG, { backend: 'wasm', threads: 0, models: 'models/' });
  });

  it('reads backend, threads and models', () => {
    assert.deepEqual(readPageConfig('?backend=webgpu&threads=2&models=v2'), { backend: 'webgpu', threads: 2, models: 'v2/' });
  });

  it('names an unknown option and the ones it knows', () => {
    assert.throws(() => readPageConfig('?backnd=wasm'), { name: 'PageConfigError', message: 'Unknown option "backnd" in the page address; expected one of: backend, threads, models' });
  });

  it('names the allowed values of a wrong one', () => {
    assert.throws(() => readPageConfig('?backend=tpu'), { message: 'Unsupported backend "tpu"; expected one of: wasm, webgpu' });
    for (const threads of ['-1', '1.5', 'two', '', '65']) {
      assert.throws(() => readPageConfig(`?threads=${threads}`), PageConfigError, `threads=${threads}`);
    }
  });

  it('refuses a models location on another origin', () => {
    for (const models of ['https://cdn.example/models/', '//cdn.example/models/', 'javascript:alert(1)', 'data:,x', '\\\\host\\share']) {
      assert.throws(() => readPageConfig(`?models=${encodeURIComponent(models)}`), /models must be a path on this site/, models);
    }
  });
});

describe('npm run demo options', () => {
  it('defaults to 127.0.0.1:8080 and models/', () => {
    assert.deepEqual(loadDemoConfig([], {}), { port: 8080, host: '127.0.0.1', modelsDir: MODELS_DIR });
  });

  it('takes flags over environment variables', () => {
    const env = { DEMO_PORT: '9000', DEMO_HOST: '0.0.0.0', DEMO_MODELS_DIR: 'elsewhere' };
    assert.deepEqual(loadDemoConfig([], env), { port: 9000, host: '0.0.0.0', modelsDir: resolve('elsewhere') });
    assert.deepEqual(loadDemoConfig(['--port', '0', '--models=x'], env), { port: 0, host: '0.0.0.0', modelsDir: resolve('x') });
  });

  it('names a wrong flag, a missing value, a bad port and an unknown DEMO_ variable', () => {
    assert.throws(() => loadDemoConfig(['--prot', '1'], {}), { name: 'DemoConfigError', message: 'Unknown argument "--prot"; expected one of: --port, --host, --models, --help' });
    assert.throws(() => loadDemoConfig(['--port'], {}), { message: 'Option --port needs a value' });
    assert.throws(() => loadDemoConfig([], { DEMO_PORT: '70000' }), DemoConfigError);
    assert.throws(() => loadDemoConfig([], { DEMO_MODELS: 'x' }), { message: 'Unknown environment variable DEMO_MODELS; expected one of: DEMO_PORT, DEMO_HOST, DEMO_MODELS_DIR' });
  });
});
