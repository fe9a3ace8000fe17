/**
 * npm run model-card -- [--models DIR] [--data PATH] [--out FILE]
 *
 * Writes models/MODEL_CARD.md from a measurement, not from memory: each shipped ONNX model is evaluated in
 * onnxruntime-node on the test split recorded in its own metadata, and the card's tables are those figures.
 */
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ETHNICITY_LABELS, GENDER_LABELS, type Task } from '../../contract/labels.ts';
import { readModelMetadata, type ModelMetadata } from '../../contract/metadata.ts';
import { loadDataset, missingDataMessage } from '../data/load.ts';
import { trainTestSplit } from '../data/split.ts';
import { evaluate, onnxPredictor, type Evaluation } from '../evaluate.ts';
import { defaultDataSource, REPO_ROOT } from '../../node-shared/paths.ts';
import type { TemperatureFit } from '../calibrate.ts';
import type { Calibration } from '../report/metrics.ts';
import type { TestSplitInfo } from '../train-task.ts';
import { isMain, prepareOutputFile, runCli, UsageError } from '../../node-shared/cli-args.ts';

const USAGE = `Usage: npm run model-card -- [--models DIR] [--data PATH] [--out FILE]

  --models DIR   the exported models                              (default: models)
  --data PATH    the UTKFace folder they were trained on           (default: ../shared/data/utkface)
  --out FILE     where the card is written                         (default: <models>/MODEL_CARD.md)

Each model is measured on the test split recorded in its metadata, so --data must be the data it was trained
on. At least one model must have been trained on the full data (no --limit): the card describes the data from
it; models trained on a --limit subset alone are refused.`;

interface Measured {
  file: string;
  metadata: ModelMetadata;
  evaluation: Evaluation;
  bytes: number;
}

const pct = (x: number | null) => (x === null ? '-' : `${(x * 100).toFixed(1)}%`);

function table(header: string[], rows: (string | number)[][]): string {
  return [`| ${header.join(' | ')} |`, `|${header.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

function modelSection(m: Measured): string {
  const { metadata, evaluation: e } = m;
  const training = metadata.metrics as { epochs?: number; keptEpoch?: number; trainSeconds?: number; split?: TestSplitInfo; calibration?: TemperatureFit } | null;
  const trained =
    training?.epochs === undefined
      ? ''
      : ` Trained for ${training.epochs} epochs` +
        (training.keptEpoch === undefined
          ? ''
          : `; the weights kept are epoch ${training.keptEpoch}'s, the best on a validation split carved from the training faces` +
            (metadata.source.preset === 'multitask' ? ' by the mean accuracy of the three tasks (one epoch for all three, so their trunks are the same)' : '')) +
        (training.split === undefined ? '' : `; tested on a seeded ${Math.round(training.split.testFraction * 100)}% split that no training choice saw`) +
        '.';
  const lines = [
    `### ${metadata.task} (\`${m.file}\`)`,
    '',
    `Preset \`${metadata.source.preset ?? 'unknown'}\`, input ${metadata.input.height}x${metadata.input.width}x${metadata.input.channels}; ` +
      `test accuracy **${pct(e.accuracy)}** on ${e.count.toLocaleString('en-US')} test faces` +
      (e.years === undefined ? '.' : `; age mean absolute error **${e.years.mae.toFixed(2)} years**.`) +
      trained,
    '',
    table(
      ['class', 'precision', 'recall', 'F1', 'test faces'],
      e.report.perClass.map((c) => [c.label, c.precision.toFixed(3), c.recall.toFixed(3), c.f1.toFixed(3), c.support]),
    ),
    '',
    'Accuracy by subgroup of the test split:',
    '',
    table(
      ['subgroup', 'accuracy', 'faces'],
      [
        ...e.subgroups.byGender.map((g, i) => [`gender: ${e.subgroups.labels.gender[i]}`, pct(g.accuracy), g.count]),
        ...e.subgroups.byEthnicity.map((g, i) => [`ethnicity: ${e.subgroups.labels.ethnicity[i]}`, pct(g.accuracy), g.count]),
        ...e.subgroups.byAgeGroup.map((g, i) => [`age: ${e.subgroups.labels.ageGroup[i]}`, pct(g.accuracy), g.count]),
      ],
    ),
  ];
  lines.push(...calibrationLines(e.calibration, training?.calibration));
  if (metadata.task === 'ethnicity') {
    lines.push('', 'Confusion matrix (rows: true, columns: predicted):', '', table(['true \\ predicted', ...e.labels], e.confusionMatrix.map((row, i) => [e.labels[i], ...row])));
  }
  if (e.years !== undefined) {
    lines.push('', 'Age error in years by true age group:', '', table(['age group', 'MAE (years)', 'faces'], e.years.byAgeGroup.map((g) => [g.label, g.mae === null ? '-' : g.mae.toFixed(2), g.count])));
  }
  return lines.join('\n');
}

