import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  calibration,
  classificationReport,
  confusionMatrix,
  formatCalibration,
  formatClassificationReport,
  formatConfusionMatrix,
  formatFixed,
  formatSubgroupTable,
  meanAbsoluteError,
  subgroupAccuracy,
  subgroupLabels,
  type ClassificationReport,
  type SubgroupRow,
} from '../training/report/metrics.ts';

const ATOL = 1e-12;

function assertClose(actual: number, expected: number, what: string): void {
  assert.ok(Math.abs(actual - expected) <= ATOL, `${what}: expected ${expected}, got ${actual}`);
}

// Three classes; B is never predicted, so its precision divides by zero.
//            pred A  B  C
const TRUE_A = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2];
const PRED_A = [0, 0, 0, 2, 0, 2, 0, 2, 2, 2];

describe('confusionMatrix', () => {
  test('counts (true, predicted) pairs with true classes as rows', () => {
    assert.deepEqual(confusionMatrix(TRUE_A, PRED_A, 3), [
      [3, 0, 1],
      [1, 0, 1],
      [1, 0, 3],
    ]);
  });

  test('accepts typed arrays and keeps classes that never occur', () => {
    assert.deepEqual(confusionMatrix(Uint8Array.from([1, 1]), Int32Array.from([1, 0]), 3), [
      [0, 0, 0],
      [1, 1, 0],
      [0, 0, 0],
    ]);
  });

  test('rejects an index outside the classes, naming the argument and position', () => {
    assert.throws(() => confusionMatrix([0, 3], [0, 1], 3), /trueIdx\[1\] is 3; expected a class index from 0 to 2/);
    assert.throws(() => confusionMatrix([0, 1], [0, 1.5], 3), /predIdx\[1\] is 1.5/);
  });

  test('rejects arrays of different lengths', () => {
    assert.throws(() => confusionMatrix([0, 1], [0], 2), /same length; got 2 and 1/);
  });
});

describe('classificationReport', () => {
  const cm = confusionMatrix(TRUE_A, PRED_A, 3);
  const report = classificationReport(cm, ['A', 'B', 'C']);

  test('per-class precision, recall, f1 and support follow sklearn, with 0 for a zero division', () => {
    const expected = [
      // A: tp 3, predicted 5, support 4 -> p 3/5, r 3/4, f1 2*3 / (4 + 5)
      { label: 'A', precision: 0.6, recall: 0.75, f1: 6 / 9, support: 4 },
      // B: never predicted -> precision 0/0 = 0; tp 0 -> recall 0, f1 0
      { label: 'B', precision: 0, recall: 0, f1: 0, support: 2 },
      { label: 'C', precision: 0.6, recall: 0.75, f1: 6 / 9, support: 4 },
    ];
    report.perClass.forEach((s, i) => {
      assert.equal(s.label, expected[i].label);
      assert.equal(s.support, expected[i].support);
      for (const key of ['precision', 'recall', 'f1'] as const) assertClose(s[key], expected[i][key], `${s.label} ${key}`);
    });
  });

  test('accuracy, macro and support-weighted averages', () => {
    assertClose(report.accuracy, 0.6, 'accuracy');
    // macro: plain means over the three classes, the zero-division class included
    assertClose(report.macroAvg.precision, 0.4, 'macro precision');
    assertClose(report.macroAvg.recall, 0.5, 'macro recall');
    assertClose(report.macroAvg.f1, 4 / 9, 'macro f1');
    // weighted by support 4, 2, 4
    assertClose(report.weightedAvg.precision, 0.48, 'weighted precision');
    assertClose(report.weightedAvg.recall, 0.6, 'weighted recall');
    assertClose(report.weightedAvg.f1, 16 / 30, 'weighted f1');
    assert.equal(report.macroAvg.support, 10);
    assert.equal(report.weightedAvg.support, 10);
  });

  test('a predicted class with no true faces gets recall 0 and weight 0', () => {
    // true x x y y, predicted x z y y: z occurs only as a (wrong) prediction
    const r = classificationReport(confusionMatrix([0, 0, 1, 1], [0, 2, 1, 1], 3), ['x', 'y', 'z']);
    const z = r.perClass[2];
    assert.deepEqual([z.precision, z.recall, z.f1, z.support], [0, 0, 0, 0]);
    assertClose(r.perClass[0].f1, 2 / 3, 'x f1');
    assertClose(r.accuracy, 0.75, 'accuracy');
    assertClose(r.macroAvg.precision, 2 / 3, 'macro precision');
    assertClose(r.macroAvg.f1, 5 / 9, 'macro f1');
    assertClose(r.weightedAvg.precision, 1, 'weighted precision');
    assertClose(r.weightedAvg.f1, 10 / 12, 'weighted f1');
  });

  test('an empty matrix reports zeros instead of NaN', () => {
    const r = classificationReport([[0, 0], [0, 0]], ['a', 'b']);
    assert.equal(r.accuracy, 0);
    assert.deepEqual(r.weightedAvg, { precision: 0, recall: 0, f1: 0, support: 0 });
  });

  test('rejects a matrix whose size does not match the labels', () => {
    assert.throws(() => classificationReport([[1, 0], [0, 1]], ['a', 'b', 'c']), /must be 3 x 3/);
  });
});

