/**
 * Evaluation numbers and their text tables: confusion matrix, sklearn-style classification report,
 * accuracy per demographic subgroup, mean absolute error. Pure: no I/O, no tensors.
 */
import { ageGroupLabels, ETHNICITY_LABELS, GENDER_LABELS, type AgeScheme } from '../../contract/labels.ts';

/** counts[true][predicted] */
export type ConfusionMatrix = number[][];

/** Counts of (true, predicted) class pairs; rows are the true class, columns the predicted class. */
export function confusionMatrix(trueIdx: ArrayLike<number>, predIdx: ArrayLike<number>, classes: number): ConfusionMatrix {
  if (!Number.isInteger(classes) || classes < 1) {
    throw new RangeError(`classes must be a whole number of at least 1; got ${classes}`);
  }
  if (trueIdx.length !== predIdx.length) {
    throw new RangeError(`trueIdx and predIdx must have the same length; got ${trueIdx.length} and ${predIdx.length}`);
  }
  const cm = Array.from({ length: classes }, () => new Array<number>(classes).fill(0));
  for (let i = 0; i < trueIdx.length; i++) {
    const t = trueIdx[i];
    const p = predIdx[i];
    checkClassIndex('trueIdx', i, t, classes);
    checkClassIndex('predIdx', i, p, classes);
    cm[t][p]++;
  }
  return cm;
}

function checkClassIndex(name: string, position: number, value: number, classes: number): void {
  if (!Number.isInteger(value) || value < 0 || value >= classes) {
    throw new RangeError(`${name}[${position}] is ${value}; expected a class index from 0 to ${classes - 1}`);
  }
}

function checkSquare(cm: ConfusionMatrix, labels: readonly string[]): void {
  if (cm.length !== labels.length || cm.some((row) => row.length !== labels.length)) {
    throw new RangeError(`The confusion matrix must be ${labels.length} x ${labels.length} to match the ${labels.length} labels`);
  }
}

export interface ClassScores {
  label: string;
  precision: number;
  recall: number;
  f1: number;
  /** faces whose true class is this one */
  support: number;
}

export interface AverageScores {
  precision: number;
  recall: number;
  f1: number;
  /** all faces */
  support: number;
}

export interface ClassificationReport {
  perClass: ClassScores[];
  accuracy: number;
  macroAvg: AverageScores;
  weightedAvg: AverageScores;
}

/** a / b, or 0 when b is 0: sklearn's zero_division=0 (its default "warn" also yields 0). */
function divide(a: number, b: number): number {
  return b === 0 ? 0 : a / b;
}

/**
 * The numbers of sklearn's `classification_report(y_true, y_pred, labels=range(n), target_names=labels,
 * output_dict=True)`: every class is reported, including classes that were never predicted (precision 0)
 * or never occur (recall 0). F1 is 2tp / (2tp + fp + fn), which is how sklearn >= 1.3 computes it.
 */
export function classificationReport(cm: ConfusionMatrix, labels: readonly string[]): ClassificationReport {
  checkSquare(cm, labels);
  const n = labels.length;
  const predicted = new Array<number>(n).fill(0);
  let total = 0;
  let correct = 0;
  for (let t = 0; t < n; t++) {
    for (let p = 0; p < n; p++) {
      predicted[p] += cm[t][p];
      total += cm[t][p];
    }
    correct += cm[t][t];
  }
  const perClass = labels.map((label, c): ClassScores => {
    const tp = cm[c][c];
    const support = cm[c].reduce((sum, count) => sum + count, 0);
    return {
      label,
      precision: divide(tp, predicted[c]),
      recall: divide(tp, support),
      f1: divide(2 * tp, support + predicted[c]),
      support,
    };
  });
  const mean = (key: 'precision' | 'recall' | 'f1'): number => divide(perClass.reduce((sum, s) => sum + s[key], 0), n);
  const weighted = (key: 'precision' | 'recall' | 'f1'): number =>
    divide(perClass.reduce((sum, s) => sum + s[key] * s.support, 0), total);
  return {
    perClass,
    accuracy: divide(correct, total),
    macroAvg: { precision: mean('precision'), recall: mean('recall'), f1: mean('f1'), support: total },
    weightedAvg: { precision: weighted('precision'), recall: weighted('recall'), f1: weighted('f1'), support: total },
  };
}

