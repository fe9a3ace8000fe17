/**
 * Every entry of the exporter's layer table, in a small model with random weights, exported and run in
 * onnxruntime-node (all graph optimizations on) and onnxruntime-web (wasm) against tfjs on the same
 * random batch: dtype and shape exact, values within 1e-5.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { ACTIVATIONS, LAYER_TABLE, UnsupportedLayerError, type LayerRule } from '../export/layers.ts';
import { encodeLayersModel } from '../export/export-model.ts';
import { ONNX_RUNTIMES, maxAbsDiff, randomValues, runBoth, type OnnxRuntimeName } from '../export/parity.ts';
import { modelSha256, SpatialDropout2D } from '../export/tfjs-model.ts';
import { taskLabels, TASKS } from '../contract/labels.ts';
import { HorizontalFlip } from '../node-shared/tfjs/flip-layer.ts';
import { Temperature } from '../node-shared/tfjs/temperature-layer.ts';
import { buildSeedModel } from '../training/models/seed.ts';

/** Same arithmetic in another runtime: the STYLE guide's tolerance. */
const ATOL = 1e-5;
const BATCH = 3;
const RUNTIMES = Object.keys(ONNX_RUNTIMES) as OnnxRuntimeName[];
/** A non-square image whose odd and even sides exercise TF's asymmetric 'same' padding. */
const IMAGE: [number, number, number] = [7, 10, 3];

type Build = (x: tf.SymbolicTensor) => tf.SymbolicTensor | tf.SymbolicTensor[];

interface LayerCase {
  name: string;
  /** a functional model on an input of this shape, or a ready model */
  input?: [number, number, number];
  build?: Build;
  model?: () => tf.LayersModel;
}

const L = tf.layers;
const sym = (layer: tf.layers.Layer, x: tf.SymbolicTensor | tf.SymbolicTensor[]) => layer.apply(x) as tf.SymbolicTensor;
const conv = (x: tf.SymbolicTensor, args: Partial<Parameters<typeof L.conv2d>[0]> = {}) => sym(L.conv2d({ filters: 4, kernelSize: 3, padding: 'same', ...args }), x);

/** tfjs activation names (all but silu, which is registered by the exporter, are tfjs' own). */
type ActivationName = Parameters<typeof L.activation>[0]['activation'];