/** How far a model's probabilities can be taken at their word, and the accuracy of its confident answers. */
function calibrationLines(c: Calibration | undefined, fit: TemperatureFit | undefined): string[] {
  if (c === undefined) return [];
  const rescaled =
    fit === undefined
      ? ''
      : `Its probabilities are rescaled by a temperature of ${fit.temperature} fitted on the ${fit.faces.toLocaleString('en-US')} validation faces ` +
        `(temperature scaling: the class it picks never changes), which took their calibration error from ${(fit.eceBefore * 100).toFixed(1)} to ${(fit.eceAfter * 100).toFixed(1)} points. `;
  return [
    '',
    rescaled +
      `On the test split, the answers' mean probability is ${pct(c.confidence)} and ${pct(c.accuracy)} of them are right ` +
      `(expected calibration error ${(c.ece * 100).toFixed(1)} points over ${c.bins.length} bins). A caller that keeps only confident answers gets:`,
    '',
    table(
      ['probability of the answer at least', 'faces kept', 'accuracy of those'],
      c.selective.map((row) => [row.threshold.toFixed(2), `${pct(row.coverage)} (${row.count.toLocaleString('en-US')})`, pct(row.accuracy)]),
    ),
  ];
}

/** The subgroups where a model is weakest: the honest list of known failure modes. */
function weakest(m: Measured, count = 3): string {
  const s = m.evaluation.subgroups;
  const groups = [
    ...s.byEthnicity.map((g, i) => ({ name: `${s.labels.ethnicity[i]} faces`, ...g })),
    ...s.byAgeGroup.map((g, i) => ({ name: `ages ${s.labels.ageGroup[i]}`, ...g })),
    ...s.byGender.map((g, i) => ({ name: `${s.labels.gender[i]} faces`, ...g })),
  ].filter((g) => g.accuracy !== null && g.count >= 20);
  groups.sort((a, b) => (a.accuracy ?? 0) - (b.accuracy ?? 0));
  return groups.slice(0, count).map((g) => `${g.name} ${pct(g.accuracy)} (${g.count})`).join(', ');
}

/** What the networks are, from the presets recorded in their metadata. */
function describeNetworks(measured: Measured[]): string {
  const presets = new Set(measured.map((m) => m.metadata.source.preset));
  if (presets.size === 1 && presets.has('multitask')) {
    return (
      'Three files, one network: a small residual CNN trained once for the three tasks, with a shared trunk\nand one head per task; each file holds the trunk and one head. ' +
      'Each answers with the mean of its answers for the face\nand for its mirror image (test-time flip: the same weights run twice).'
    );
  }
  return 'Three small convolutional networks, one per task.';
}

/** The age model's error where it is worst, from the measurement, for the failure modes. */
function ageErrorNote(age: Measured | undefined): string {
  const years = age?.evaluation.years;
  if (years === undefined) return '';
  const measured = years.byAgeGroup.flatMap((g) => (g.mae === null ? [] : [{ ...g, mae: g.mae }]));
  const worst = measured.filter((g) => g.count >= 20).sort((a, b) => b.mae - a.mae).slice(0, 2);
  const few = measured.filter((g) => g.count < 20);
  const describe = (g: { label: string; mae: number; count: number }) => `ages ${g.label} (${g.mae.toFixed(1)} years over ${g.count} faces)`;
  return (
    `The age model's error in years is largest for ${worst.map(describe).join(' and ')}, against ${years.mae.toFixed(1)} overall` +
    (few.length === 0 ? '' : `; it is worse still for ${few.map(describe).join(' and ')}, too few faces to measure well`) +
    '.\n'
  );
}

