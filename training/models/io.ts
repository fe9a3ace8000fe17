/**
 * Saving and loading tfjs layers models as a folder (model.json + weights.bin), the layout tfjs-node's
 * `file://` handler uses, without needing tfjs-node (which cannot install everywhere).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
// register HorizontalFlip and Temperature, which the multitask preset's saved models hold, so that they load
import '../../node-shared/tfjs/flip-layer.ts';
import '../../node-shared/tfjs/temperature-layer.ts';

const MODEL_JSON = 'model.json';
const WEIGHTS_BIN = 'weights.bin';

export async function saveModel(model: tf.LayersModel, dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      const weightData = artifacts.weightData === undefined ? new ArrayBuffer(0) : tf.io.CompositeArrayBuffer.join(artifacts.weightData);
      const modelJson = {
        modelTopology: artifacts.modelTopology,
        format: artifacts.format ?? 'layers-model',
        generatedBy: artifacts.generatedBy,
        convertedBy: artifacts.convertedBy ?? null,
        trainingConfig: artifacts.trainingConfig,
        userDefinedMetadata: artifacts.userDefinedMetadata,
        weightsManifest: [{ paths: [`./${WEIGHTS_BIN}`], weights: artifacts.weightSpecs ?? [] }],
      };
      await writeFile(join(dir, MODEL_JSON), JSON.stringify(modelJson));
      await writeFile(join(dir, WEIGHTS_BIN), new Uint8Array(weightData));
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    }),
  );
}

/** Reads a model folder written by `saveModel` (or by tfjs-node / the tfjs converter with one weights file group). */
export async function loadModelArtifacts(dir: string): Promise<tf.io.ModelArtifacts> {
  let json: tf.io.ModelJSON;
  try {
    json = JSON.parse(await readFile(join(dir, MODEL_JSON), 'utf8')) as tf.io.ModelJSON;
  } catch (error) {
    throw new Error(`Cannot read a tfjs model from "${dir}": ${(error as Error).message}`);
  }
  const weightSpecs: tf.io.WeightsManifestEntry[] = [];
  const buffers: Uint8Array[] = [];
  for (const group of json.weightsManifest) {
    weightSpecs.push(...group.weights);
    for (const path of group.paths) buffers.push(new Uint8Array(await readFile(join(dir, path))));
  }
  const weightData = tf.io.concatenateArrayBuffers(buffers.map((b) => b.buffer as ArrayBuffer));
  return { modelTopology: json.modelTopology, format: json.format, generatedBy: json.generatedBy, convertedBy: json.convertedBy, trainingConfig: json.trainingConfig, userDefinedMetadata: json.userDefinedMetadata, weightSpecs, weightData };
}

export async function loadModel(dir: string): Promise<tf.LayersModel> {
  return tf.loadLayersModel(tf.io.fromMemory(await loadModelArtifacts(dir)));
}
