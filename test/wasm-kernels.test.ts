import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../node-shared/tfjs/select.ts';
import { seededRandom } from '../training/data/split.ts';
import { buildResidualModels } from '../training/models/residual.ts';
import { registerWasmTrainingKernels, type WasmKernelSet } from '../node-shared/tfjs/wasm-kernels.ts';
import { buildSeedModel } from '../training/models/seed.ts';

type Shape4 = [number, number, number, number];
type Pad = 'same' | 'valid' | number | [[number, number], [number, number], [number, number], [number, number]];

/** Deterministic values in [-1, 1), so a failure reproduces. */
function randomValues(count: number, seed: number): Float32Array {
  const random = seededRandom(seed);
  return Float32Array.from({ length: count }, () => 2 * random() - 1);
}

const size = (shape: number[]): number => shape.reduce((a, b) => a * b, 1);

/** Runs `compute` on a backend and returns its outputs as plain arrays. */
async function on(backend: 'cpu' | 'wasm', compute: () => tf.Tensor[]): Promise<Float32Array[]> {
  await tf.setBackend(backend);
  const outputs = tf.tidy(compute);
  const values = await Promise.all(outputs.map(async (t) => Float32Array.from(await t.data())));
  tf.dispose(outputs);
  return values;
}

/**
 * Same values within 1e-4 of the tensor's scale: gradients are float32 sums over up to ~300k products,
 * whose rounding depends on summation order, so the error is relative to the largest entry, not to each.
 */
function assertClose(actual: Float32Array, expected: Float32Array, label: string, tolerance = 1e-4): void {
  assert.equal(actual.length, expected.length, `${label}: length`);
  let scale = 1;
  for (const v of expected) scale = Math.max(scale, Math.abs(v));
  let worst = 0;
  let worstAt = 0;
  for (let i = 0; i < expected.length; i++) {
    const error = Math.abs(actual[i] - expected[i]);
    if (!(error <= worst)) {
      worst = error;
      worstAt = i;
    }
  }
  assert.ok(
    worst <= tolerance * scale,
    `${label}: |wasm - cpu| = ${worst} at ${worstAt} (wasm ${actual[worstAt]}, cpu ${expected[worstAt]}), allowed ${tolerance * scale}`,
  );
}

interface ConvCase {
  x: Shape4;
  filter: Shape4;
  strides: number | [number, number];
  pad: Pad;
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
}

/** dL/dx and dL/dfilter of L = sum(conv2d(x, filter) * R) for a fixed random R. */
function convGradients(c: ConvCase, seed: number): () => tf.Tensor[] {
  const xValues = randomValues(size(c.x), seed);
  const filterValues = randomValues(size(c.filter), seed + 1);
  return () => {
    const x = tf.tensor4d(xValues, c.x);
    const filter = tf.tensor4d(filterValues, c.filter);
    const outShape = tf.conv2d(x, filter, c.strides, c.pad, 'NHWC', 1, c.dimRoundingMode).shape;
    const weights = tf.tensor(randomValues(size(outShape), seed + 2), outShape);
    const loss = (a: tf.Tensor, b: tf.Tensor): tf.Scalar =>
      tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.strides, c.pad, 'NHWC', 1, c.dimRoundingMode), weights));
    return tf.grads(loss)([x, filter]);
  };
}

async function checkConv(c: ConvCase, seed: number): Promise<void> {
  const label = `x ${c.x} filter ${c.filter} strides ${c.strides} pad ${JSON.stringify(c.pad)}${c.dimRoundingMode ? ` ${c.dimRoundingMode}` : ''}`;
  const [cpuDx, cpuDw] = await on('cpu', convGradients(c, seed));
  const [wasmDx, wasmDw] = await on('wasm', convGradients(c, seed));
  assertClose(wasmDx, cpuDx, `dx of ${label}`);
  assertClose(wasmDw, cpuDw, `dW of ${label}`);
}

/** dL/dx of L = sum(maxPool(x) * R); `values` picks the input. */
function poolGradient(x: Shape4, filterSize: number | [number, number], strides: number | [number, number], pad: Pad, values: Float32Array, seed: number): () => tf.Tensor[] {
  return () => {
    const input = tf.tensor4d(values, x);
    const outShape = tf.maxPool(input, filterSize, strides, pad).shape;
    const weights = tf.tensor(randomValues(size(outShape), seed), outShape);
    return [tf.grad((a: tf.Tensor) => tf.sum(tf.mul(tf.maxPool(a as tf.Tensor4D, filterSize, strides, pad), weights)))(input)];
  };
}