const CASES: LayerCase[] = [
  { name: 'Conv2D, same padding, stride 1, relu', input: IMAGE, build: (x) => conv(x, { activation: 'relu' }) },
  { name: 'Conv2D, same padding, stride 2 on a 7x10 input (TF puts the odd pad at the end)', input: IMAGE, build: (x) => conv(x, { strides: 2 }) },
  { name: 'Conv2D, same padding, even 4x2 kernel (asymmetric pads on both axes)', input: IMAGE, build: (x) => conv(x, { kernelSize: [4, 2] }) },
  { name: 'Conv2D, valid padding, 2x3 kernel, strides 2x1, no bias', input: IMAGE, build: (x) => conv(x, { kernelSize: [2, 3], strides: [2, 1], padding: 'valid', useBias: false }) },
  { name: 'Conv2D, dilation 2, same padding', input: IMAGE, build: (x) => conv(x, { dilationRate: 2 }) },
  ...Object.keys(ACTIVATIONS).map(
    (activation): LayerCase => ({
      name: `Conv2D with fused ${activation} (softmax family on the channel axis)`,
      input: IMAGE,
      // 'silu' is not in tfjs' ActivationIdentifier type; the exporter registers it (see tfjs-model.ts).
      build: (x) => conv(x, { activation: activation as ActivationName }),
    }),
  ),
  ...Object.keys(ACTIVATIONS).map(
    (activation): LayerCase => ({
      name: `Activation layer ${activation} on features (rank 2)`,
      input: [4, 5, 2],
      build: (x) => sym(L.activation({ activation: activation as ActivationName }), sym(L.dense({ units: 6 }), sym(L.flatten(), x))),
    }),
  ),
  { name: 'DepthwiseConv2D, multiplier 2, same, stride 2, relu6', input: IMAGE, build: (x) => sym(L.depthwiseConv2d({ kernelSize: 3, depthMultiplier: 2, strides: 2, padding: 'same', activation: 'relu6' }), x) },
  { name: 'DepthwiseConv2D, multiplier 1, valid, 2x3 kernel, no bias', input: IMAGE, build: (x) => sym(L.depthwiseConv2d({ kernelSize: [2, 3], useBias: false }), x) },
  { name: 'SeparableConv2D, multiplier 2, same, stride 2, swish', input: IMAGE, build: (x) => sym(L.separableConv2d({ filters: 5, kernelSize: 3, depthMultiplier: 2, strides: 2, padding: 'same', activation: 'swish' }), x) },
  { name: 'SeparableConv2D, valid, dilation 2, no bias', input: IMAGE, build: (x) => sym(L.separableConv2d({ filters: 2, kernelSize: [2, 3], dilationRate: 2, useBias: false }), x) },
  { name: 'MaxPooling2D, 2x2 valid on odd sizes', input: IMAGE, build: (x) => sym(L.maxPooling2d({ poolSize: 2 }), conv(x)) },
  { name: 'MaxPooling2D, 3x3 same, stride 2', input: IMAGE, build: (x) => sym(L.maxPooling2d({ poolSize: 3, strides: 2, padding: 'same' }), conv(x)) },
  { name: 'AveragePooling2D, 3x3 same, stride 2 (padding not counted)', input: IMAGE, build: (x) => sym(L.averagePooling2d({ poolSize: 3, strides: 2, padding: 'same' }), x) },
  { name: 'AveragePooling2D, 2x3 valid, stride 1', input: IMAGE, build: (x) => sym(L.averagePooling2d({ poolSize: [2, 3], strides: 1 }), x) },
  { name: 'GlobalAveragePooling2D then Dense softmax', input: IMAGE, build: (x) => sym(L.dense({ units: 5, activation: 'softmax' }), sym(L.globalAveragePooling2d({}), conv(x))) },
  { name: 'GlobalMaxPooling2D', input: IMAGE, build: (x) => sym(L.globalMaxPooling2d({}), conv(x)) },
  { name: 'BatchNormalization after Conv2D (NCHW), epsilon 0.01', input: IMAGE, build: (x) => sym(L.batchNormalization({ epsilon: 0.01 }), conv(x)) },
  { name: 'BatchNormalization on features (rank 2), center and scale off', input: IMAGE, build: (x) => sym(L.batchNormalization({ center: false, scale: false }), sym(L.dense({ units: 6 }), sym(L.flatten(), x))) },
  { name: 'BatchNormalization on rank 3 (after Reshape)', input: IMAGE, build: (x) => sym(L.batchNormalization({}), sym(L.reshape({ targetShape: [70, 4] }), conv(x))) },
  { name: 'Dense on features, no bias, tanh', input: IMAGE, build: (x) => sym(L.dense({ units: 7, useBias: false, activation: 'tanh' }), sym(L.flatten(), x)) },
  { name: 'Dense on an image (last axis of rank 4), then Conv2D', input: IMAGE, build: (x) => conv(sym(L.dense({ units: 5, activation: 'relu' }), conv(x))) },
  { name: 'Flatten after a 4-channel Conv2D, then Dense (NHWC order)', input: IMAGE, build: (x) => sym(L.dense({ units: 6 }), sym(L.flatten(), conv(x))) },
  { name: 'Reshape image features to [h*w, c], then Dense and Flatten', input: IMAGE, build: (x) => sym(L.flatten(), sym(L.dense({ units: 3 }), sym(L.reshape({ targetShape: [70, 4] }), conv(x)))) },
  { name: 'Reshape with -1 to [-1, 2], then Dense (rank-3 output)', input: IMAGE, build: (x) => sym(L.dense({ units: 3 }), sym(L.reshape({ targetShape: [-1, 2] }), conv(x))) },
  { name: 'Reshape a vector to a 2x3x4 image, then Conv2D', input: IMAGE, build: (x) => conv(sym(L.reshape({ targetShape: [2, 3, 4] }), sym(L.dense({ units: 24 }), sym(L.flatten(), x)))) },
  {
    name: 'Dropout, SpatialDropout2D, GaussianNoise, GaussianDropout, AlphaDropout are removed',
    input: IMAGE,
    build: (x) => {
      let y = sym(new SpatialDropout2D({ rate: 0.4 }), conv(x));
      y = sym(L.gaussianNoise({ stddev: 0.5 }), sym(L.dropout({ rate: 0.5 }), y));
      return sym(L.alphaDropout({ rate: 0.3 }), sym(L.gaussianDropout({ rate: 0.3 }), sym(L.flatten(), y)));
    },
  },
  { name: 'SpatialDropout1D on rank 3 is removed', input: IMAGE, build: (x) => sym(L.spatialDropout1d({ rate: 0.5 }), sym(L.reshape({ targetShape: [70, 3] }), x)) },
  {
    name: 'ReLU (with and without maxValue), LeakyReLU (default and 0.1), ELU, Softmax layers on images and features',
    input: IMAGE,
    build: (x) => {
      const y = conv(x);
      return [
        sym(L.reLU({}), y),
        sym(L.reLU({ maxValue: 0.5 }), y),
        sym(L.leakyReLU({}), y),
        sym(L.leakyReLU({ alpha: 0.1 }), y),
        sym(L.elu({}), y),
        // tfjs' Softmax layer defaults to axis 1 (Keras: -1) and only supports the last axis.
        sym(L.softmax({ axis: -1 }), y),
        sym(L.softmax({}), sym(L.flatten(), y)),
      ];
    },
  },
  {
    name: 'Add of three branches and a residual block with BatchNormalization',
    input: IMAGE,
    build: (x) => {
      const a = conv(x, { activation: 'relu' });
      const b = sym(L.batchNormalization({}), conv(a));
      const residual = sym(L.activation({ activation: 'relu' }), sym(L.add({}), [a, b]));
      return sym(L.add({}), [residual, conv(residual), conv(x)]);
    },
  },
  {
    name: 'Multiply, Average, Maximum (three inputs), Minimum (two)',
    input: IMAGE,
    build: (x) => {
      const a = conv(x);
      const b = conv(x);
      const c = conv(x);
      return [sym(L.multiply({}), [a, b, c]), sym(L.average({}), [a, b, c]), sym(L.maximum({}), [a, b, c]), sym(L.minimum({}), [a, b])];
    },
  },
  {
    name: 'Squeeze-and-excitation: Multiply broadcasts [N,1,1,C] over [N,H,W,C]',
    input: IMAGE,
    build: (x) => {
      const features = conv(x, { filters: 6 });
      const squeeze = sym(L.dense({ units: 6, activation: 'hardSigmoid' }), sym(L.dense({ units: 3, activation: 'relu' }), sym(L.globalAveragePooling2d({}), features)));
      return sym(L.multiply({}), [features, sym(L.reshape({ targetShape: [1, 1, 6] }), squeeze)]);
    },
  },
  {
    name: 'Concatenate on channels, on height (axis 1) and on features',
    input: IMAGE,
    build: (x) => {
      const a = conv(x);
      const b = conv(x, { filters: 2 });
      return [sym(L.concatenate({}), [a, b, x]), sym(L.concatenate({ axis: 1 }), [a, conv(x)]), sym(L.concatenate({}), [sym(L.flatten(), a), sym(L.globalMaxPooling2d({}), b)])];
    },
  },
  { name: 'ZeroPadding2D, asymmetric, then Conv2D valid', input: IMAGE, build: (x) => conv(sym(L.zeroPadding2d({ padding: [[1, 2], [0, 3]] }), x), { padding: 'valid' }) },
  {
    name: 'several outputs: probabilities, years and a feature map',
    input: IMAGE,
    build: (x) => {
      const trunk = sym(L.maxPooling2d({ poolSize: 2 }), conv(x, { activation: 'relu' }));
      const flat = sym(L.flatten(), trunk);
      return [sym(L.dense({ units: 6, activation: 'softmax' }), flat), sym(L.dense({ units: 1 }), flat), trunk];
    },
  },
  {
    name: 'a Conv2D layer shared by two branches',
    input: IMAGE,
    build: (x) => {
      const shared = L.conv2d({ filters: 3, kernelSize: 3, padding: 'same' });
      const once = sym(shared, x);
      return sym(L.add({}), [once, sym(shared, once)]);
    },
  },
  {
    name: 'HorizontalFlip: one conv on the image and on its mirror image, averaged (test-time flip)',
    input: IMAGE,
    build: (x) => {
      const shared = L.conv2d({ filters: 3, kernelSize: [2, 3], padding: 'same' });
      return sym(L.average({}), [sym(shared, x), sym(shared, sym(new HorizontalFlip({}), x))]);
    },
  },
  {
    name: 'Temperature 0.6 on the softmax probabilities of 5 classes (sharpened)',
    input: [4, 5, 2],
    build: (x) => sym(new Temperature({ temperature: 0.6 }), sym(L.dense({ units: 5, activation: 'softmax' }), sym(L.flatten(), x))),
  },
  {
    name: 'Temperature 1.7 on one sigmoid unit (softened)',
    input: [4, 5, 2],
    build: (x) => sym(new Temperature({ temperature: 1.7 }), sym(L.dense({ units: 1, activation: 'sigmoid' }), sym(L.flatten(), x))),
  },
  {
    name: 'a Sequential model (conv, pool, flatten, dense, dropout, softmax)',
    model: () => {
      const m = tf.sequential();
      m.add(L.conv2d({ inputShape: [9, 6, 2], filters: 3, kernelSize: 3, activation: 'elu' }));
      m.add(L.maxPooling2d({ poolSize: 2 }));
      m.add(L.flatten());
      m.add(L.dense({ units: 8, activation: 'relu' }));
      m.add(L.dropout({ rate: 0.5 }));
      m.add(L.dense({ units: 4, activation: 'softmax' }));
      return m;
    },
  },
  ...TASKS.map((task): LayerCase => ({ name: `the seed ${task} model (48x48 grayscale)`, model: () => buildSeedModel(task, taskLabels(task).length, 5) })),
];

