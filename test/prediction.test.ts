/**
 * A task's answer as every runtime gives it (contract/prediction.ts): the class named, each probability under its
 * class's name, and answers close to a guess marked uncertain.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { taskPrediction, UNCERTAIN_BELOW } from '../contract/prediction.ts';

const gender = { task: 'gender' as const, labels: ['male', 'female'], outputs: [{ name: 'p', kind: 'sigmoid' as const, labels: ['male', 'female'] }] };
const ethnicity = { task: 'ethnicity' as const, labels: ['White', 'Black', 'Asian', 'Indian', 'Others'], outputs: [{ name: 'p', kind: 'probabilities' as const, labels: ['White', 'Black', 'Asian', 'Indian', 'Others'] }] };

describe('task answers', () => {
  it('names each probability by its class, in the order of the probabilities array', () => {
    const answer = taskPrediction(ethnicity, { p: [0.1, 0.05, 0.7, 0.1, 0.05] });
    assert.deepEqual(Object.keys(answer.classes), ethnicity.labels);
    assert.deepEqual(Object.values(answer.classes), answer.probabilities);
    assert.equal(answer.label, 'Asian');
    assert.equal(answer.classes.Asian, 0.7);
  });

  it(`marks an answer uncertain when its top probability is under ${UNCERTAIN_BELOW}, and only then`, () => {
    const coinToss = taskPrediction(gender, { p: [0.45] });
    assert.equal(coinToss.label, 'male');
    assert.equal(coinToss.uncertain, true);
    assert.equal(taskPrediction(gender, { p: [1 - UNCERTAIN_BELOW] }).uncertain, false, 'exactly the threshold is not uncertain');
    assert.equal(taskPrediction(gender, { p: [0.92] }).uncertain, false);
    assert.equal(taskPrediction(ethnicity, { p: [0.3, 0.25, 0.2, 0.15, 0.1] }).uncertain, true, 'a spread-out answer over five classes');
  });
});
