/**
 * tfjs layers model -> ONNX file with the model's metadata inside, and the manifest of the models that ship.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type * as tf from '@tensorflow/tfjs';
import { taskLabels, type AgeScheme, type Task } from '../contract/labels.ts';
import {
  METADATA_KEY,
  METADATA_SCHEMA_VERSION,
  readModelMetadata,
  serializeModelMetadata,
  validateModelManifest,
  validateOutputSpec,
  validateTrainingInfo,
  type JsonObject,
  type ManifestEntry,
  type ModelManifest,
  type ModelMetadata,
  type OutputSpec,
  type TrainingInfo,
} from '../contract/metadata.ts';
import { PREPROCESSING_VERSION, type InputSpec } from '../contract/preprocess.ts';
import { convertLayersModel } from './convert.ts';
import { ExportError } from './errors.ts';
import type { LayerTable, Shape } from './layers.ts';
import { encodeModel, IR_VERSION_FOR_OPSET } from './onnx-proto.ts';
import { loadTfjsModelFolder } from './tfjs-model.ts';
import { writeFileAtomic } from '../node-shared/files.ts';
import { NoMirrorError, withoutMirror } from '../node-shared/tfjs/flip-layer.ts';

export const EXPORTER_NAME = 'face-attributes-export';
/** Bumped when the ONNX this exporter writes changes for the same tfjs model. */
export const EXPORTER_VERSION = '1.0.0';
/** ai.onnx opset 13: the oldest that has every op used here in its current form (Softmax on one axis, Clip with inputs). */
export const DEFAULT_OPSET = 13;
/** Opsets whose semantics for every op used here are the same as 13's, so the same graph is valid for each. */
export const SUPPORTED_OPSETS: readonly number[] = Object.keys(IR_VERSION_FOR_OPSET).map(Number);

export { ExportError };

/** What goes into the model's metadata besides what the exporter knows itself. */
export interface ExportOptions {
  task: Task;
  /** class labels in index order */
  labels: readonly string[];
  ageScheme?: AgeScheme;
  input: InputSpec;
  /** default: the current PREPROCESSING_VERSION */
  preprocessingVersion?: number;
  /** meaning of each output; default for one output: probabilities, or sigmoid for one unit */
  outputs?: readonly OutputSpec[];
  /** the training run's metrics.json, or null */
  metrics?: JsonObject | null;
  preset?: string;
  /** see `ModelMetadata.source.sha256` (`loadTfjsModelFolder` and `modelSha256` compute it) */
  sourceSha256: string;
  /** default DEFAULT_OPSET */
  opset?: number;
  /** default LAYER_TABLE */
  layers?: LayerTable;
}

export interface ExportedModel {
  /** the .onnx file's bytes */
  bytes: Uint8Array;
  metadata: ModelMetadata;
  /** sha256 (hex) of `bytes` */
  sha256: string;
}

/** Converts a tfjs layers model to the bytes of an ONNX file whose metadata says what it is. */
export function exportModel(model: tf.LayersModel, options: ExportOptions): ExportedModel {
  const opset = options.opset ?? DEFAULT_OPSET;
  const irVersion = IR_VERSION_FOR_OPSET[opset];
  if (irVersion === undefined) throw new ExportError(`Unsupported opset ${opset}; expected one of: ${SUPPORTED_OPSETS.join(', ')}`);
  if (model.inputs.length !== 1) throw new ExportError(`Model "${model.name}" has ${model.inputs.length} inputs; expected one image input`);
  checkInputShape(model.inputs[0].shape, options.input);
  const outputs = resolveOutputs(model.outputs.map((o) => o.shape), options);
  checkLabelCount(outputs, model.outputs.map((o) => o.shape), options.labels);

  const converted = convertLayersModel(model, { outputNames: outputs.map((o) => o.name), layers: options.layers });
  const metadata: ModelMetadata = {
    schemaVersion: METADATA_SCHEMA_VERSION,
    task: options.task,
    labels: [...options.labels],
    ...(options.ageScheme === undefined ? {} : { ageScheme: options.ageScheme }),
    input: { ...options.input },
    preprocessingVersion: options.preprocessingVersion ?? PREPROCESSING_VERSION,
    outputs,
    metrics: options.metrics ?? null,
    source: { format: 'tfjs-layers', sha256: options.sourceSha256, ...(options.preset === undefined ? {} : { preset: options.preset }) },
    exporter: { name: EXPORTER_NAME, version: EXPORTER_VERSION },
    opset,
  };
  let json: string;
  try {
    json = serializeModelMetadata(metadata);
  } catch (error) {
    throw new ExportError((error as Error).message);
  }
  const bytes = encodeModel({
    irVersion,
    producerName: EXPORTER_NAME,
    producerVersion: EXPORTER_VERSION,
    docString: `${options.task} model exported from tfjs-layers; input float32 NHWC [N, ${options.input.height}, ${options.input.width}, ${options.input.channels}]`,
    graph: converted.graph,
    opsetImports: [{ domain: '', version: opset }],
    metadataProps: [{ key: METADATA_KEY, value: json }],
  });
  return { bytes, metadata, sha256: sha256Hex(bytes) };
}