/** Overwrites every weight with seeded random values (variances kept positive), biases included. */
function randomizeWeights(model: tf.LayersModel, seed: number): void {
  for (const layer of model.layers) {
    if (layer.weights.length === 0) continue;
    const values = layer.weights.map((w, i) => {
      const positive = /variance/.test(w.originalName);
      const count = w.shape.reduce((a: number, b) => a * (b ?? 1), 1);
      return tf.tensor(randomValues(count, seed + i * 7919, positive ? 0.5 : -0.5, positive ? 1.5 : 0.5), w.shape as number[]);
    });
    layer.setWeights(values);
    tf.dispose(values);
    seed += 104729;
  }
}

function buildCase(c: LayerCase): tf.LayersModel {
  if (c.model !== undefined) return c.model();
  const input = tf.input({ shape: c.input as number[] });
  return tf.model({ inputs: input, outputs: (c.build as Build)(input) });
}

function inputOf(model: tf.LayersModel, batch: number, seed: number): { values: Float32Array; shape: number[] } {
  const shape = [batch, ...(model.inputs[0].shape.slice(1) as number[])];
  return { values: randomValues(shape.reduce((a, b) => a * b), seed, -1, 1), shape };
}

/** Exports `model` and returns per runtime and output the largest absolute difference from tfjs. */
async function parity(model: tf.LayersModel, input: { values: Float32Array; shape: number[] }, bytes = encodeLayersModel(model)): Promise<Record<OnnxRuntimeName, number[]>> {
  const result = {} as Record<OnnxRuntimeName, number[]>;
  for (const runtime of RUNTIMES) {
    const runner = await ONNX_RUNTIMES[runtime](bytes);
    try {
      const run = await runBoth(model, runner, input.values, input.shape);
      result[runtime] = run.onnx.map((out, i) => {
        assert.deepEqual(out.shape, run.tfjs[i].shape, `${runtime} output ${i} shape`);
        assert.ok(out.values instanceof Float32Array, `${runtime} output ${i} dtype`);
        return maxAbsDiff(run.tfjs[i].values, out.values);
      });
    } finally {
      await runner.release();
    }
  }
  return result;
}

