/**
 * Merging models that read the same input into one graph (contract/merge-models.ts): what it keeps once, what
 * it never merges, what it refuses, and that the merged graph answers exactly as the separate models do, on small
 * hand-made graphs and on the shipped models.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import { DataType, encodeModel, float32Bytes, type NodeProto, type TensorProto } from '../export/onnx-proto.ts';
import { TASKS } from '../contract/labels.ts';
import { mergeModels, ModelMergeError } from '../contract/merge-models.ts';
import { readModelMetadata } from '../contract/metadata.ts';
import { REPO_ROOT } from '../node-shared/paths.ts';

const FEATURES = 4;

function weights(name: string, dims: number[], seed: number): TensorProto {
  const values = Array.from({ length: dims[0] * dims[1] }, (_, i) => Math.sin(seed * 97 + i * 13) * 0.5);
  return { name, dims, dataType: DataType.FLOAT, rawData: float32Bytes(values) };
}

/** x [N, features] -> MatMul(trunk) -> Relu -> MatMul(head) -> y: a trunk and a head, with names of its own. */
function trunkAndHead(prefix: string, trunkSeed: number, headSeed: number, options: { features?: number; random?: boolean } = {}): Uint8Array {
  const features = options.features ?? FEATURES;
  const nodes: NodeProto[] = [
    { name: `${prefix}_mm1`, opType: 'MatMul', inputs: [`${prefix}_x`, `${prefix}_w1`], outputs: [`${prefix}_h`], attributes: {} },
    { name: `${prefix}_relu`, opType: 'Relu', inputs: [`${prefix}_h`], outputs: [`${prefix}_r`], attributes: {} },
    { name: `${prefix}_mm2`, opType: 'MatMul', inputs: [`${prefix}_r`, `${prefix}_w2`], outputs: ['y'], attributes: {} },
  ];
  if (options.random) {
    nodes[2] = { ...nodes[2], outputs: [`${prefix}_z`] };
    nodes.push(
      { name: `${prefix}_noise`, opType: 'RandomUniformLike', inputs: [`${prefix}_z`], outputs: [`${prefix}_n`], attributes: {} },
      { name: `${prefix}_add`, opType: 'Add', inputs: [`${prefix}_z`, `${prefix}_n`], outputs: ['y'], attributes: {} },
    );
  }
  const initializers = [weights(`${prefix}_w1`, [features, FEATURES], trunkSeed), weights(`${prefix}_w2`, [FEATURES, 2], headSeed)];
  return graphModel(prefix, nodes, initializers, [features], [2]);
}

/** A model of `nodes` from `<prefix>_x` [N, ...input] to `y` [N, ...output]. */
function graphModel(prefix: string, nodes: NodeProto[], initializers: TensorProto[], input: number[], output: number[], irVersion = 7): Uint8Array {
  return encodeModel({
    irVersion,
    producerName: 'merge-models.test',
    producerVersion: '1',
    graph: {
      name: prefix,
      nodes,
      initializers,
      inputs: [{ name: `${prefix}_x`, elemType: DataType.FLOAT, shape: ['N', ...input] }],
      outputs: [{ name: 'y', elemType: DataType.FLOAT, shape: ['N', ...output] }],
    },
    opsetImports: [{ domain: '', version: 13 }],
    metadataProps: [],
  });
}

/** x [N, 6] split in `parts` equal parts along axis 1 (opset 13: the number of outputs sets their size); y is the first. */
function splitModel(prefix: string, parts: number): Uint8Array {
  const outputs = Array.from({ length: parts }, (_, i) => (i === 0 ? 'y' : `${prefix}_part${i}`));
  return graphModel(prefix, [{ name: `${prefix}_split`, opType: 'Split', inputs: [`${prefix}_x`], outputs, attributes: { axis: 1 } }], [], [6], [6 / parts]);
}

async function runModel(bytes: Uint8Array, input: ort.Tensor): Promise<Record<string, Float32Array>> {
  const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all' });
  const outputs = await session.run({ [session.inputNames[0]]: input });
  await session.release();
  return Object.fromEntries(Object.entries(outputs).map(([name, tensor]) => [name, tensor.data as Float32Array]));
}