describe('formatClassificationReport', () => {
  test("prints sklearn's classification_report text character for character", () => {
    const text = formatClassificationReport(classificationReport(confusionMatrix(TRUE_A, PRED_A, 3), ['A', 'B', 'C']));
    // Produced by sklearn's own format strings on the same numbers.
    const sklearn =
      '              precision    recall  f1-score   support\n\n' +
      '           A       0.60      0.75      0.67         4\n' +
      '           B       0.00      0.00      0.00         2\n' +
      '           C       0.60      0.75      0.67         4\n\n' +
      '    accuracy                           0.60        10\n' +
      '   macro avg       0.40      0.50      0.44        10\n' +
      'weighted avg       0.48      0.60      0.53        10\n';
    assert.equal(text, sklearn);
  });

  test('widens the name column for long labels and rounds exact ties to even like Python', () => {
    const report: ClassificationReport = {
      perClass: [
        { label: 'a-very-long-class-name', precision: 0.125, recall: 0.375, f1: 0.5, support: 3 },
        { label: 'x', precision: 0.625, recall: 0.875, f1: 1, support: 1 },
      ],
      accuracy: 0.5,
      macroAvg: { precision: 0.5, recall: 0.5, f1: 0.5, support: 4 },
      weightedAvg: { precision: 0.5, recall: 0.5, f1: 0.5, support: 4 },
    };
    const sklearn =
      '                        precision    recall  f1-score   support\n\n' +
      'a-very-long-class-name       0.12      0.38      0.50         3\n' +
      '                     x       0.62      0.88      1.00         1\n\n' +
      '              accuracy                           0.50         4\n' +
      '             macro avg       0.50      0.50      0.50         4\n' +
      '          weighted avg       0.50      0.50      0.50         4\n';
    assert.equal(formatClassificationReport(report), sklearn);
  });

  test('formatFixed matches Python format() on ties and non-ties', () => {
    // Python: '%.2f' % 0.125 == '0.12', 0.135 is stored just above the tie -> '0.14', 2.5 -> '2'
    assert.equal(formatFixed(0.125, 2), '0.12');
    assert.equal(formatFixed(0.375, 2), '0.38');
    assert.equal(formatFixed(0.135, 2), '0.14');
    assert.equal(formatFixed(0.145, 2), '0.14');
    assert.equal(formatFixed(2.5, 0), '2');
    assert.equal(formatFixed(3.5, 0), '4');
    assert.equal(formatFixed(2 / 3, 4), '0.6667');
  });
});

describe('formatConfusionMatrix', () => {
  test('aligns counts under their predicted-class names', () => {
    const text = formatConfusionMatrix(
      [
        [2301, 140],
        [187, 2113],
      ],
      ['male', 'female'],
    );
    assert.equal(
      text,
      'true \\ predicted  male  female\n' + //
        '            male  2301     140\n' +
        '          female   187    2113\n',
    );
  });
});