export function renderCard(measured: Measured[], dataset: { count: number; genders: number[]; ethnicities: number[] }, command: string): string {
  const byTask = (task: Task) => measured.find((m) => m.metadata.task === task);
  const overall = table(
    ['model', 'preset', 'input', 'test accuracy', 'age MAE', 'calibration error', 'test faces', 'size'],
    measured.map((m) => [
      m.metadata.task,
      m.metadata.source.preset ?? '-',
      `${m.metadata.input.height}x${m.metadata.input.width}x${m.metadata.input.channels}`,
      pct(m.evaluation.accuracy),
      m.evaluation.years === undefined ? '-' : `${m.evaluation.years.mae.toFixed(2)} years`,
      m.evaluation.calibration === undefined ? '-' : `${(m.evaluation.calibration.ece * 100).toFixed(1)} points`,
      m.evaluation.count,
      `${(m.bytes / 1024).toFixed(0)} KiB`,
    ]),
  );
  const rescaled = measured.filter((m) => (m.metadata.metrics as { calibration?: TemperatureFit } | null)?.calibration !== undefined).map((m) => m.metadata.task);
  const gender = byTask('gender');
  const genderByEthnicity = gender === undefined ? '' : table(['ethnicity', 'gender accuracy', 'faces'], gender.evaluation.subgroups.byEthnicity.map((g, i) => [ETHNICITY_LABELS[i], pct(g.accuracy), g.count]));
  const counts = (values: number[], labels: readonly string[]) => labels.map((l, i) => `${l} ${values[i].toLocaleString('en-US')} (${((100 * values[i]) / dataset.count).toFixed(1)}%)`).join(', ');
  return `# Model card: age, ethnicity and gender from a face

Generated by \`${command}\` from a measurement of the ONNX files in this folder (onnxruntime-node, CPU), each on
the test split recorded in its own metadata. Do not edit by hand; run the command again.

## What the models do

${describeNetworks(measured)} They take one face photo, already cropped so the face fills the image (as in
UTKFace; the server and the demo centre-crop and resize any photo to the models' input), and give
probabilities for an age group (1-10, 11-20, 21-40, 41-60, 61-90, 91+), an ethnicity (White, Black, Asian,
Indian, Others, as UTKFace labels them) and a gender (male, female, as UTKFace labels them). An age model that
also predicts years gives them as \`age.years\`.${
    rescaled.length === 0
      ? ''
      : `
The ${rescaled.join(' and ')} probabilities are rescaled by a temperature fitted on the validation split, so that they
can be read as the chance of being right (each model's section measures how well).`
  }

## Data

UTKFace, aligned and cropped faces: ${dataset.count.toLocaleString('en-US')} labelled images, labels from the file names as the
dataset's authors assigned them (they are not self-reported, and the categories are the dataset's, not a
description of anyone's identity). The set is imbalanced:

- gender: ${counts(dataset.genders, GENDER_LABELS)};
- ethnicity: ${counts(dataset.ethnicities, ETHNICITY_LABELS)};
- ages cluster at 20-40 and at 1-4; few faces are over 80.

UTKFace is available for **non-commercial research purposes only**; the models inherit that restriction.

## Intended use, and what they must not be used for

- Intended: research and teaching about face-attribute models, their accuracy and their biases; demos that
  run on a person's own photo with their consent.
- **Out of scope**: any decision about a person (hiring, lending, policing, border control, access to services,
  advertising targeting), identifying people, surveillance, or inferring anyone's ethnicity or gender without
  their knowledge. Ethnicity and gender inferred from appearance are often wrong and are sensitive personal
  data; a person's own statement always overrides a prediction.
- Not validated on photos unlike UTKFace (profile views, occlusions, low light, heavy make-up, children's
  photos from other sources).

## Metrics

${overall}

The calibration error is the gap between the probability of each answer and how often such answers are right,
averaged over 10 bins of probability (expected calibration error; 0 would be perfect).

Gender accuracy per ethnicity:

${genderByEthnicity}

${measured.map(modelSection).join('\n\n')}

## Known failure modes

Measured above, the weakest subgroups (at least 20 test faces):

${measured.map((m) => `- ${m.metadata.task}: ${weakest(m)}`).join('\n')}

${ageErrorNote(byTask('age'))}Young children and the elderly are hard for every task: few training faces, and faces that change fast with
age. Ethnicity "Others" is a catch-all class with few faces and no visual definition.

## How to reproduce every number

\`\`\`sh
npm run train -- --task all --preset <preset>   # see each model's preset above; multitask runs also fit the temperatures
                                                # (a run trained before they did: npm run calibrate -- --run DIR)
npm run export -- --all --force                  # replaces the files in models/ (refused without --force)
${command}
npm run evaluate -- --model models              # the same figures, printed in full
\`\`\`
`;
}