/**
 * The graph alone as ONNX bytes, without this project's metadata or its checks on inputs and outputs:
 * for models that are not face-attribute models (the exporter's own layer tests).
 */
export function encodeLayersModel(model: tf.LayersModel, options: { opset?: number; layers?: LayerTable } = {}): Uint8Array {
  const opset = options.opset ?? DEFAULT_OPSET;
  const irVersion = IR_VERSION_FOR_OPSET[opset];
  if (irVersion === undefined) throw new ExportError(`Unsupported opset ${opset}; expected one of: ${SUPPORTED_OPSETS.join(', ')}`);
  const { graph } = convertLayersModel(model, { layers: options.layers });
  return encodeModel({ irVersion, producerName: EXPORTER_NAME, producerVersion: EXPORTER_VERSION, graph, opsetImports: [{ domain: '', version: opset }], metadataProps: [] });
}

function checkInputShape(shape: Shape, spec: InputSpec): void {
  const [, height, width, channels] = shape;
  if (shape.length !== 4 || height !== spec.height || width !== spec.width || channels !== spec.channels) {
    throw new ExportError(
      `The model takes [${shape.map((d) => d ?? 'N').join(', ')}], but the input spec says ${spec.height}x${spec.width}x${spec.channels} (height x width x channels)`,
    );
  }
}

/**
 * The task's labels must name every class the model's class outputs give (a single sigmoid unit gives two), or
 * every runtime that reads the metadata would get class indices past the end of its label list.
 */
function checkLabelCount(outputs: readonly OutputSpec[], shapes: Shape[], labels: readonly string[]): void {
  outputs.forEach((output, i) => {
    if (output.kind === 'years') return;
    const last = shapes[i][shapes[i].length - 1];
    const classes = output.kind === 'sigmoid' ? 2 : last;
    if (labels.length !== classes) {
      throw new ExportError(
        `${labels.length} labels (${labels.join(', ')}) were given, but output "${output.name}" of the model gives ${classes} classes (${output.kind === 'sigmoid' ? 'one sigmoid unit' : `[N, ${last}]`}); give ${classes} labels with --labels, or none to use the task's`,
      );
    }
  });
}

/** The outputs' meaning, checked against the model's output shapes. */
function resolveOutputs(shapes: Shape[], options: ExportOptions): OutputSpec[] {
  let outputs: OutputSpec[];
  if (options.outputs !== undefined) {
    outputs = options.outputs.map((o, i) => validateSafely(() => validateOutputSpec(o, `outputs[${i}]`)));
  } else if (shapes.length === 1) {
    // One unit is a sigmoid whatever the labels say; checkLabelCount then names a label count that does not fit.
    const sigmoid = shapes[0][shapes[0].length - 1] === 1;
    outputs = [{ name: 'output', kind: sigmoid ? 'sigmoid' : 'probabilities', labels: [...options.labels] }];
  } else {
    throw new ExportError(`The model has ${shapes.length} outputs; say what each holds with "outputs" in training-info.json or --outputs`);
  }
  if (outputs.length !== shapes.length) throw new ExportError(`${outputs.length} output descriptions were given; the model has ${shapes.length} outputs`);
  outputs.forEach((output, i) => {
    const shape = shapes[i];
    const last = shape[shape.length - 1];
    const expected = output.kind === 'probabilities' ? (output.labels?.length ?? 0) : 1;
    if (shape.length !== 2 || last !== expected) {
      throw new ExportError(
        `Output ${i} ("${output.name}", ${output.kind}${output.labels ? ` with ${output.labels.length} labels` : ''}) should be [N, ${expected}], but the model's output ${i} is [${shape.map((d) => d ?? 'N').join(', ')}]`,
      );
    }
  });
  return outputs;
}