describe('subgroupAccuracy', () => {
  const labels = { gender: ['male', 'female'], ethnicity: ['White', 'Black'], ageGroup: ['young', 'old'] };
  const rows: SubgroupRow[] = [
    { gender: 0, ethnicity: 0, ageGroup: 0, correct: true },
    { gender: 0, ethnicity: 0, ageGroup: 0, correct: false },
    { gender: 0, ethnicity: 1, ageGroup: 1, correct: true },
    { gender: 1, ethnicity: 0, ageGroup: 1, correct: false },
    { gender: 1, ethnicity: 1, ageGroup: 1, correct: true },
    { gender: 1, ethnicity: 1, ageGroup: 1, correct: true },
  ];
  const result = subgroupAccuracy(rows, labels);

  test('counts each gender x ethnicity x age group cell, with null accuracy for empty cells', () => {
    assert.deepEqual(result.cells[0][0][0], { correct: 1, count: 2, accuracy: 0.5 });
    assert.deepEqual(result.cells[1][1][1], { correct: 2, count: 2, accuracy: 1 });
    assert.deepEqual(result.cells[1][0][0], { correct: 0, count: 0, accuracy: null });
  });

  test('marginals per gender, ethnicity and age group add up to the overall accuracy', () => {
    assert.deepEqual(result.overall, { correct: 4, count: 6, accuracy: 4 / 6 });
    assert.deepEqual(result.byGender, [
      { correct: 2, count: 3, accuracy: 2 / 3 },
      { correct: 2, count: 3, accuracy: 2 / 3 },
    ]);
    assert.deepEqual(result.byEthnicity, [
      { correct: 1, count: 3, accuracy: 1 / 3 },
      { correct: 3, count: 3, accuracy: 1 },
    ]);
    assert.deepEqual(result.byAgeGroup, [
      { correct: 1, count: 2, accuracy: 0.5 },
      { correct: 3, count: 4, accuracy: 0.75 },
    ]);
  });

  test("an age scheme stands for the dataset's labels with that scheme's age groups", () => {
    const byScheme = subgroupAccuracy([{ gender: 1, ethnicity: 4, ageGroup: 9, correct: true }], 'decades');
    assert.deepEqual(byScheme.labels, subgroupLabels('decades'));
    assert.equal(byScheme.labels.ethnicity[4], 'Others');
    assert.equal(byScheme.labels.ageGroup[9], '91+');
    assert.equal(byScheme.cells[1][4][9].count, 1);
    // the coursework scheme has six age groups, so index 9 does not exist there
    assert.throws(() => subgroupAccuracy([{ gender: 1, ethnicity: 4, ageGroup: 9, correct: true }]), /rows\[0\]\.ageGroup is 9; expected an index from 0 to 5/);
  });

  test('rejects a row whose attribute has no label, naming the row and field', () => {
    assert.throws(() => subgroupAccuracy([{ gender: 0, ethnicity: 2, ageGroup: 0, correct: true }], labels), /rows\[0\]\.ethnicity is 2/);
  });

  test('formats one aligned table per gender plus all genders, with marginals', () => {
    const text = formatSubgroupTable(result);
    assert.equal(
      text,
      [
        'accuracy by subgroup: 0.67 (6) overall; each cell is accuracy (faces)',
        '',
        'gender: male: 0.67 (3)',
        'ethnicity \\ age     young       old  all ages',
        'White            0.50 (2)         -  0.50 (2)',
        'Black                   -  1.00 (1)  1.00 (1)',
        'all              0.50 (2)  1.00 (1)  0.67 (3)',
        '',
        'gender: female: 0.67 (3)',
        'ethnicity \\ age     young       old  all ages',
        'White                   -  0.00 (1)  0.00 (1)',
        'Black                   -  1.00 (2)  1.00 (2)',
        'all                     -  0.67 (3)  0.67 (3)',
        '',
        'all genders: 0.67 (6)',
        'ethnicity \\ age     young       old  all ages',
        'White            0.50 (2)  0.00 (1)  0.33 (3)',
        'Black                   -  1.00 (3)  1.00 (3)',
        'all              0.50 (2)  0.75 (4)  0.67 (6)',
        '',
      ].join('\n'),
    );
  });
});