const measured: string[] = [];
const coveredLayers = new Set<string>();
const coveredActivations = new Set<string>();

describe('exporter layer table: tfjs vs onnxruntime-node and onnxruntime-web', () => {
  before(async () => {
    await tf.setBackend('cpu');
  });
  after(() => {
    console.log(`\nmax |diff| per case (batch ${BATCH}; node / web):\n${measured.join('\n')}`);
  });

  CASES.forEach((c, index) => {
    it(`${c.name}: matches tfjs within ${ATOL} on a batch of ${BATCH}`, async (t) => {
      const model = buildCase(c);
      randomizeWeights(model, 1000 + index);
      for (const layer of [...model.layers, model.inputs[0].sourceLayer]) {
        coveredLayers.add(layer.getClassName());
        const activation = layer.getConfig().activation;
        if (typeof activation === 'string') coveredActivations.add(activation);
      }
      const diffs = await parity(model, inputOf(model, BATCH, index + 1));
      const line = RUNTIMES.map((r) => diffs[r].map((d) => d.toExponential(1)).join(',')).join(' / ');
      measured.push(`  ${line.padEnd(28)} ${c.name}`);
      t.diagnostic(`max |diff| ${line}`);
      for (const runtime of RUNTIMES) {
        diffs[runtime].forEach((d, i) => assert.ok(d <= ATOL, `${runtime} output ${i}: max |diff| ${d} > ${ATOL}`));
      }
      model.dispose();
    });
  });

  it('covers every layer class and every activation of the table', () => {
    assert.deepEqual(Object.keys(LAYER_TABLE).filter((name) => !coveredLayers.has(name)), []);
    assert.deepEqual(Object.keys(ACTIVATIONS).filter((name) => !coveredActivations.has(name)), []);
  });

  it('keeps the batch dimension dynamic: one export runs batches of 1, 3 and 7', async () => {
    const model = buildCase(CASES.find((c) => c.name.startsWith('Flatten after')) as LayerCase);
    randomizeWeights(model, 77);
    const bytes = encodeLayersModel(model);
    for (const batch of [1, 3, 7]) {
      const diffs = await parity(model, inputOf(model, batch, batch), bytes);
      for (const runtime of RUNTIMES) assert.ok(diffs[runtime][0] <= ATOL, `${runtime}, batch ${batch}: ${diffs[runtime][0]}`);
    }
    model.dispose();
  });

  it('would catch a Flatten that flattens NCHW: the wrong order differs from tfjs by far more than the tolerance', async () => {
    const model = buildCase(CASES.find((c) => c.name.startsWith('Flatten after')) as LayerCase);
    randomizeWeights(model, 78);
    const nchwFlatten: LayerRule = {
      onnx: 'Flatten straight from NCHW (wrong)',
      convert: (ctx) => ({ name: ctx.graph.node('Flatten', [ctx.inputs[0].name], ctx.layerName, { axis: 1 }), shape: ctx.outputShape, layout: 'keras' }),
    };
    const input = inputOf(model, BATCH, 5);
    const wrong = await parity(model, input, encodeLayersModel(model, { layers: { ...LAYER_TABLE, Flatten: nchwFlatten } }));
    const right = await parity(model, input);
    assert.ok(wrong['onnxruntime-node'][0] > 1e-2, `the NCHW flatten differs by only ${wrong['onnxruntime-node'][0]}`);
    assert.ok(right['onnxruntime-node'][0] <= ATOL);
    model.dispose();
  });

  it('leaves no tensors behind: exporting and the parity run keep tf.memory().numTensors flat', async () => {
    const model = buildCase(CASES.find((c) => c.name.startsWith('Add of three')) as LayerCase);
    randomizeWeights(model, 80);
    const input = inputOf(model, BATCH, 3);
    await parity(model, input); // first run allocates tfjs' kernels and caches
    const before = tf.memory().numTensors;
    await modelSha256(model);
    await parity(model, input, encodeLayersModel(model));
    assert.equal(tf.memory().numTensors, before);
    model.dispose();
  });

  it('exports the same graph for opsets 13 to 21, and each loads and matches', async () => {
    const model = buildCase(CASES.find((c) => c.name.startsWith('Squeeze-and-excitation')) as LayerCase);
    randomizeWeights(model, 79);
    for (const opset of [13, 17, 21]) {
      const diffs = await parity(model, inputOf(model, BATCH, 9), encodeLayersModel(model, { opset }));
      for (const runtime of RUNTIMES) assert.ok(diffs[runtime][0] <= ATOL, `opset ${opset}, ${runtime}: ${diffs[runtime][0]}`);
    }
    model.dispose();
  });
});

