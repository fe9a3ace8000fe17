/**
 * Reading a tfjs layers model folder (model.json + weight files) for export, and the hash that ties an
 * exported ONNX file to the exact model it came from.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs';
// register HorizontalFlip (test-time flip) and Temperature (calibrated probabilities), which the multitask
// preset's shipped models hold
import '../node-shared/tfjs/flip-layer.ts';
import '../node-shared/tfjs/temperature-layer.ts';

type LayerArgs = NonNullable<ConstructorParameters<typeof tf.layers.Layer>[0]>;

/**
 * Keras' SpatialDropout2D, which tfjs-layers lacks: without a class of that name a model that uses it
 * cannot be loaded at all. This stand-in is for inference only (where dropout is the identity); it is
 * registered only when no other SpatialDropout2D class is, so a real implementation always wins.
 */
export class SpatialDropout2D extends tf.layers.Layer {
  static readonly className = 'SpatialDropout2D';
  readonly rate: number;
  private readonly extra: { dataFormat?: string; seed?: number };

  constructor(args: LayerArgs & { rate: number; dataFormat?: string; seed?: number }) {
    super(args);
    this.rate = args.rate;
    this.extra = { dataFormat: args.dataFormat, seed: args.seed };
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return Array.isArray(inputs) ? inputs[0] : inputs;
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape | tf.Shape[] {
    return inputShape;
  }

  override getConfig(): tf.serialization.ConfigDict {
    const config: tf.serialization.ConfigDict = { ...super.getConfig(), rate: this.rate };
    if (this.extra.dataFormat !== undefined) config.dataFormat = this.extra.dataFormat;
    if (this.extra.seed !== undefined) config.seed = this.extra.seed;
    return config;
  }
}

/**
 * Keras 3 writes swish as "silu", a name tfjs-layers does not know; this registers it (x * sigmoid(x),
 * tfjs' swish) when nothing else has, so such a model loads and exports like one that says "swish".
 */
export class SiluActivation extends tf.serialization.Serializable {
  static readonly className = 'silu';

  override getConfig(): tf.serialization.ConfigDict {
    return {};
  }

  apply(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => tf.mul(x, tf.sigmoid(x)));
  }
}

for (const cls of [SpatialDropout2D, SiluActivation]) {
  if (tf.serialization.SerializationMap.getMap().classNameMap[cls.className] === undefined) tf.serialization.registerClass(cls);
}

export interface TfjsModelFolder {
  model: tf.LayersModel;
  /** sha256 (hex) of model.json's bytes followed by each weight file's bytes in manifest order */
  sha256: string;
  /** the folder, resolved */
  dir: string;
}

/** Loads `dir/model.json` and its weight files (the layout `tfjs-node`'s `file://` handler writes). */
export async function loadTfjsModelFolder(dir: string): Promise<TfjsModelFolder> {
  const folder = resolve(dir);
  const jsonPath = join(folder, 'model.json');
  let jsonBytes: Uint8Array;
  try {
    jsonBytes = bytesOf(await readFile(jsonPath));
  } catch (error) {
    const exists = await stat(folder).then(() => true, () => false);
    throw new Error(exists ? `No tfjs model in "${folder}": cannot read model.json (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})` : `No tfjs model at "${folder}": the folder does not exist`);
  }
  let json: tf.io.ModelJSON;
  try {
    json = JSON.parse(new TextDecoder().decode(jsonBytes)) as tf.io.ModelJSON;
  } catch (error) {
    throw new Error(`"${jsonPath}" is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || json.modelTopology === undefined || !Array.isArray(json.weightsManifest)) {
    throw new Error(`"${jsonPath}" is not a tfjs layers model: expected modelTopology and weightsManifest`);
  }
  const hash = createHash('sha256').update(jsonBytes);
  const weightSpecs: tf.io.WeightsManifestEntry[] = [];
  const buffers: Uint8Array[] = [];
  for (const group of json.weightsManifest) {
    weightSpecs.push(...group.weights);
    for (const path of group.paths) {
      let bytes: Uint8Array;
      try {
        bytes = bytesOf(await readFile(join(folder, path)));
      } catch (error) {
        throw new Error(`Cannot read weight file "${path}" of "${jsonPath}": ${(error as Error).message}`);
      }
      hash.update(bytes);
      buffers.push(bytes);
    }
  }
  const weightData = concat(buffers);
  const artifacts: tf.io.ModelArtifacts = { modelTopology: json.modelTopology, format: json.format, generatedBy: json.generatedBy, convertedBy: json.convertedBy, weightSpecs, weightData };
  let model: tf.LayersModel;
  try {
    model = await tf.loadLayersModel(tf.io.fromMemory(artifacts));
  } catch (error) {
    throw new Error(`tfjs cannot load the model in "${folder}": ${(error as Error).message}`);
  }
  return { model, sha256: hash.digest('hex'), dir: folder };
}

/** model.json and weights.bin of a model in memory, as `saveTfjsModelFolder` writes them. */
async function serializeModel(model: tf.LayersModel): Promise<{ json: string; weights: Uint8Array }> {
  let files: { json: string; weights: Uint8Array } | undefined;
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      const weights = artifacts.weightData === undefined ? new ArrayBuffer(0) : tf.io.CompositeArrayBuffer.join(artifacts.weightData);
      const json = { modelTopology: artifacts.modelTopology, format: artifacts.format ?? 'layers-model', generatedBy: artifacts.generatedBy, convertedBy: artifacts.convertedBy ?? null, weightsManifest: [{ paths: ['./weights.bin'], weights: artifacts.weightSpecs ?? [] }] };
      files = { json: JSON.stringify(json), weights: new Uint8Array(weights) };
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    }),
  );
  if (files === undefined) throw new Error(`tfjs did not serialize model "${model.name}"`);
  return files;
}

/** The hash of a model in memory: what `loadTfjsModelFolder` reports after `saveTfjsModelFolder` wrote it. */
export async function modelSha256(model: tf.LayersModel): Promise<string> {
  const { json, weights } = await serializeModel(model);
  return createHash('sha256').update(json).update(weights).digest('hex');
}

/** A plain Uint8Array view of a Buffer (Node's Buffer typings do not fit Uint8Array parameters). */
function bytesOf(buffer: Buffer): Uint8Array {
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

function concat(buffers: Uint8Array[]): ArrayBuffer {
  const out = new Uint8Array(buffers.reduce((n, b) => n + b.length, 0));
  let offset = 0;
  for (const b of buffers) {
    out.set(b, offset);
    offset += b.length;
  }
  return out.buffer;
}

/** Writes `dir/model.json` + `dir/weights.bin` (one weight file), the layout `loadTfjsModelFolder` reads. */
export async function saveTfjsModelFolder(model: tf.LayersModel, dir: string): Promise<void> {
  const { json, weights } = await serializeModel(model);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'model.json'), json);
  await writeFile(join(dir, 'weights.bin'), weights);
}