describe('meanAbsoluteError', () => {
  test('averages absolute differences', () => {
    assertClose(meanAbsoluteError([10, 20, 30], Float32Array.from([12, 17, 30])), 5 / 3, 'mae');
  });

  test('rejects empty or mismatched inputs', () => {
    assert.throws(() => meanAbsoluteError([], []), /at least one value/);
    assert.throws(() => meanAbsoluteError([1, 2], [1]), /same length; got 2 and 1/);
  });
});

describe('calibration', () => {
  // Five answers: 0.95 (right), 0.85 (right), 0.81 (wrong), 0.55 (right), 1.0 (right); worked by hand below.
  const confidence = [0.95, 0.85, 0.81, 0.55, 1.0];
  const correct = [true, true, false, true, true];

  test('bins answers by probability, with 1 in the last bin, and weighs each bin gap by its answers', () => {
    const c = calibration(confidence, correct, { bins: 10, thresholds: [0.5, 0.9, 0.99] });
    assertClose(c.confidence, (0.95 + 0.85 + 0.81 + 0.55 + 1.0) / 5, 'mean probability');
    assertClose(c.accuracy, 4 / 5, 'accuracy');
    const filled = c.bins.filter((b) => b.count > 0);
    assert.deepEqual(filled.map((b) => [b.from, b.count, b.accuracy]), [[0.5, 1, 1], [0.8, 2, 0.5], [0.9, 2, 1]]);
    assertClose(filled[1].confidence as number, 0.83, 'the 0.8-0.9 bin');
    assert.equal(c.bins[0].confidence, null);
    // |1 - 0.55| * 1/5 + |0.5 - 0.83| * 2/5 + |1 - 0.975| * 2/5
    assertClose(c.ece, 0.45 / 5 + (0.33 * 2) / 5 + (0.025 * 2) / 5, 'expected calibration error');
    assert.deepEqual(
      c.selective.map((r) => [r.threshold, r.count, r.coverage, r.accuracy]),
      [[0.5, 5, 1, 0.8], [0.9, 2, 0.4, 1], [0.99, 1, 0.2, 1]],
    );
  });

  test('a model whose probabilities are right on average in every bin has an error of zero', () => {
    const c = calibration([0.75, 0.75, 0.75, 0.75, 0.5, 0.5], [true, true, true, false, true, false]);
    assertClose(c.ece, 0, 'expected calibration error');
    assert.equal(c.selective.find((r) => r.threshold === 0.95)?.accuracy, null, 'no answer reaches 0.95');
  });

  test('refuses mismatched lengths, no answers and values that are not probabilities', () => {
    assert.throws(() => calibration([0.5], [true, false]), /same length; got 1 and 2/);
    assert.throws(() => calibration([], []), /at least one answer/);
    assert.throws(() => calibration([1.2], [true]), /confidence\[0\] is 1.2; expected a probability/);
    assert.throws(() => calibration([Number.NaN], [true]), /confidence\[0\] is NaN/);
  });

  test('formats the error, the lean, the filled bins and the kept answers', () => {
    const text = formatCalibration(calibration(confidence, correct, { thresholds: [0.9] }));
    assert.match(text, /^Calibration: expected calibration error 23\.20 points over 10 bins; mean probability 83\.2% against accuracy 80\.0% \(overconfident by 3\.2 points\)/);
    assert.equal(text.split('\n').filter((l) => /^  0\.\d-/.test(l)).length, 3, 'one line per bin that holds answers');
    assert.match(text, /  0\.90:  40\.0% of the faces \(2\), 100\.0% right$/);
  });
});