function validateSafely<T>(validate: () => T): T {
  try {
    return validate();
  } catch (error) {
    throw new ExportError((error as Error).message);
  }
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

// ---------------------------------------------------------------------------------------------
// Folders and files.

/** A model folder's export settings; whatever is left out comes from files beside the model. */
export interface FolderExportOptions {
  /** the tfjs model folder (model.json + weights) */
  modelDir: string;
  /** default: `training-info.json` in the model folder's parent (a run's task folder) or in the folder itself */
  trainingInfoFile?: string;
  /** default: `metrics.json` found the same way; none found means null metrics */
  metricsFile?: string;
  /**
   * false: export a model that averages each face and its mirror image (test-time flip) as one pass on the face
   * alone: half the compute, a little less accurate. Its metadata then keeps the test split and the training facts
   * of metrics.json but not its test figures, which training measured with both passes. Default: the model as trained.
   */
  testTimeFlip?: boolean;
  task?: Task;
  labels?: string[];
  ageScheme?: AgeScheme;
  input?: InputSpec;
  preset?: string;
  outputs?: OutputSpec[];
  opset?: number;
}

export interface FolderExport extends ExportedModel {
  /** the loaded tfjs model; the caller disposes it */
  model: tf.LayersModel;
  /** the model folder, resolved */
  modelDir: string;
  /** where training-info.json and metrics.json were read from, if anywhere */
  trainingInfoFile?: string;
  metricsFile?: string;
}

export interface FolderExportResult extends ExportedModel {
  outFile: string;
  manifestFile: string;
  trainingInfoFile?: string;
  metricsFile?: string;
}

/**
 * The keys of metrics.json that describe training rather than measure the model (see TaskMetrics). `calibration`
 * is the temperature the file keeps and how it was fitted (on the mean of the two passes).
 */
const TRAINING_FACTS = new Set(['task', 'preset', 'labels', 'split', 'epochs', 'keptEpoch', 'trainCount', 'testCount', 'parameters', 'backend', 'trainSeconds', 'calibration']);

export const TRAINING_INFO_FILE = 'training-info.json';
export const METRICS_FILE = 'metrics.json';
export const MANIFEST_FILE = 'manifest.json';

/** Loads a tfjs model folder and exports it in memory, with metadata from the flags and the files beside it. */
export async function exportModelFolderInMemory(options: FolderExportOptions): Promise<FolderExport> {
  const loaded = await loadTfjsModelFolder(options.modelDir);
  const { sha256: sourceSha256, dir } = loaded;
  let model = loaded.model;
  try {
    if (options.testTimeFlip === false) {
      try {
        model = withoutMirror(model);
      } catch (error) {
        if (error instanceof NoMirrorError) throw new ExportError(`${dir}: ${error.message}; export it without --no-test-time-flip`);
        throw error;
      }
    }
    const trainingInfoFile = options.trainingInfoFile ?? (await findBeside(dir, TRAINING_INFO_FILE));
    const info = trainingInfoFile === undefined ? undefined : await readTrainingInfo(trainingInfoFile);
    const metricsFile = options.metricsFile ?? (await findBeside(dir, METRICS_FILE));
    let metrics = metricsFile === undefined ? null : await readJsonObject(metricsFile);
    // Training measured the model with both passes: keep what it says of training and of the test split only.
    if (metrics !== null && options.testTimeFlip === false) metrics = Object.fromEntries(Object.entries(metrics).filter(([key]) => TRAINING_FACTS.has(key)));

    const task = options.task ?? info?.task;
    if (task === undefined) {
      throw new ExportError(`No ${TRAINING_INFO_FILE} beside "${dir}" and no --task: pass --task (and --labels, --input if they differ from the defaults) or write ${TRAINING_INFO_FILE}`);
    }
    if (info !== undefined && options.task !== undefined && options.task !== info.task && options.labels === undefined) {
      throw new ExportError(`--task ${options.task} differs from ${trainingInfoFile}'s task "${info.task}"; pass --labels too, or fix the flag`);
    }
    const ageScheme = options.ageScheme ?? info?.ageScheme ?? (task === 'age' ? 'coursework' : undefined);
    const labels = options.labels ?? (info?.task === task ? info.labels : taskLabels(task, ageScheme));
    const input = options.input ?? info?.input ?? inputFromModel(model.inputs[0].shape);
    const exported = exportModel(model, {
      task,
      labels,
      ageScheme: task === 'age' ? ageScheme : undefined,
      input,
      preprocessingVersion: info?.preprocessingVersion,
      outputs: options.outputs ?? info?.outputs,
      metrics,
      preset: options.preset ?? info?.preset,
      sourceSha256,
      opset: options.opset,
    });
    // Read back what will ship, so that a file the server could not read is never written.
    readModelMetadata(exported.bytes);
    return { ...exported, model, modelDir: dir, trainingInfoFile, metricsFile };
  } catch (error) {
    model.dispose();
    throw error;
  }
}

/** Writes an export to `out` and records it in `manifest.json` beside it. */
export async function writeExportedModel(exported: ExportedModel, out: string): Promise<{ outFile: string; manifestFile: string }> {
  const outFile = resolve(out);
  await writeFileAtomic(outFile, exported.bytes);
  const manifestFile = join(dirname(outFile), MANIFEST_FILE);
  await updateManifest(manifestFile, {
    task: exported.metadata.task,
    file: basename(outFile),
    sha256: exported.sha256,
    bytes: exported.bytes.length,
    opset: exported.metadata.opset,
    exporterVersion: EXPORTER_VERSION,
    preprocessingVersion: exported.metadata.preprocessingVersion,
    sourceSha256: exported.metadata.source.sha256,
  });
  return { outFile, manifestFile };
}

/** Exports one tfjs model folder to `out` and records it in the manifest beside it. */
export async function exportModelFolder(options: FolderExportOptions & { out: string }): Promise<FolderExportResult> {
  const { model, modelDir: _modelDir, ...exported } = await exportModelFolderInMemory(options);
  model.dispose();
  return { ...exported, ...(await writeExportedModel(exported, options.out)) };
}

/** The input spec a model's input shape implies, with the only scaling there is. */
function inputFromModel(shape: Shape): InputSpec {
  const [, height, width, channels] = shape;
  if (shape.length !== 4 || height === null || width === null || (channels !== 1 && channels !== 3)) {
    throw new ExportError(`Cannot tell the input spec from the model's input [${shape.map((d) => d ?? 'N').join(', ')}]; pass --input HxWxC`);
  }
  return { height, width, channels, scaling: 'unit' };
}

/** `name` in the model folder's parent (a run's task folder), else in the folder itself. */
async function findBeside(modelDir: string, name: string): Promise<string | undefined> {
  for (const candidate of [join(dirname(modelDir), name), join(modelDir, name)]) {
    if (await readFile(candidate).then(() => true, () => false)) return candidate;
  }
  return undefined;
}

async function readJson(file: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new ExportError(`Cannot read "${file}": ${(error as Error).message}`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new ExportError(`"${file}" is not valid JSON: ${(error as Error).message}`);
  }
}

export async function readTrainingInfo(file: string): Promise<TrainingInfo> {
  const value = await readJson(file);
  return validateSafely(() => validateTrainingInfo(value, file));
}

async function readJsonObject(file: string): Promise<JsonObject> {
  const value = await readJson(file);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ExportError(`"${file}" should hold a JSON object`);
  return value as JsonObject;
}

/** Adds or replaces the entry for `entry.file` in the manifest (created when missing). */
export async function updateManifest(manifestFile: string, entry: ManifestEntry): Promise<ModelManifest> {
  let manifest: ModelManifest = { schemaVersion: 1, models: [] };
  const existing = await readFile(manifestFile, 'utf8').catch(() => undefined);
  if (existing !== undefined) {
    let value: unknown;
    try {
      value = JSON.parse(existing);
    } catch (error) {
      throw new ExportError(`"${manifestFile}" is not valid JSON (${(error as Error).message}); fix or delete it`);
    }
    manifest = validateSafely(() => validateModelManifest(value, manifestFile));
  }
  const models = manifest.models.filter((m) => m.file !== entry.file);
  models.push(entry);
  models.sort((a, b) => a.file.localeCompare(b.file));
  const updated: ModelManifest = { schemaVersion: 1, models };
  await writeFileAtomic(manifestFile, JSON.stringify(updated, null, 2) + '\n');
  return updated;
}