/**
 * Python's `format(x, '.{digits}f')`: the exact binary value rounded, ties to even. JavaScript's toFixed
 * rounds exact ties up (0.125 -> "0.13" where Python prints "0.12"), so ties are settled here.
 */
export function formatFixed(x: number, digits: number): string {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? 'nan' : x > 0 ? 'inf' : '-inf';
  // 25 more digits than asked show whether the exact value is a tie; a double that is not a tie
  // differs from one well within that many digits for the magnitudes printed here.
  const long = Math.abs(x).toFixed(Math.min(100, digits + 25));
  const point = long.indexOf('.');
  const cut = digits === 0 ? point : point + 1 + digits;
  const rest = long.slice(cut + (digits === 0 ? 1 : 0));
  if (/^50*$/.test(rest)) {
    const kept = long.slice(0, cut);
    const lastDigit = Number(kept[kept.length - 1]);
    if (lastDigit % 2 === 0) return (x < 0 ? '-' : '') + kept;
  }
  return x.toFixed(digits);
}

/**
 * sklearn's `classification_report` text, character for character (including its trailing newline):
 *
 *                   precision    recall  f1-score   support
 *
 *           White       0.80      0.90      0.85      2000
 *     ...
 *        accuracy                           0.80      5000
 *       macro avg       0.75      0.70      0.72      5000
 *    weighted avg       0.79      0.80      0.79      5000
 */
export function formatClassificationReport(report: ClassificationReport, digits = 2): string {
  const lastHeading = 'weighted avg';
  const width = Math.max(...report.perClass.map((s) => s.label.length), lastHeading.length, digits);
  const cell = (text: string): string => ` ${text.padStart(9)}`;
  const row = (name: string, p: string, r: string, f: string, support: number): string =>
    `${name.padStart(width)} ${cell(p)}${cell(r)}${cell(f)}${cell(String(support))}\n`;
  const num = (x: number): string => formatFixed(x, digits);
  let text = `${''.padStart(width)} ${cell('precision')}${cell('recall')}${cell('f1-score')}${cell('support')}\n\n`;
  for (const s of report.perClass) text += row(s.label, num(s.precision), num(s.recall), num(s.f1), s.support);
  text += '\n';
  text += row('accuracy', '', '', num(report.accuracy), report.macroAvg.support);
  for (const [name, avg] of [['macro avg', report.macroAvg], ['weighted avg', report.weightedAvg]] as const) {
    text += row(name, num(avg.precision), num(avg.recall), num(avg.f1), avg.support);
  }
  return text;
}

/**
 * The confusion matrix as an aligned table, true classes down the side, predicted classes across:
 *
 *     true \ predicted  male  female
 *                 male  2301     140
 *               female   187    2113
 */
export function formatConfusionMatrix(cm: ConfusionMatrix, labels: readonly string[]): string {
  checkSquare(cm, labels);
  const corner = 'true \\ predicted';
  const nameWidth = Math.max(corner.length, ...labels.map((l) => l.length));
  const columnWidths = labels.map((label, p) => Math.max(label.length, ...cm.map((row) => String(row[p]).length)));
  const line = (name: string, cells: readonly string[]): string =>
    [name.padStart(nameWidth), ...cells.map((c, p) => c.padStart(columnWidths[p]))].join('  ');
  return [line(corner, labels), ...cm.map((row, t) => line(labels[t], row.map(String)))].join('\n') + '\n';
}

