/**
 * The models in the browser: the manifest's files fetched from the page's own origin and loaded by
 * contract/model-set.ts (sha256, metadata, preprocessing version, models that read the same input merged into
 * one graph so that a shared trunk runs once) in onnxruntime-web, and one prediction per photo in exactly the
 * shape of the server's POST /v1/predict answer: the manifest's face detector finds the faces and
 * contract/face/photo.ts cuts them out, the same code as the server's. Nothing here knows a label or a size.
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
import { taskPrediction, type TaskPrediction } from '../../../contract/prediction.ts';
import {
  cropFace,
  DEFAULT_MAX_FACES,
  DEFAULT_MIN_SCORE,
  detectFaces,
  faceAnswer,
  firstDetectorInput,
  runnerBySide,
  facePosition,
  wholeImagePosition,
  type FacePrediction,
  type FaceSearch,
  type PhotoPrediction,
  type RunDetector,
} from '../../../contract/face/photo.ts';
import { webRuntime, type WebSession } from './runtime.ts';
import type { WorkingPhoto } from './working-size.ts';

export { MANIFEST_FILE, ModelLoadError } from '../../../contract/model-set.ts';
export type { TaskPrediction } from '../../../contract/prediction.ts';
export type { FacePrediction, PhotoPrediction } from '../../../contract/face/photo.ts';

/** How to read a photo: find its faces (the server's default), or take the whole image as one face (`detect=none`). */
export type DetectMode = 'faces' | 'none';
export const DETECT_MODES: readonly DetectMode[] = ['faces', 'none'];

/** The server's defaults for a request that names no `maxFaces` or `minScore`. */
export const DEFAULT_FACE_SEARCH: Readonly<FaceSearch> = { minScore: DEFAULT_MIN_SCORE, maxFaces: DEFAULT_MAX_FACES };

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

  /** The first of the manifest's detectors, as the server uses; undefined where the manifest lists none. */
  private get runDetector(): RunDetector | undefined {
    const detector = this.detectors[0];
    if (detector === undefined) return undefined;
    const { sessionsBySide, inputName } = detector;
    return runnerBySide(sessionsBySide, async (session, input, side) => Object.values(await webRuntime.run(session, { [inputName]: { data: input, dims: [1, side, side, 3] } })));
  }

  /** Whether the page can find faces (else every image is taken as one face). */
  get detects(): boolean {
    return this.detectors.length > 0;
  }

  /** Model inputs from a face's crop bytes (one per spec, from `cropFace` or `preprocessToBytes`). */
  private inputsOf(crops: readonly Uint8Array[]): ModelInput[] {
    return this.specs.map((spec, i) => ({ spec, bytes: crops[i], data: scaleBytes(crops[i], spec) }));
  }

  /** The model inputs of a whole image, one per distinct spec (the server's `detect=none`). */
  preprocess(image: PixelBuffer): ModelInput[] {
    return this.inputsOf(this.specs.map((spec) => preprocessToBytes(image, spec)));
  }

  /** One run of every model on a blank image and of the detector on a blank input, so that the first prediction shown is not the one that pays for set-up. */
  async warmUp(): Promise<void> {
    await this.infer(this.inputsOf(this.specs.map((spec) => new Uint8Array(spec.height * spec.width * spec.channels))));
    const detector = this.detectors[0];
    if (detector !== undefined) {
      const size = detector.input.height;
      await this.runDetector?.(new Float32Array(size * size * 3), size);
    }
  }

  /** Runs every model on one face's inputs; returns the tasks' answers and the time the runs took. */
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
   * The whole answer for a photo, in the server's shape: `decode` gives it at its working size (timed with
   * preparing the detector's input, as the server's decode time is), then the detector finds the faces and each
   * is cut out and judged, or with `detect` 'none' the whole image is one face. `inputs[i]` is face i's model
   * inputs (undefined where it was not judged). `startedAt` is when the caller got the image (performance.now()).
   */
  async predict(
    decode: () => Promise<WorkingPhoto>,
    detect: DetectMode = 'faces',
    startedAt = performance.now(),
    search: FaceSearch = DEFAULT_FACE_SEARCH,
  ): Promise<{ prediction: PhotoPrediction; inputs: (ModelInput[] | undefined)[]; photo: WorkingPhoto }> {
    const run = this.runDetector;
    if (detect === 'faces' && run === undefined) throw new Error('The manifest lists no face detector, so the page cannot find faces; tick "The photo is a face crop" to take the whole image as one face');
    const decodeStarted = performance.now();
    const photo = await decode();
    const image = { width: photo.width, height: photo.height };
    if (detect === 'none' || run === undefined) {
      const inputs = this.preprocess(photo.pixels);
      const decodeMs = performance.now() - decodeStarted;
      const { tasks, ms } = await this.infer(inputs);
      const timingsMs = { decode: round(decodeMs), detect: 0, align: 0, inference: round(ms), total: round(performance.now() - startedAt) };
      return { prediction: { image, faces: [faceAnswer(wholeImagePosition(photo.width, photo.height), tasks)], timingsMs }, inputs: [inputs], photo };
    }
    const prepared = firstDetectorInput(photo.pixels, this.detectors[0].input.height);
    const detectStarted = performance.now();
    const found = await detectFaces(photo.pixels, run, search, prepared);
    const alignStarted = performance.now();
    const crops = found.map((face) => cropFace(photo.pixels, face, this.specs, photo.scale));
    const inferenceStarted = performance.now();
    const faces: FacePrediction[] = [];
    const inputs: (ModelInput[] | undefined)[] = [];
    for (const [i, crop] of crops.entries()) {
      const position = facePosition(found[i], photo.scale);
      if ('reason' in crop) {
        faces.push(faceAnswer(position, { reason: crop.reason }));
        inputs.push(undefined);
        continue;
      }
      const faceInputs = this.inputsOf(crop.crops);
      faces.push(faceAnswer(position, (await this.infer(faceInputs)).tasks));
      inputs.push(faceInputs);
    }
    const done = performance.now();
    const timingsMs = {
      decode: round(detectStarted - decodeStarted),
      detect: round(alignStarted - detectStarted),
      align: round(inferenceStarted - alignStarted),
      inference: round(done - inferenceStarted),
      total: round(done - startedAt),
    };
    return { prediction: { image, faces, timingsMs }, inputs, photo };
  }
}