describe('exporter refusals', () => {
  it('names an unsupported layer, its class and the supported classes', () => {
    const input = tf.input({ shape: [6, 8, 3] });
    const up = sym(L.upSampling2d({ size: [2, 2], name: 'upsample_face' }), input);
    const model = tf.model({ inputs: input, outputs: sym(L.flatten(), up) });
    assert.throws(
      () => encodeLayersModel(model),
      (error: Error) =>
        error instanceof UnsupportedLayerError &&
        error.message.includes('"upsample_face"') &&
        error.message.includes('class UpSampling2D') &&
        error.message.includes('Supported layer classes: Activation, Add,') &&
        error.message.includes('Conv2D'),
    );
  });

  it('names every unsupported layer at once', () => {
    const input = tf.input({ shape: [6, 8, 3] });
    const y = sym(L.cropping2D({ cropping: 1, name: 'crop' }), sym(L.conv2dTranspose({ filters: 2, kernelSize: 3, name: 'deconv' }), input));
    const model = tf.model({ inputs: input, outputs: y });
    assert.throws(() => encodeLayersModel(model), /"deconv" \(class Conv2DTranspose\), "crop" \(class Cropping2D\) are not supported/);
  });

  it('refuses a supported layer with an option it cannot express, naming layer, class and option', () => {
    const input = tf.input({ shape: [3, 6, 8] });
    const model = tf.model({ inputs: input, outputs: sym(L.conv2d({ filters: 2, kernelSize: 3, dataFormat: 'channelsFirst', name: 'cf_conv' }), input) });
    assert.throws(() => encodeLayersModel(model), /layer "cf_conv" \(class Conv2D\): dataFormat "channelsFirst" is not supported; expected one of: channelsLast/);
  });

  it('refuses a dilated DepthwiseConv2D, which tfjs computes without its dilation', () => {
    const input = tf.input({ shape: [9, 9, 2] });
    const model = tf.model({ inputs: input, outputs: sym(L.depthwiseConv2d({ kernelSize: 3, dilationRate: 2, name: 'dw' }), input) });
    assert.throws(() => encodeLayersModel(model), /layer "dw" \(class DepthwiseConv2D\): dilationRate other than 1 is not supported: tfjs-layers ignores it/);
  });

  it('refuses an unknown opset and names the supported ones', () => {
    const input = tf.input({ shape: [2, 2, 1] });
    const model = tf.model({ inputs: input, outputs: sym(L.flatten(), input) });
    assert.throws(() => encodeLayersModel(model, { opset: 11 }), /Unsupported opset 11; expected one of: 13, 14/);
  });
});