/** One evaluated face: its true demographic attributes and whether the task's prediction was right. */
export interface SubgroupRow {
  /** true gender index */
  gender: number;
  /** true ethnicity index */
  ethnicity: number;
  /** true age group index */
  ageGroup: number;
  /** whether the model under evaluation got this face right */
  correct: boolean;
}

/** Names of the classes of each attribute, in index order (e.g. from contract/labels.ts). */
export interface SubgroupLabels {
  gender: readonly string[];
  ethnicity: readonly string[];
  ageGroup: readonly string[];
}

export interface GroupAccuracy {
  correct: number;
  count: number;
  /** correct / count; null when the group has no faces */
  accuracy: number | null;
}

export interface SubgroupAccuracy {
  labels: SubgroupLabels;
  overall: GroupAccuracy;
  /** indexed by gender */
  byGender: GroupAccuracy[];
  /** indexed by ethnicity */
  byEthnicity: GroupAccuracy[];
  /** indexed by age group */
  byAgeGroup: GroupAccuracy[];
  /** cells[gender][ethnicity][ageGroup] */
  cells: GroupAccuracy[][][];
}

function emptyGroup(): GroupAccuracy {
  return { correct: 0, count: 0, accuracy: null };
}

function addTo(group: GroupAccuracy, correct: number, count: number): void {
  group.correct += correct;
  group.count += count;
  group.accuracy = group.count === 0 ? null : group.correct / group.count;
}

/** The dataset's own attribute labels, with the age groups of a scheme. */
export function subgroupLabels(ageScheme: AgeScheme = 'coursework'): SubgroupLabels {
  return { gender: [...GENDER_LABELS], ethnicity: [...ETHNICITY_LABELS], ageGroup: ageGroupLabels(ageScheme) };
}

/**
 * Accuracy per gender x ethnicity x age group cell and per value of each attribute. `labels` names the
 * classes of each attribute; an age scheme stands for the dataset's labels with that scheme's age groups.
 */
export function subgroupAccuracy(rows: Iterable<SubgroupRow>, labels: SubgroupLabels | AgeScheme = 'coursework'): SubgroupAccuracy {
  if (typeof labels === 'string') return subgroupAccuracy(rows, subgroupLabels(labels));
  for (const key of ['gender', 'ethnicity', 'ageGroup'] as const) {
    if (labels[key].length === 0) throw new RangeError(`labels.${key} must name at least one class`);
  }
  const groups = (n: number): GroupAccuracy[] => Array.from({ length: n }, emptyGroup);
  const result: SubgroupAccuracy = {
    labels,
    overall: emptyGroup(),
    byGender: groups(labels.gender.length),
    byEthnicity: groups(labels.ethnicity.length),
    byAgeGroup: groups(labels.ageGroup.length),
    cells: labels.gender.map(() => labels.ethnicity.map(() => groups(labels.ageGroup.length))),
  };
  let position = 0;
  for (const row of rows) {
    for (const key of ['gender', 'ethnicity', 'ageGroup'] as const) {
      const value = row[key];
      if (!Number.isInteger(value) || value < 0 || value >= labels[key].length) {
        throw new RangeError(`rows[${position}].${key} is ${value}; expected an index from 0 to ${labels[key].length - 1}`);
      }
    }
    const correct = row.correct ? 1 : 0;
    addTo(result.overall, correct, 1);
    addTo(result.byGender[row.gender], correct, 1);
    addTo(result.byEthnicity[row.ethnicity], correct, 1);
    addTo(result.byAgeGroup[row.ageGroup], correct, 1);
    addTo(result.cells[row.gender][row.ethnicity][row.ageGroup], correct, 1);
    position++;
  }
  return result;
}

function sumGroups(groups: Iterable<GroupAccuracy>): GroupAccuracy {
  const total = emptyGroup();
  for (const g of groups) addTo(total, g.correct, g.count);
  return total;
}

/**
 * One table per gender and one for all genders together: ethnicity down the side, age group across,
 * each cell "accuracy (faces)", with "all ages" and "all" marginals. Empty cells show "-".
 */
