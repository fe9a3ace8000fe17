import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { BACKEND_NAMES, isBackendInstalled, parseBackendName, selectBackend, type BackendName } from '../node-shared/tfjs/select.ts';

const nodeInstalled = isBackendInstalled('node');
const nodeGpuInstalled = isBackendInstalled('node-gpu');
const NEEDS_NO_TFJS_NODE = nodeInstalled || nodeGpuInstalled ? 'tfjs-node is installed here, so auto does not fall back' : false;

describe('backend selection', () => {
  it('offers node-gpu, node, wasm and cpu, best first', () => {
    assert.deepEqual([...BACKEND_NAMES], ['node-gpu', 'node', 'wasm', 'cpu']);
  });

  it('falls back to wasm when tfjs-node is absent, logging one line that says why each better backend was not taken', { skip: NEEDS_NO_TFJS_NODE }, async () => {
    const lines: string[] = [];
    const selected = await selectBackend(undefined, (line) => lines.push(line));
    assert.equal(selected.name, 'wasm');
    assert.equal(tf.getBackend(), 'wasm');
    assert.deepEqual(selected.reasons, ['@tensorflow/tfjs-node-gpu is not installed', '@tensorflow/tfjs-node is not installed']);
    assert.equal(lines.length, 1);
    assert.match(lines[0], /^backend: wasm .*@tensorflow\/tfjs-node-gpu is not installed; @tensorflow\/tfjs-node is not installed$/);
    assert.ok(tf.getKernel('Conv2DBackpropFilter', 'wasm') !== undefined, 'the wasm training kernels are registered');
    assert.deepEqual(await selectBackend('auto', () => {}), selected, '"auto" is the same as no request');
  });

  it('runs the cpu backend on request, without the "install tfjs-node" banner', async () => {
    const warnings: string[] = [];
    const warn = console.warn;
    console.warn = (...args: unknown[]) => void warnings.push(args.join(' '));
    try {
      const lines: string[] = [];
      const selected = await selectBackend('cpu', (line) => lines.push(line));
      assert.deepEqual(selected, { name: 'cpu', tfjsName: 'cpu', reasons: ['requested'] });
      assert.equal(tf.getBackend(), 'cpu');
      assert.deepEqual(lines, ['backend: cpu (@tensorflow/tfjs-backend-cpu), as requested']);
      assert.deepEqual(Array.from(await tf.add(tf.tensor1d([1, 2]), tf.tensor1d([3, 4])).data()), [4, 6]);
    } finally {
      console.warn = warn;
    }
    assert.deepEqual(warnings.filter((w) => /looks like you are running TensorFlow\.js in Node\.js/.test(w)), []);
  });

  it('switches back to wasm on request', async () => {
    const selected = await selectBackend('wasm', () => {});
    assert.equal(selected.name, 'wasm');
    assert.equal(tf.getBackend(), 'wasm');
  });

  it('rejects an unknown backend name, naming it and the allowed ones', async () => {
    await assert.rejects(selectBackend('tpu' as BackendName, () => {}), {
      message: 'Unsupported backend "tpu"; expected one of: auto, node-gpu, node, wasm, cpu',
    });
    assert.throws(() => parseBackendName('gpu'), /Unsupported backend "gpu"; expected one of: auto, node-gpu, node, wasm, cpu/);
    assert.equal(parseBackendName('node'), 'node');
  });

  it('fails an explicit request for tfjs-node that is not installed with what to do about it', { skip: nodeInstalled ? 'tfjs-node is installed here' : false }, async () => {
    const before = tf.getBackend();
    await assert.rejects(selectBackend('node', () => {}), (error: Error) => {
      assert.match(error.message, /^Backend "node" is not available: @tensorflow\/tfjs-node is not installed\./);
      assert.match(error.message, /npm install @tensorflow\/tfjs-node/);
      assert.match(error.message, /choose another --backend: node-gpu, wasm, cpu$/);
      return true;
    });
    assert.equal(tf.getBackend(), before, 'the backend in use stays');
    await assert.rejects(selectBackend('node', () => {}, '--backends'), /choose another --backends: node-gpu, wasm, cpu$/, 'the advice names the flag of the program that asked');
  });

  it('fails an explicit request for tfjs-node-gpu that is not installed the same way', { skip: nodeGpuInstalled ? 'tfjs-node-gpu is installed here' : false }, async () => {
    await assert.rejects(selectBackend('node-gpu', () => {}), /^Error: Backend "node-gpu" is not available: @tensorflow\/tfjs-node-gpu is not installed\. To use it, install it on a Linux x64 host with CUDA/);
  });
});