/** The gradient of `loss` with respect to each of `model`'s trainable weights, in their order; disposes the model. */
function weightGradients(model: tf.LayersModel, loss: () => tf.Scalar): tf.Tensor[] {
  const variables = model.trainableWeights.map((w) => w.read() as tf.Variable);
  const { grads } = tf.variableGrads(loss, variables);
  const out = variables.map((v) => grads[v.name]);
  model.dispose();
  return out;
}

/** The residual preset's network (three logits, no dropout) on a small colour input. */
function buildResidualNet(inputShape: [number, number, number], widths: number[]): tf.LayersModel {
  const [height, width, channels] = inputShape;
  const architecture = { input: { height, width, channels: channels as 1 | 3, scaling: 'unit' as const }, widths, blocksPerStage: 1, dropout: 0 };
  return buildResidualModels('ethnicity', ['a', 'b', 'c'], architecture, 'coursework', 1).train;
}

describe('wasm training kernels', () => {
  before(async () => {
    await selectBackend('cpu', () => {}); // quiets the cpu backend's "install tfjs-node" banner
    registerWasmTrainingKernels();
    assert.ok(await tf.setBackend('wasm'), 'the wasm backend starts');
  });

  describe('conv2d gradients equal the cpu backend', () => {
    const cases: ConvCase[] = [];
    // every combination of stride, padding and kernel size on a non-square input with a few channel counts
    let n = 0;
    for (const strides of [1, 2] as const) {
      for (const pad of ['same', 'valid'] as const) {
        for (const k of [1, 3, 5]) {
          const batch = [1, 3][n % 2];
          const [cin, cout] = [[1, 2], [2, 4], [3, 1], [4, 8], [5, 3]][n % 5];
          cases.push({ x: [batch, 9 + (n % 3), 7 + (n % 4), cin], filter: [k, k, cin, cout], strides, pad });
          n++;
        }
      }
    }
    // rectangular filters and strides, numeric and explicit padding, rounding modes
    cases.push({ x: [2, 11, 8, 3], filter: [3, 2, 3, 5], strides: [2, 1], pad: 'same' });
    cases.push({ x: [2, 10, 13, 2], filter: [2, 4, 2, 3], strides: [1, 3], pad: 'valid' });
    cases.push({ x: [2, 8, 9, 2], filter: [3, 3, 2, 2], strides: 1, pad: 1 });
    cases.push({ x: [1, 9, 9, 2], filter: [3, 3, 2, 3], strides: 2, pad: 1, dimRoundingMode: 'ceil' });
    cases.push({ x: [2, 7, 8, 3], filter: [3, 3, 3, 2], strides: 1, pad: [[0, 0], [2, 0], [1, 2], [0, 0]] });
    // padding wider than the filter: dx takes the column (col2im) path
    cases.push({ x: [1, 6, 5, 2], filter: [1, 1, 2, 3], strides: 1, pad: [[0, 0], [2, 1], [0, 1], [0, 0]] });
    // larger batches and channel counts, and odd widths that defeat the column folding of dW
    cases.push({ x: [16, 20, 17, 8], filter: [3, 3, 8, 16], strides: 1, pad: 'same' });
    cases.push({ x: [8, 15, 15, 1], filter: [5, 5, 1, 2], strides: 2, pad: 'same' });

    for (const [i, c] of cases.entries()) {
      it(`x ${c.x}, filter ${c.filter}, strides ${c.strides}, pad ${JSON.stringify(c.pad)}${c.dimRoundingMode ? `, ${c.dimRoundingMode}` : ''}`, async () => {
        await checkConv(c, 100 + i);
      });
    }

    describe('at modern CNN channel counts: the SIMD row kernels (8k output channels) and their fallbacks', () => {
      // [in, out] channels: multiples of 8 take the SIMD rows for dW (out) and dx (in); 1, 3, 12 and 24
      // exercise their remainder loops and fallbacks
      const channelPairs: Array<[number, number]> = [[1, 8], [3, 16], [8, 8], [12, 24], [16, 32], [32, 16], [64, 64], [16, 12], [128, 8], [8, 128]];
      channelPairs.forEach(([cin, cout], i) => {
        for (const strides of [1, 2] as const) {
          for (const pad of ['same', 'valid'] as const) {
            const k = i % 3 === 2 ? 1 : 3; // 1x1 as in projection shortcuts
            const batch = (i + strides) % 2 === 0 ? 1 : 3;
            const [height, width] = i % 2 === 0 ? [9, 7] : [8, 10]; // odd and even sizes
            const c: ConvCase = { x: [batch, height, width, cin], filter: [k, k, cin, cout], strides, pad };
            it(`x ${c.x}, filter ${c.filter}, strides ${strides}, pad ${pad}`, async () => {
              await checkConv(c, 700 + 4 * i + 2 * strides + (pad === 'same' ? 0 : 1));
            });
          }
        }
      });
      it('at the residual net shapes: 8x24x24x16 through 3x3x16x32 and 1x1x16x32, stride 2, and 8x12x12x32 through 3x3x32x32', async () => {
        await checkConv({ x: [8, 24, 24, 16], filter: [3, 3, 16, 32], strides: 2, pad: 'same' }, 41);
        await checkConv({ x: [8, 24, 24, 16], filter: [1, 1, 16, 32], strides: 2, pad: 'same' }, 42);
        await checkConv({ x: [8, 12, 12, 32], filter: [3, 3, 32, 32], strides: 1, pad: 'same' }, 43);
      });
      it('with explicit padding, rectangular strides and ceil rounding on 16 channels', async () => {
        await checkConv({ x: [2, 11, 9, 16], filter: [3, 2, 16, 8], strides: [2, 1], pad: [[0, 0], [2, 0], [1, 2], [0, 0]] }, 44);
        await checkConv({ x: [2, 9, 9, 8], filter: [3, 3, 8, 16], strides: 2, pad: 1, dimRoundingMode: 'ceil' }, 45);
        await checkConv({ x: [1, 6, 5, 16], filter: [1, 1, 16, 16], strides: 1, pad: [[0, 0], [2, 1], [0, 1], [0, 0]] }, 46);
      });
    });

    it('at the seed model shapes: 128x48x48x1 through 3x3x1x2 and 128x24x24x2 through 3x3x2x4, same padding', async () => {
      await checkConv({ x: [128, 48, 48, 1], filter: [3, 3, 1, 2], strides: 1, pad: 'same' }, 7);
      await checkConv({ x: [128, 24, 24, 2], filter: [3, 3, 2, 4], strides: 1, pad: 'same' }, 8);
    });

    it('Conv2DBackpropFilter with NCHW inputs (run as a kernel; wasm has no NCHW forward conv)', async () => {
      const x: Shape4 = [2, 3, 7, 6];
      const dy: Shape4 = [2, 4, 7, 6];
      const compute = () => {
        const dw = tf.engine().runKernel('Conv2DBackpropFilter', { x: tf.tensor4d(randomValues(size(x), 1), x), dy: tf.tensor4d(randomValues(size(dy), 2), dy) }, {
          strides: 1,
          pad: 'same',
          dataFormat: 'NCHW',
          filterShape: [3, 3, 3, 4],
        });
        return [dw as tf.Tensor];
      };
      const [cpu] = await on('cpu', compute);
      const [wasm] = await on('wasm', compute);
      assertClose(wasm, cpu, 'NCHW dW');
    });
  });

  describe('maxPool gradient equals the cpu backend', () => {
    const cases: Array<{ x: Shape4; filterSize: number | [number, number]; strides: number | [number, number]; pad: Pad }> = [
      { x: [128, 48, 48, 2], filterSize: 2, strides: 2, pad: 'valid' }, // seed block 1
      { x: [128, 24, 24, 4], filterSize: 2, strides: 2, pad: 'valid' }, // seed block 2
      { x: [3, 9, 7, 3], filterSize: 2, strides: 2, pad: 'valid' },
      { x: [3, 9, 7, 3], filterSize: 2, strides: 2, pad: 'same' },
      { x: [2, 8, 10, 2], filterSize: 3, strides: 1, pad: 'same' },
      { x: [2, 11, 9, 5], filterSize: 3, strides: 2, pad: 'valid' },
      { x: [1, 7, 12, 1], filterSize: [2, 3], strides: [1, 3], pad: 'same' },
      { x: [2, 6, 6, 2], filterSize: 2, strides: 1, pad: 1 },
    ];
    for (const [i, c] of cases.entries()) {
      const label = `x ${c.x}, filter ${c.filterSize}, strides ${c.strides}, pad ${c.pad}`;
      it(`${label}: random values, negative ones included`, async () => {
        const values = randomValues(size(c.x), 300 + i);
        const [cpu] = await on('cpu', poolGradient(c.x, c.filterSize, c.strides, c.pad, values, 400 + i));
        const [wasm] = await on('wasm', poolGradient(c.x, c.filterSize, c.strides, c.pad, values, 400 + i));
        assertClose(wasm, cpu, label, 1e-6);
      });
      it(`${label}: many ties, which go to the first maximum in row-major order`, async () => {
        const values = randomValues(size(c.x), 500 + i).map((v) => Math.round(v * 2)); // -2..2
        const [cpu] = await on('cpu', poolGradient(c.x, c.filterSize, c.strides, c.pad, values, 600 + i));
        const [wasm] = await on('wasm', poolGradient(c.x, c.filterSize, c.strides, c.pad, values, 600 + i));
        assertClose(wasm, cpu, label, 1e-6);
      });
    }

    it('routes the gradient of an all-zero or all-negative window to its first element (the stock wasm kernel drops it)', async () => {
      const values = Float32Array.from([-1, -2, 0, 0, -5, -6, 0, 0]);
      const compute = poolGradient([1, 2, 4, 1], 2, 2, 'valid', values, 1);
      const [wasm] = await on('wasm', compute);
      const [cpu] = await on('cpu', compute);
      assert.deepEqual(Array.from(wasm), Array.from(cpu));
      assert.equal(wasm[0] !== 0 && wasm[2] !== 0, true, `both windows pass their gradient on: ${Array.from(wasm)}`);
    });
  });

  describe('matMul gradients equal the cpu backend', () => {
    for (const [transposeA, transposeB] of [[false, false], [true, false], [false, true], [true, true]] as const) {
      it(`transposeA ${transposeA}, transposeB ${transposeB}, and the batched fallback`, async () => {
        const compute = () => {
          const a = tf.tensor2d(randomValues(37 * 53, 1), transposeA ? [53, 37] : [37, 53]);
          const b = tf.tensor2d(randomValues(53 * 29, 2), transposeB ? [29, 53] : [53, 29]);
          const a3 = tf.tensor3d(randomValues(3 * 5 * 4, 3), transposeA ? [3, 4, 5] : [3, 5, 4]);
          const b3 = tf.tensor3d(randomValues(3 * 4 * 6, 4), transposeB ? [3, 6, 4] : [3, 4, 6]);
          return [tf.matMul(a, b, transposeA, transposeB), tf.matMul(a3, b3, transposeA, transposeB)];
        };
        const cpu = await on('cpu', compute);
        const wasm = await on('wasm', compute);
        assertClose(wasm[0], cpu[0], 'rank 2');
        assertClose(wasm[1], cpu[1], 'rank 3, batch 3');
      });
    }
  });

  describe('bias add equals the cpu backend exactly', () => {
    const cases: Array<[number[], number[]]> = [
      [[128, 48, 48, 2], [2]],
      [[2], [3, 5, 7, 2]],
      [[4, 6, 3], [1, 1, 3]],
      [[5, 64], [64]],
      [[3, 4], [3, 1]], // not a bias: a different broadcast, left to the stock kernel
      [[3, 4], [3, 4]],
    ];
    for (const [aShape, bShape] of cases) {
      it(`[${aShape}] + [${bShape}]`, async () => {
        const compute = () => [tf.add(tf.tensor(randomValues(size(aShape), 1), aShape), tf.tensor(randomValues(size(bShape), 2), bShape))];
        const [cpu] = await on('cpu', compute);
        const [wasm] = await on('wasm', compute);
        assert.deepEqual(wasm, cpu);
      });
    }
  });

  describe('Sum and Mean over leading axes equal the cpu backend', () => {
    const cases: Array<{ shape: number[]; axis: number[] | number; keepDims?: boolean; offset?: number }> = [
      { shape: [3, 20, 20, 16], axis: [0, 1, 2] }, // 1200 rows: several float32 partial sums
      { shape: [2, 5, 7, 128], axis: [0, 1, 2] },
      { shape: [4, 6, 6, 32], axis: [1, 2] }, // global average pooling
      { shape: [4, 6, 6, 32], axis: [1, 2], keepDims: true },
      { shape: [2, 3, 4, 8], axis: 1 }, // a middle axis: rows of 32
      { shape: [5, 8], axis: 0 },
      { shape: [3, 4, 6], axis: [0, 1] }, // 6 channels: the stock kernel
      { shape: [6, 4], axis: 1 }, // the last axis: the stock kernel
      { shape: [16, 32, 32, 16], axis: [0, 1, 2], offset: 100 }, // large sums of same-sign values
    ];
    for (const [i, c] of cases.entries()) {
      it(`[${c.shape}] over ${JSON.stringify(c.axis)}${c.keepDims ? ', keepDims' : ''}${c.offset ? `, values around ${c.offset}` : ''}`, async () => {
        const values = randomValues(size(c.shape), 900 + i).map((v) => v + (c.offset ?? 0));
        const compute = () => {
          const x = tf.tensor(values, c.shape);
          return [tf.sum(x, c.axis, c.keepDims), tf.mean(x, c.axis, c.keepDims)];
        };
        const cpu = await on('cpu', compute);
        const wasm = await on('wasm', compute);
        assertClose(wasm[0], cpu[0], 'sum', 1e-6);
        assertClose(wasm[1], cpu[1], 'mean', 1e-6);
      });
    }
  });

  describe('Add, Sub and Multiply with a channel vector equal the cpu backend exactly, either way round', () => {
    const cases: Array<[number[], number[]]> = [
      [[3, 5, 7, 16], [16]],
      [[16], [3, 5, 7, 16]],
      [[2, 4, 3, 128], [1, 1, 1, 128]],
      [[1, 1, 1, 4], [5, 3, 2, 4]],
      [[4, 6, 2], [2]], // 2 channels: JavaScript (Add) or the stock kernel
      [[3, 2, 6], [6]], // 6 channels: likewise
    ];
    for (const [aShape, bShape] of cases) {
      it(`[${aShape}] op [${bShape}]`, async () => {
        const compute = () => {
          const a = tf.tensor(randomValues(size(aShape), 11), aShape);
          const b = tf.tensor(randomValues(size(bShape), 12), bShape);
          return [tf.add(a, b), tf.sub(a, b), tf.mul(a, b)];
        };
        const cpu = await on('cpu', compute);
        const wasm = await on('wasm', compute);
        assert.deepEqual(wasm, cpu);
      });
    }
  });

  describe('batchNorm equals the cpu backend', () => {
    for (const [channels, withScaleAndOffset] of [[16, true], [128, true], [8, false], [6, true]] as const) {
      it(`${channels} channels${withScaleAndOffset ? '' : ', no scale or offset'}`, async () => {
        const shape = [3, 5, 4, channels];
        const compute = () => {
          const x = tf.tensor(randomValues(size(shape), 21), shape);
          const mean = tf.tensor1d(randomValues(channels, 22));
          const variance = tf.tensor1d(randomValues(channels, 23).map((v) => v + 1.5));
          const offset = withScaleAndOffset ? tf.tensor1d(randomValues(channels, 24)) : undefined;
          const scale = withScaleAndOffset ? tf.tensor1d(randomValues(channels, 25)) : undefined;
          return [tf.batchNorm(x, mean, variance, offset, scale, 1e-3)];
        };
        const [cpu] = await on('cpu', compute);
        const [wasm] = await on('wasm', compute);
        assertClose(wasm, cpu, 'batchNorm', 1e-6);
      });
    }
  });

  describe('tile, clone and cast equal the cpu backend exactly', () => {
    const cases: Array<[number[], number[], 'float32' | 'int32' | 'bool']> = [
      [[1, 1, 1, 16], [2, 3, 4, 1], 'float32'], // BatchNormalization's gradient pattern
      [[2, 3], [3, 2], 'float32'],
      [[2, 1, 3], [1, 4, 2], 'int32'],
      [[3], [5], 'bool'],
      [[2, 2], [0, 3], 'float32'],
    ];
    for (const [shape, reps, dtype] of cases) {
      it(`tile [${shape}] ${dtype} by [${reps}]`, async () => {
        const compute = () => [tf.tile(tf.tensor(randomValues(size(shape), 31).map((v) => Math.round(v * 3)), shape, dtype), reps)];
        const [cpu] = await on('cpu', compute);
        const [wasm] = await on('wasm', compute);
        assert.deepEqual(wasm, cpu);
      });
    }

    it('clone and a cast to the same dtype share the buffer, which outlives the source; other casts convert', async () => {
      await tf.setBackend('wasm');
      const source = tf.tensor([1.5, -2.5, 3.25], [3]);
      const copy = tf.clone(source);
      const same = tf.cast(source, 'float32');
      const ints = tf.cast(source, 'int32');
      source.dispose();
      assert.deepEqual(Array.from(await copy.data()), [1.5, -2.5, 3.25]);
      assert.deepEqual(Array.from(await same.data()), [1.5, -2.5, 3.25]);
      assert.deepEqual(Array.from(await ints.data()), [1, -2, 3]);
      tf.dispose([copy, same, ints]);
    });
  });

  describe('gradients of mean and batchNorm equal the cpu backend', () => {
    for (const axis of [[0, 1, 2], [1, 2]]) {
      it(`mean over ${JSON.stringify(axis)}`, async () => {
        const shape = [3, 5, 4, 16];
        const compute = () => {
          const x = tf.tensor(randomValues(size(shape), 51), shape);
          const outShape = tf.mean(x, axis).shape;
          const weights = tf.tensor(randomValues(size(outShape), 52), outShape);
          return [tf.grad((a: tf.Tensor) => tf.sum(tf.mul(tf.mean(a, axis), weights)))(x)];
        };
        const [cpu] = await on('cpu', compute);
        const [wasm] = await on('wasm', compute);
        assertClose(wasm, cpu, 'dx', 1e-6);
      });
    }

    it('batchNorm with batch statistics, as tf.layers trains: dx, dmean, dvariance, dscale, doffset', async () => {
      const shape = [4, 6, 5, 16];
      const compute = () => {
        const x = tf.tensor(randomValues(size(shape), 61), shape);
        const scale = tf.tensor1d(randomValues(16, 62));
        const offset = tf.tensor1d(randomValues(16, 63));
        const weights = tf.tensor(randomValues(size(shape), 64), shape);
        const loss = (a: tf.Tensor, s: tf.Tensor, o: tf.Tensor): tf.Scalar => {
          const { mean, variance } = tf.moments(a, [0, 1, 2]);
          return tf.sum(tf.mul(tf.batchNorm(a, mean, variance, o, s, 1e-3), weights));
        };
        return tf.grads(loss)([x, scale, offset]);
      };
      const cpu = await on('cpu', compute);
      const wasm = await on('wasm', compute);
      for (const [i, name] of ['dx', 'dscale', 'doffset'].entries()) assertClose(wasm[i], cpu[i], name);
    });
  });

  it('gives a residual net with BatchNormalization in training mode the same weight gradients as the cpu backend', async () => {
    const gradients = (): tf.Tensor[] => {
      const model = buildResidualNet([12, 12, 3], [8, 16]);
      model.setWeights(model.getWeights().map((w, i) => tf.tensor(randomValues(w.size, 80 + i).map((v) => v / 2 + (w.shape.length === 1 ? 0.5 : 0)), w.shape)));
      const x = tf.tensor4d(randomValues(4 * 12 * 12 * 3, 79), [4, 12, 12, 3]);
      const labels = tf.tensor2d(randomValues(4 * 3, 78), [4, 3]);
      return weightGradients(model, () => tf.losses.meanSquaredError(labels, model.apply(x, { training: true }) as tf.Tensor));
    };
    const cpu = await on('cpu', gradients);
    const wasm = await on('wasm', gradients);
    assert.equal(wasm.length, 20, 'six convolutions, six BatchNormalizations (scale and offset) and a dense kernel and bias');
    for (let i = 0; i < cpu.length; i++) assertClose(wasm[i], cpu[i], `weight ${i}`);
  });

  it('gives the seed age model the same weight gradients as the cpu backend', async () => {
    const gradients = (): tf.Tensor[] => {
      const model = buildSeedModel('age', 6, 3);
      const x = tf.tensor4d(randomValues(16 * 48 * 48, 9).map((v) => (v + 1) / 2), [16, 48, 48, 1]);
      const labels = tf.oneHot(tf.tensor1d(Array.from({ length: 16 }, (_, i) => i % 6), 'int32'), 6);
      // training: false, so that dropout (random, and differently so per backend) stays out of it
      return weightGradients(model, () => tf.losses.softmaxCrossEntropy(labels, model.apply(x, { training: false }) as tf.Tensor));
    };
    const cpu = await on('cpu', gradients);
    const wasm = await on('wasm', gradients);
    assert.equal(wasm.length, 8, 'four layers, kernel and bias each');
    for (let i = 0; i < cpu.length; i++) assertClose(wasm[i], cpu[i], `weight ${i}`);
  });

  describe('memory', () => {
    const kernels: Array<[string, () => tf.Tensor]> = [
      ['Conv2DBackpropFilter', () => tf.engine().runKernel('Conv2DBackpropFilter', { x: tf.ones([4, 9, 8, 2]), dy: tf.ones([4, 9, 8, 3]) }, { strides: 1, pad: 'same', dataFormat: 'NHWC', filterShape: [3, 3, 2, 3] }) as tf.Tensor],
      ['Conv2DBackpropFilter, strided', () => tf.engine().runKernel('Conv2DBackpropFilter', { x: tf.ones([4, 9, 8, 2]), dy: tf.ones([4, 4, 3, 3]) }, { strides: 2, pad: 'valid', dataFormat: 'NHWC', filterShape: [3, 3, 2, 3] }) as tf.Tensor],
      ['Conv2DBackpropInput', () => tf.engine().runKernel('Conv2DBackpropInput', { dy: tf.ones([4, 9, 8, 3]), filter: tf.ones([3, 3, 2, 3]) }, { strides: 1, pad: 'same', dataFormat: 'NHWC', inputShape: [4, 9, 8, 2] }) as tf.Tensor],
      ['Conv2DBackpropInput, strided', () => tf.engine().runKernel('Conv2DBackpropInput', { dy: tf.ones([4, 5, 4, 3]), filter: tf.ones([3, 3, 2, 3]) }, { strides: 2, pad: 'same', dataFormat: 'NHWC', inputShape: [4, 9, 8, 2] }) as tf.Tensor],
      ['MaxPoolGrad', () => tf.engine().runKernel('MaxPoolGrad', { dy: tf.ones([2, 4, 4, 2]), input: tf.ones([2, 8, 8, 2]), output: tf.ones([2, 4, 4, 2]) }, { filterSize: 2, strides: 2, pad: 'valid' }) as tf.Tensor],
      ['BatchMatMul', () => tf.matMul(tf.ones([5, 7]), tf.ones([6, 7]), false, true)],
      ['Add', () => tf.add(tf.ones([5, 7, 3]), tf.ones([3]))],
      ['Conv2DBackpropFilter, SIMD rows', () => tf.engine().runKernel('Conv2DBackpropFilter', { x: tf.ones([2, 9, 8, 8]), dy: tf.ones([2, 5, 4, 16]) }, { strides: 2, pad: 'same', dataFormat: 'NHWC', filterShape: [3, 3, 8, 16] }) as tf.Tensor],
      ['Conv2DBackpropInput, SIMD rows', () => tf.engine().runKernel('Conv2DBackpropInput', { dy: tf.ones([2, 5, 4, 16]), filter: tf.ones([3, 3, 8, 16]) }, { strides: 2, pad: 'same', dataFormat: 'NHWC', inputShape: [2, 9, 8, 8] }) as tf.Tensor],
      ['Conv2DBackpropInput, columns', () => tf.engine().runKernel('Conv2DBackpropInput', { dy: tf.ones([2, 5, 4, 3]), filter: tf.ones([3, 3, 2, 3]) }, { strides: 2, pad: 'same', dataFormat: 'NHWC', inputShape: [2, 9, 8, 2] }) as tf.Tensor],
      ['Sub and Multiply by a channel vector', () => tf.mul(tf.sub(tf.ones([5, 7, 8]), tf.ones([8])), tf.ones([1, 1, 8]))],
      ['Sum and Mean', () => tf.add(tf.sum(tf.ones([3, 300, 8]), [0, 1]), tf.mean(tf.ones([3, 4, 8]), [0, 1]))],
      ['FusedBatchNorm', () => tf.batchNorm(tf.ones([3, 4, 8]), tf.zeros([8]), tf.ones([8]), tf.zeros([8]), tf.ones([8]))],
      ['Tile, Identity and Cast', () => tf.cast(tf.clone(tf.tile(tf.ones([1, 8]), [3, 1])), 'float32')],
      ['the mean and batchNorm gradients', () => tf.grad((x: tf.Tensor) => {
        const { mean, variance } = tf.moments(x, [0, 1]);
        return tf.sum(tf.batchNorm(x, mean, variance, tf.zeros([8]), tf.ones([8])));
      })(tf.randomUniform([3, 4, 8]))],
    ];
    for (const [name, run] of kernels) {
      it(`${name} frees every intermediate (tensor and wasm buffer counts stay put)`, async () => {
        await tf.setBackend('wasm');
        tf.dispose(tf.tidy(run)); // warm up: first calls may set up caches
        const backend = tf.backend() as unknown as { numDataIds(): number };
        const tensorsBefore = tf.memory().numTensors;
        const buffersBefore = backend.numDataIds();
        for (let i = 0; i < 3; i++) tf.dispose(tf.tidy(run));
        assert.equal(tf.memory().numTensors, tensorsBefore, 'tensors');
        assert.equal(backend.numDataIds(), buffersBefore, 'wasm buffers');
      });
    }

    it('does not leak tensors or wasm buffers across training steps of a residual net', async () => {
      await tf.setBackend('wasm');
      const model = buildResidualNet([12, 12, 3], [8, 16]);
      model.compile({ optimizer: tf.train.adam(1e-3), loss: 'meanSquaredError' });
      const x = tf.randomUniform([4, 12, 12, 3]);
      const y = tf.randomUniform([4, 3]);
      await model.trainOnBatch(x, y);
      const backend = tf.backend() as unknown as { numDataIds(): number };
      const tensorsBefore = tf.memory().numTensors;
      const buffersBefore = backend.numDataIds();
      for (let i = 0; i < 3; i++) await model.trainOnBatch(x, y);
      assert.equal(tf.memory().numTensors, tensorsBefore, 'tensors');
      assert.equal(backend.numDataIds(), buffersBefore, 'wasm buffers');
      model.dispose();
      tf.dispose([x, y]);
    });

    it('does not leak across training steps of the seed age model', async () => {
      await tf.setBackend('wasm');
      const model = buildSeedModel('age', 6, 1);
      const x = tf.randomUniform([8, 48, 48, 1]);
      const y = tf.tensor1d([0, 1, 2, 3, 4, 5, 0, 1]);
      await model.trainOnBatch(x, y);
      const before = tf.memory().numTensors;
      for (let i = 0; i < 3; i++) await model.trainOnBatch(x, y);
      assert.equal(tf.memory().numTensors, before);
      model.dispose();
      tf.dispose([x, y]);
    });
  });

  describe('registration', () => {
    it('is idempotent and silent, and the reference set swaps the stock kernels back in', async () => {
      const warnings: string[] = [];
      const warn = console.warn;
      console.warn = (...args: unknown[]) => void warnings.push(args.join(' '));
      try {
        const fast = tf.getKernel('Conv2DBackpropFilter', 'wasm').kernelFunc;
        registerWasmTrainingKernels();
        assert.equal(tf.getKernel('Conv2DBackpropFilter', 'wasm').kernelFunc, fast, 'the same kernel stays');
        const fastMeanGradient = tf.getGradient('Mean');
        const fastTile = tf.getKernel('Tile', 'wasm').kernelFunc;
        registerWasmTrainingKernels('reference');
        assert.notEqual(tf.getKernel('Conv2DBackpropFilter', 'wasm').kernelFunc, fast, 'the reference kernel is in');
        assert.notEqual(tf.getKernel('Tile', 'wasm').kernelFunc, fastTile, 'the stock Tile is back');
        assert.notEqual(tf.getGradient('Mean'), fastMeanGradient, "tfjs-core's Mean gradient is back");
        await checkConv({ x: [2, 9, 8, 2], filter: [3, 3, 2, 3], strides: 1, pad: 'same' }, 11);
        await assert.rejects(checkConv({ x: [2, 9, 8, 2], filter: [3, 3, 2, 3], strides: 2, pad: 'same' }, 11), /stride 1/);
        registerWasmTrainingKernels('fast');
        assert.equal(tf.getKernel('Conv2DBackpropFilter', 'wasm').kernelFunc, fast, 'the fast kernel is back');
      } finally {
        console.warn = warn;
        registerWasmTrainingKernels();
      }
      assert.deepEqual(warnings, []);
    });

    it('rejects an unknown kernel set by name', () => {
      assert.throws(() => registerWasmTrainingKernels('turbo' as WasmKernelSet), /Unsupported wasm kernel set "turbo"; expected one of: fast, reference/);
    });
  });
});