export function formatSubgroupTable(result: SubgroupAccuracy, digits = 2): string {
  const { labels, cells } = result;
  const cellText = (g: GroupAccuracy): string => (g.accuracy === null ? '-' : `${formatFixed(g.accuracy, digits)} (${g.count})`);
  // table[ethnicity + 1 for "all"][ageGroup + 1 for "all ages"], for one gender or for all genders.
  const table = (genders: readonly number[]): GroupAccuracy[][] => {
    const rows = labels.ethnicity.map((_, e) => {
      const byAge = labels.ageGroup.map((_, a) => sumGroups(genders.map((g) => cells[g][e][a])));
      return [...byAge, sumGroups(byAge)];
    });
    const allRow = labels.ageGroup.map((_, a) => sumGroups(rows.map((r) => r[a])));
    return [...rows, [...allRow, sumGroups(allRow)]];
  };
  const allGenders = labels.gender.map((_, g) => g);
  const sections: { heading: string; groups: GroupAccuracy[][] }[] = [
    ...labels.gender.map((name, g) => ({ heading: `gender: ${name}`, groups: table([g]) })),
    { heading: 'all genders', groups: table(allGenders) },
  ];
  const rowNames = [...labels.ethnicity, 'all'];
  const columnNames = [...labels.ageGroup, 'all ages'];
  const texts = sections.map((s) => s.groups.map((row) => row.map(cellText)));
  // One set of column widths for every section, so the tables line up under each other.
  const nameWidth = Math.max('ethnicity \\ age'.length, ...rowNames.map((n) => n.length));
  const widths = columnNames.map((name, c) => Math.max(name.length, ...texts.flatMap((t) => t.map((row) => row[c].length))));
  const line = (name: string, values: readonly string[]): string =>
    [name.padEnd(nameWidth), ...values.map((v, c) => v.padStart(widths[c]))].join('  ').trimEnd();
  const out: string[] = [`accuracy by subgroup: ${cellText(result.overall)} overall; each cell is accuracy (faces)`];
  sections.forEach((section, i) => {
    const total = section.groups[section.groups.length - 1][columnNames.length - 1];
    out.push('', `${section.heading}: ${cellText(total)}`, line('ethnicity \\ age', columnNames));
    texts[i].forEach((row, r) => out.push(line(rowNames[r], row)));
  });
  return out.join('\n') + '\n';
}

/** Mean of |truth - predicted|, e.g. years of error of an age regression model. */
export function meanAbsoluteError(truth: ArrayLike<number>, predicted: ArrayLike<number>): number {
  if (truth.length !== predicted.length) {
    throw new RangeError(`truth and predicted must have the same length; got ${truth.length} and ${predicted.length}`);
  }
  if (truth.length === 0) throw new RangeError('meanAbsoluteError needs at least one value');
  let sum = 0;
  for (let i = 0; i < truth.length; i++) sum += Math.abs(truth[i] - predicted[i]);
  return sum / truth.length;
}

/** One equal-width bin of the probabilities a model gave its answers. */
export interface ConfidenceBin {
  /** the bin holds probabilities in [from, to) (the last bin includes 1) */
  from: number;
  to: number;
  count: number;
  /** mean probability of the answers in the bin; null when empty */
  confidence: number | null;
  /** share of those answers that were right; null when empty */
  accuracy: number | null;
}

/** The answers whose probability reaches `threshold`: how many are kept, and how many of those are right. */
export interface SelectiveRow {
  threshold: number;
  count: number;
  /** count / all answers */
  coverage: number;
  /** null when no answer reaches the threshold */
  accuracy: number | null;
}

/** How far a model's probabilities can be taken at their word. */
export interface Calibration {
  /** mean probability of the answers given */
  confidence: number;
  accuracy: number;
  /** expected calibration error: the gap |accuracy - mean probability| per bin, weighted by the bin's answers */
  ece: number;
  bins: ConfidenceBin[];
  selective: SelectiveRow[];
}