if (isMain(import.meta.url)) runCli(USAGE, async (argv) => {
  const { values } = parseArgs({ args: argv, strict: true, options: { models: { type: 'string' }, data: { type: 'string' }, out: { type: 'string' }, help: { type: 'boolean', short: 'h', default: false } } });
  if (values.help) throw new UsageError('');
  const modelsDir = resolve(values.models ?? join(REPO_ROOT, 'models'));
  const data = values.data ?? defaultDataSource();
  if (data === undefined) throw new UsageError(missingDataMessage(false));
  const modelsInfo = await stat(modelsDir).catch(() => undefined);
  if (modelsInfo === undefined) throw new UsageError(`--models "${modelsDir}" does not exist`);
  if (!modelsInfo.isDirectory()) throw new UsageError(`--models "${modelsDir}" is not a folder; expected a folder of exported .onnx models`);
  const files = (await readdir(modelsDir)).filter((f) => f.endsWith('.onnx')).sort();
  if (files.length === 0) throw new UsageError(`no .onnx models in "${modelsDir}"; export them first (npm run export -- --all --out-dir DIR)`);
  const out = resolve(values.out ?? join(modelsDir, 'MODEL_CARD.md'));
  // The card is written at the end; a wrong --out should not cost the whole measurement.
  await prepareOutputFile('--out', out);

  // Every file's metadata first, so that a model the card cannot use is refused before any measuring.
  const models: { file: string; bytes: Uint8Array; split: TestSplitInfo }[] = [];
  for (const file of files) {
    const path = join(modelsDir, file);
    const bytes = new Uint8Array(await readFile(path));
    let metadata: ModelMetadata;
    try {
      metadata = readModelMetadata(bytes);
    } catch (error) {
      throw new Error(`${path}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
    }
    const split = (metadata.metrics as { split?: TestSplitInfo } | null)?.split;
    if (split === undefined) throw new Error(`${path} records no test split in its metadata; re-export it from a training run`);
    models.push({ file, bytes, split });
  }
  if (models.every((m) => m.split.limit !== null)) {
    throw new Error('every model was trained on a --limit subset; the card describes models trained on the full data');
  }

  const measured: Measured[] = [];
  let full: { count: number; genders: number[]; ethnicities: number[] } | undefined;
  // Every model loads the same data: its skipped entries are reported once, not once per model.
  const logged = new Set<string>();
  const log = (line: string) => {
    if (logged.has(line)) return;
    logged.add(line);
    process.stderr.write(`${line}\n`);
  };
  for (const { file, bytes, split } of models) {
    const { predict, metadata, release } = await onnxPredictor(bytes, { file: join(modelsDir, file) });
    const dataset = await loadDataset(resolve(data), metadata.input, { limit: split.limit ?? undefined, seed: split.seed, progress: false, log });
    if (dataset.count !== split.datasetCount) throw new Error(`${file} was tested on ${split.datasetCount} faces; this data has ${dataset.count}`);
    const test = trainTestSplit(dataset.count, split.testFraction, split.seed).test;
    const evaluation = await evaluate(predict, dataset, test, metadata.task, metadata.labels, metadata.ageScheme ?? 'coursework');
    await release();
    measured.push({ file, metadata, evaluation, bytes: bytes.length });
    if (full === undefined && split.limit === null) {
      const genders = [0, 0];
      const ethnicities = [0, 0, 0, 0, 0];
      for (let i = 0; i < dataset.count; i++) {
        genders[dataset.genders[i]]++;
        ethnicities[dataset.ethnicities[i]]++;
      }
      full = { count: dataset.count, genders, ethnicities };
    }
  }
  if (full === undefined) throw new Error('every model was trained on a --limit subset; the card describes models trained on the full data');
  const command = `npm run model-card${values.models === undefined ? '' : ` -- --models ${relative(REPO_ROOT, modelsDir)}`}`;
  await writeFile(out, renderCard(measured, full, command));
  console.log(`wrote ${relative(process.cwd(), out)}: ${measured.map((m) => `${m.metadata.task} ${pct(m.evaluation.accuracy)}`).join(', ')}`);
});
