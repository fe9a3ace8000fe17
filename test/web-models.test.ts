import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ModelMetadata, OutputSpec } from '../contract/metadata.ts';
import { interpret } from '../web-demo/src/browser/models.ts';

function metadata(task: ModelMetadata['task'], labels: string[], outputs: OutputSpec[]): ModelMetadata {
  return {
    schemaVersion: 1,
    task,
    labels,
    input: { height: 48, width: 48, channels: 1, scaling: 'unit' },
    preprocessingVersion: 1,
    outputs,
    metrics: null,
    source: { format: 'tfjs-layers', sha256: '0'.repeat(64) },
    exporter: { name: 'test', version: '0' },
    opset: 13,
  };
}

const tensor = (...values: number[]) => ({ data: Float32Array.from(values), dims: [1, values.length] });

describe('web demo: reading model outputs into the server’s answer shape', () => {
  it('turns a single sigmoid unit into [1 - p, p] and names the class from the metadata', () => {
    const gender = metadata('gender', ['male', 'female'], [{ name: 'output', kind: 'sigmoid', labels: ['male', 'female'] }]);
    assert.deepEqual(interpret(gender, { output: tensor(0.75) }), { label: 'female', index: 1, probabilities: [0.25, 0.75], classes: { male: 0.25, female: 0.75 }, uncertain: false });
    assert.deepEqual(interpret(gender, { output: tensor(0.25) }), { label: 'male', index: 0, probabilities: [0.75, 0.25], classes: { male: 0.75, female: 0.25 }, uncertain: false });
  });

  it('answers age with "group", the others with "label", labels in the metadata’s order', () => {
    const labels = ['young', 'middle', 'old'];
    const age = metadata('age', labels, [{ name: 'probs', kind: 'probabilities', labels }]);
    assert.deepEqual(interpret(age, { probs: tensor(0.125, 0.625, 0.25) }), { group: 'middle', index: 1, probabilities: [0.125, 0.625, 0.25], classes: { young: 0.125, middle: 0.625, old: 0.25 }, uncertain: false });
    const ethnicity = metadata('ethnicity', ['p', 'q'], [{ name: 'probs', kind: 'probabilities', labels: ['p', 'q'] }]);
    assert.deepEqual(Object.keys(interpret(ethnicity, { probs: tensor(0.5, 0.5) })), ['label', 'index', 'probabilities', 'classes', 'uncertain']);
  });

  it('adds "years" when the age model also predicts years', () => {
    const labels = ['1-40', '41+'];
    const age = metadata('age', labels, [
      { name: 'groups', kind: 'probabilities', labels },
      { name: 'years', kind: 'years' },
    ]);
    assert.deepEqual(interpret(age, { groups: tensor(0.25, 0.75), years: tensor(52.5) }), { group: '41+', index: 1, probabilities: [0.25, 0.75], classes: { '1-40': 0.25, '41+': 0.75 }, uncertain: false, years: 52.5 });
  });

  it('refuses an output row whose length does not match its labels', () => {
    const ethnicity = metadata('ethnicity', ['a', 'b', 'c'], [{ name: 'probs', kind: 'probabilities', labels: ['a', 'b', 'c'] }]);
    assert.throws(() => interpret(ethnicity, { probs: tensor(0.5, 0.5) }), /has 2 values per row; its metadata names 3 labels/);
  });
});
