import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ageGroupIndex, ageGroupLabels, classIndex, taskLabels } from '../contract/labels.ts';

describe('age groups', () => {
  it('uses the coursework final scheme 1-10, 11-20, 21-40, 41-60, 61-90, 91+', () => {
    assert.deepEqual(ageGroupLabels('coursework'), ['1-10', '11-20', '21-40', '41-60', '61-90', '91+']);
  });

  it('puts every boundary age in the right group', () => {
    const cases: [number, number][] = [[1, 0], [10, 0], [11, 1], [20, 1], [21, 2], [40, 2], [41, 3], [60, 3], [61, 4], [90, 4], [91, 5], [116, 5]];
    for (const [age, group] of cases) assert.equal(ageGroupIndex(age), group, `age ${age}`);
  });

  it('offers the first scheme, ten decades with 91+ last', () => {
    const labels = ageGroupLabels('decades');
    assert.equal(labels.length, 10);
    assert.equal(labels[0], '1-10');
    assert.equal(labels[9], '91+');
    const cases: [number, number][] = [[1, 0], [10, 0], [11, 1], [20, 1], [21, 2], [40, 3], [41, 4], [60, 5], [61, 6], [90, 8], [91, 9], [116, 9]];
    for (const [age, group] of cases) assert.equal(ageGroupIndex(age, 'decades'), group, `age ${age}`);
  });

  it('rejects ages outside 1-116 and fractional ages with a message naming the age', () => {
    for (const age of [0, 117, -3, 10.5, Number.NaN]) {
      assert.throws(() => ageGroupIndex(age), (error: Error) => error instanceof RangeError && error.message.includes(String(age)));
    }
  });
});

describe('task labels', () => {
  it('lists ethnicity and gender classes in their dataset code order', () => {
    assert.deepEqual(taskLabels('ethnicity'), ['White', 'Black', 'Asian', 'Indian', 'Others']);
    assert.deepEqual(taskLabels('gender'), ['male', 'female']);
  });

  it('maps a face to its class index for each task', () => {
    const face = { age: 35, gender: 1, ethnicity: 3 };
    assert.equal(classIndex(face, 'age'), 2);
    assert.equal(classIndex(face, 'age', 'decades'), 3);
    assert.equal(classIndex(face, 'ethnicity'), 3);
    assert.equal(classIndex(face, 'gender'), 1);
  });
});