/** Thresholds a caller might keep answers above; those under 1 / classes keep everything. */
export const CONFIDENCE_THRESHOLDS = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95] as const;

/**
 * Calibration of `confidence[i]`, the probability the model gave the answer it chose for face i, against
 * whether that answer was right (`correct[i]`): the reliability bins, their expected calibration error (Guo et
 * al., 2017, equal-width bins), and the accuracy left when only answers above each threshold are kept.
 */
export function calibration(
  confidence: ArrayLike<number>,
  correct: ArrayLike<boolean>,
  { bins = 10, thresholds = CONFIDENCE_THRESHOLDS }: { bins?: number; thresholds?: readonly number[] } = {},
): Calibration {
  const n = confidence.length;
  if (correct.length !== n) throw new RangeError(`confidence and correct must have the same length; got ${n} and ${correct.length}`);
  if (n === 0) throw new RangeError('calibration needs at least one answer');
  if (!Number.isInteger(bins) || bins < 1) throw new RangeError(`bins must be a positive integer; got ${bins}`);
  const sums = new Float64Array(bins);
  const hits = new Int32Array(bins);
  const counts = new Int32Array(bins);
  let confidenceSum = 0;
  let hitSum = 0;
  for (let i = 0; i < n; i++) {
    const p = confidence[i];
    if (!(p >= 0 && p <= 1)) throw new RangeError(`confidence[${i}] is ${p}; expected a probability from 0 to 1`);
    const bin = Math.min(bins - 1, Math.floor(p * bins));
    sums[bin] += p;
    counts[bin]++;
    if (correct[i]) {
      hits[bin]++;
      hitSum++;
    }
    confidenceSum += p;
  }
  let ece = 0;
  const binRows: ConfidenceBin[] = Array.from({ length: bins }, (_, b) => {
    const count = counts[b];
    const row = { from: b / bins, to: (b + 1) / bins, count, confidence: count === 0 ? null : sums[b] / count, accuracy: count === 0 ? null : hits[b] / count };
    if (count > 0) ece += (count / n) * Math.abs((row.accuracy as number) - (row.confidence as number));
    return row;
  });
  const selective = thresholds.map((threshold) => {
    let count = 0;
    let right = 0;
    for (let i = 0; i < n; i++) {
      if (confidence[i] >= threshold) {
        count++;
        if (correct[i]) right++;
      }
    }
    return { threshold, count, coverage: count / n, accuracy: count === 0 ? null : right / count };
  });
  return { confidence: confidenceSum / n, accuracy: hitSum / n, ece, bins: binRows, selective };
}

/** The calibration as text: a line for the error, the reliability bins that hold answers, and the kept answers. */
export function formatCalibration(c: Calibration): string {
  const pct = (x: number | null): string => (x === null ? '-' : `${(x * 100).toFixed(1)}%`);
  const lean = c.confidence > c.accuracy ? 'overconfident' : 'underconfident';
  const lines = [
    `Calibration: expected calibration error ${(c.ece * 100).toFixed(2)} points over ${c.bins.length} bins; ` +
      `mean probability ${pct(c.confidence)} against accuracy ${pct(c.accuracy)} (${lean} by ${(Math.abs(c.confidence - c.accuracy) * 100).toFixed(1)} points)`,
    '  probability   answers   mean probability   accuracy',
    ...c.bins
      .filter((b) => b.count > 0)
      .map((b) => `  ${b.from.toFixed(1)}-${b.to.toFixed(1)}   ${String(b.count).padStart(9)}   ${pct(b.confidence).padStart(16)}   ${pct(b.accuracy).padStart(8)}`),
    'Keeping only the answers whose probability is at least:',
    ...c.selective.map((s) => `  ${s.threshold.toFixed(2)}: ${pct(s.coverage).padStart(6)} of the faces (${s.count}), ${pct(s.accuracy)} right`),
  ];
  return lines.join('\n');
}