describe('merging models into one graph', () => {
  it('keeps once what two models compute alike (same weights under other names), and answers exactly as each model', async () => {
    const models = [
      { key: 'a', bytes: trunkAndHead('a', 1, 10) },
      { key: 'b', bytes: trunkAndHead('b', 1, 20) },
      { key: 'c', bytes: trunkAndHead('c', 2, 30) },
    ];
    const merged = mergeModels(models);
    // a: 3 nodes; b: only its head's MatMul is new; c: a trunk of other weights, so 3 new nodes.
    assert.deepEqual(merged.nodes, { separate: 9, merged: 7 });
    assert.equal(merged.inputName, 'a_x');
    assert.deepEqual(merged.outputNames, { a: { y: 'a/y' }, b: { y: 'b/y' }, c: { y: 'c/y' } });
    const input = new ort.Tensor('float32', Float32Array.from({ length: 3 * FEATURES }, (_, i) => Math.cos(i) * 2), [3, FEATURES]);
    const together = await runModel(merged.bytes, input);
    for (const { key, bytes } of models) assert.deepEqual(together[`${key}/y`], (await runModel(bytes, input)).y, `${key}'s output`);
  });

  it('never merges random operators, even two that are alike', () => {
    const merged = mergeModels([
      { key: 'a', bytes: trunkAndHead('a', 1, 10, { random: true }) },
      { key: 'b', bytes: trunkAndHead('b', 1, 10, { random: true }) },
    ]);
    // The trunk and head are the same, but each model keeps its own noise and the Add that reads it.
    assert.deepEqual(merged.nodes, { separate: 10, merged: 7 });
  });

  it('keeps apart nodes that differ only in their outputs: a Split into 3 parts is not a Split into 2', async () => {
    const models = [{ key: 'thirds', bytes: splitModel('a', 3) }, { key: 'halves', bytes: splitModel('b', 2) }];
    const merged = mergeModels(models);
    assert.deepEqual(merged.nodes, { separate: 2, merged: 2 });
    const input = new ort.Tensor('float32', Float32Array.from({ length: 2 * 6 }, (_, i) => i), [2, 6]);
    const together = await runModel(merged.bytes, input);
    for (const { key, bytes } of models) assert.deepEqual(together[`${key}/y`], (await runModel(bytes, input)).y, `${key}'s output`);
    assert.deepEqual(Array.from(together['halves/y']), [0, 1, 2, 6, 7, 8]);
  });

  it('refuses, saying why, models whose inputs differ in shape, files that are not models, and keys used twice', () => {
    assert.throws(() => mergeModels([{ key: 'a', bytes: trunkAndHead('a', 1, 10) }, { key: 'old', bytes: graphModel('old', [{ name: 'r', opType: 'Relu', inputs: ['old_x'], outputs: ['y'], attributes: {} }], [], [FEATURES], [FEATURES], 3) }]), /old: IR version 3 is older than 4/);
    assert.throws(
      () => mergeModels([{ key: 'a', bytes: trunkAndHead('a', 1, 10) }, { key: 'b', bytes: trunkAndHead('b', 1, 10, { features: 3 }) }]),
      (e: Error) => e instanceof ModelMergeError && e.message === 'b\'s input "b_x" differs from a\'s "a_x" in type or shape',
    );
    assert.throws(() => mergeModels([{ key: 'a', bytes: trunkAndHead('a', 1, 10) }, { key: 'b', bytes: new Uint8Array([0x0a, 0xff]) }]), (e: Error) => e instanceof ModelMergeError && /truncated/.test(e.message));
    assert.throws(() => mergeModels([{ key: 'a', bytes: trunkAndHead('a', 1, 10) }, { key: 'a', bytes: trunkAndHead('b', 1, 10) }]), (e: Error) => e instanceof ModelMergeError && /two models have the key "a"/.test(e.message));
  });

  const shipped = TASKS.map((task) => join(REPO_ROOT, 'models', `${task}.onnx`));
  const files = shipped.every((path) => existsSync(path)) ? shipped.map((path) => new Uint8Array(readFileSync(path))) : [];
  const sharedTrunk = files.length === TASKS.length && files.every((bytes) => {
    const metadata = readModelMetadata(bytes);
    const kept = (m: typeof metadata) => (m.metrics as { keptEpoch?: number } | null)?.keptEpoch;
    return metadata.source.preset === 'multitask' && kept(metadata) === kept(readModelMetadata(files[0]));
  });
  it('runs the shipped multitask models\' trunk once, with the answers of the three files', { skip: !sharedTrunk && 'the shipped models are not multitask models kept at one epoch' }, async () => {
    const merged = mergeModels(TASKS.map((task, i) => ({ key: task, bytes: files[i] })));
    // Everything but the three heads is one copy.
    assert.ok(merged.nodes.merged < merged.nodes.separate / 2, `${merged.nodes.merged} of ${merged.nodes.separate} nodes left`);
    const { height, width, channels } = readModelMetadata(files[0]).input;
    const input = new ort.Tensor('float32', Float32Array.from({ length: 4 * height * width * channels }, (_, i) => (Math.sin(i * 0.37) + 1) / 2), [4, height, width, channels]);
    const together = await runModel(merged.bytes, input);
    for (const [i, task] of TASKS.entries()) {
      for (const [name, values] of Object.entries(await runModel(files[i], input))) assert.deepEqual(together[merged.outputNames[task][name]], values, `${task} ${name}`);
    }
  });
});
