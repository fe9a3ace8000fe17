/**
 * The models in the browser: the manifest's files fetched from the page's own origin and loaded by
 * contract/model-set.ts (sha256, metadata, preprocessing version, models that read the same input merged into
 * one graph so that a shared trunk runs once) in onnxruntime-web, and one prediction per image in exactly the
 * shape of the server's POST /v1/predict answer. Nothing here knows a label or a size.
 */
import type { ModelMetadata } from '../../../contract/metadata.ts';
import {
  loadModelSet,
  MANIFEST_FILE,
  ModelLoadError,
  parseManifest,
  type ClassifierGraph,
  type FloatTensor,
  type LoadedClassifier,
  type LoadedDetector,
  type ModelSource,
} from '../../../contract/model-set.ts';
import { preprocessToBytes, scaleBytes, type InputSpec, type PixelBuffer } from '../../../contract/preprocess.ts';
import { taskPrediction, type Prediction, type TaskPrediction } from '../../../contract/prediction.ts';
import { webRuntime, type WebSession } from './runtime.ts';

export { MANIFEST_FILE, ModelLoadError } from '../../../contract/model-set.ts';
export type { Prediction, TaskPrediction, Timings } from '../../../contract/prediction.ts';

/** A classifier: its task, file and the metadata it carries. */
export type LoadedModel = LoadedClassifier;

/** One onnxruntime session and the models it runs: one, or several merged into one graph. */
export type LoadedGraph = ClassifierGraph<WebSession>;

/** The model input of one spec, and its bytes (0-255, HWC) for showing the crop as the model sees it. */
export interface ModelInput {
  spec: InputSpec;
  bytes: Uint8Array;
  data: Float32Array;
}

const round = (ms: number): number => Math.round(ms * 100) / 100;

async function fetchOk(url: URL): Promise<Response> {
  const response = await fetch(url);
  if (!response.ok) throw new ModelLoadError(`GET ${url.pathname} answered ${response.status} ${response.statusText}`);
  return response;
}

/** The models under `modelsUrl`, each fetched by its manifest file name (a detector's package is the server's business). */
function originModelSource(modelsUrl: URL): ModelSource {
  return {
    manifestPath: new URL(MANIFEST_FILE, modelsUrl).pathname,
    pathOf: (entry) => new URL(entry.file, modelsUrl).pathname,
    readFile: async (entry) => new Uint8Array(await (await fetchOk(new URL(entry.file, modelsUrl))).arrayBuffer()),
  };
}

/** One task's answer from its model's outputs (batch of one): the shared function the server uses too. */
export function interpret(metadata: ModelMetadata, outputs: Record<string, FloatTensor>): TaskPrediction {
  const rows: Record<string, Float32Array> = {};
  for (const [name, tensor] of Object.entries(outputs)) rows[name] = tensor.data;
  return taskPrediction(metadata, rows);
}

export class Classifier {
  private constructor(
    /** the models, in the usual task order */
    readonly models: readonly LoadedModel[],
    /** the sessions that run them */
    readonly graphs: readonly LoadedGraph[],
    /** the distinct input specs; each image is preprocessed once per spec */
    readonly specs: readonly InputSpec[],
    /** the manifest's face detectors, each its own session */
    readonly detectors: readonly LoadedDetector<WebSession>[],
  ) {}

  /** Fetches `manifest.json` and the models it lists from `modelsUrl`, checks them, and opens their sessions. */
  static async load(modelsUrl: URL): Promise<Classifier> {
    const source = originModelSource(modelsUrl);
    const manifest = parseManifest(await (await fetchOk(new URL(MANIFEST_FILE, modelsUrl))).text(), source.manifestPath);
    const set = await loadModelSet(source, manifest.models, webRuntime, { merge: true, log: console });
    return new Classifier(set.classifiers, set.graphs, set.specs, set.detectors);
  }

  /** The model inputs of a decoded image, one per distinct spec (shared preprocessing, as in the server). */
  preprocess(image: PixelBuffer): ModelInput[] {
    return this.specs.map((spec) => {
      const bytes = preprocessToBytes(image, spec);
      return { spec, bytes, data: scaleBytes(bytes, spec) };
    });
  }

  /** One run of every model on a blank image, so that the first prediction shown is not the one that pays for set-up. */
  async warmUp(): Promise<void> {
    await this.infer(this.specs.map((spec) => {
      const bytes = new Uint8Array(spec.height * spec.width * spec.channels);
      return { spec, bytes, data: scaleBytes(bytes, spec) };
    }));
  }

  /** Runs every model on inputs from `preprocess`; returns the tasks' answers and the time the runs took. */
  async infer(inputs: readonly ModelInput[]): Promise<{ tasks: Record<string, TaskPrediction>; ms: number }> {
    const started = performance.now();
    const tasks: Record<string, TaskPrediction> = {};
    for (const graph of this.graphs) {
      const { spec, data } = inputs[graph.specIndex];
      const outputs = await webRuntime.run(graph.session, { [graph.inputName]: { data, dims: [1, spec.height, spec.width, spec.channels] } });
      Object.assign(tasks, graph.interpret(outputs, 0));
    }
    // In the usual task order, whichever graph answered first.
    return { tasks: Object.fromEntries(this.models.map((m) => [m.task, tasks[m.task]])), ms: performance.now() - started };
  }

  /**
   * The whole prediction for an image: `decode` turns it into pixels (timed with preprocessing, as the server's
   * decode time is), then every model runs. `startedAt` is when the caller got the image (performance.now()).
   */
  async predict(decode: () => Promise<PixelBuffer>, startedAt = performance.now()): Promise<{ prediction: Prediction; inputs: ModelInput[] }> {
    const decodeStarted = performance.now();
    const inputs = this.preprocess(await decode());
    const decodeMs = performance.now() - decodeStarted;
    const { tasks, ms } = await this.infer(inputs);
    const prediction: Prediction = { ...tasks, timingsMs: { decode: round(decodeMs), inference: round(ms), total: round(performance.now() - startedAt) } };
    return { prediction, inputs };
  }
}
