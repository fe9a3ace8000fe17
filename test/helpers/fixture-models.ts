/**
 * Small models with random weights, exported through the project's exporter into a folder laid out as
 * `models/` is (three .onnx files with their metadata, and manifest.json), for the tests. tfjs is imported here,
 * never by the server.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { exportModel, writeExportedModel } from '../../export/export-model.ts';
import { modelSha256 } from '../../export/tfjs-model.ts';
import { ageGroupLabels, ETHNICITY_LABELS, GENDER_LABELS, type Task } from '../../contract/labels.ts';
import { validateModelManifest, type ModelManifest, type OutputSpec } from '../../contract/metadata.ts';
import { SEED_INPUT, type InputSpec } from '../../contract/preprocess.ts';

export interface FixtureOptions {
  /** Class labels per task (default: the project's label schemes). */
  labels?: Partial<Record<Task, string[]>>;
  /** Input spec per task (default: 48x48 grayscale, as the seed models). */
  inputs?: Partial<Record<Task, InputSpec>>;
  /** Give the age model a second output, an age in years. */
  ageYears?: boolean;
  /** Weight seed, so that a fixture is the same every time. */
  seed?: number;
}

function buildModel(task: Task, input: InputSpec, classes: number, years: boolean, seed: number): tf.LayersModel {
  const init = (offset: number) => tf.initializers.glorotUniform({ seed: seed + offset });
  const image = tf.input({ shape: [input.height, input.width, input.channels], name: `${task}_image` });
  let x = tf.layers.conv2d({ filters: 2, kernelSize: 3, padding: 'same', activation: 'relu', kernelInitializer: init(1) }).apply(image) as tf.SymbolicTensor;
  x = tf.layers.maxPooling2d({ poolSize: 2 }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.flatten().apply(x) as tf.SymbolicTensor;
  const head = classes === 2 && task === 'gender' ? tf.layers.dense({ units: 1, activation: 'sigmoid', kernelInitializer: init(2) }) : tf.layers.dense({ units: classes, activation: 'softmax', kernelInitializer: init(2) });
  const outputs = [head.apply(x) as tf.SymbolicTensor];
  if (years) outputs.push(tf.layers.dense({ units: 1, activation: 'relu', kernelInitializer: init(3) }).apply(x) as tf.SymbolicTensor);
  return tf.model({ inputs: image, outputs, name: `fixture_${task}` });
}

/** Writes age.onnx, ethnicity.onnx, gender.onnx and manifest.json into `dir` through the exporter; returns the manifest. */
export async function writeFixtureModels(dir: string, options: FixtureOptions = {}): Promise<ModelManifest> {
  await mkdir(dir, { recursive: true });
  const seed = options.seed ?? 7;
  const defaults: Record<Task, string[]> = { age: ageGroupLabels('coursework'), ethnicity: [...ETHNICITY_LABELS], gender: [...GENDER_LABELS] };
  for (const task of ['age', 'ethnicity', 'gender'] as const) {
    const labels = options.labels?.[task] ?? defaults[task];
    const input = options.inputs?.[task] ?? SEED_INPUT;
    const years = task === 'age' && options.ageYears === true;
    const model = buildModel(task, input, labels.length, years, seed);
    const outputs: OutputSpec[] = [{ name: 'probabilities', kind: task === 'gender' && labels.length === 2 ? 'sigmoid' : 'probabilities', labels }];
    if (years) outputs.push({ name: 'years', kind: 'years' });
    try {
      const exported = exportModel(model, {
        task,
        labels,
        ...(task === 'age' ? { ageScheme: 'coursework' as const } : {}),
        input,
        outputs,
        preset: 'fixture',
        sourceSha256: await modelSha256(model),
      });
      await writeExportedModel(exported, join(dir, `${task}.onnx`));
    } finally {
      model.dispose();
    }
  }
  return validateModelManifest(JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')));
}
