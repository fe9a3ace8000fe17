/**
 * The models in the browser: the manifest's files fetched from the page's own origin and checked against their
 * sha256, the metadata each carries (task, labels, input spec, what each output means), and one prediction per
 * image in exactly the shape of the server's POST /v1/predict answer. Nothing here knows a label or a size.
 * As in the server, models that read the same input run as one merged graph, so a shared trunk runs once.
 */
import { TASKS } from '../../../contract/labels.ts';
import { mergeModels, ModelMergeError, type MergedModel } from '../../../contract/merge-models.ts';
import { outputMismatch, readModelMetadata, validateModelManifest, type ModelMetadata } from '../../../contract/metadata.ts';
import { groupByInputSpec, PREPROCESSING_VERSION, preprocessToBytes, scaleBytes, type InputSpec, type PixelBuffer } from '../../../contract/preprocess.ts';
import { taskPrediction, type Prediction, type TaskPrediction } from '../../../contract/prediction.ts';
import { createSession, releaseSession, run, type FloatTensor, type Session } from './runtime.ts';

export const MANIFEST_FILE = 'manifest.json';

export type { Prediction, TaskPrediction, Timings } from '../../../contract/prediction.ts';

export interface LoadedModel {
  task: string;
  file: string;
  metadata: ModelMetadata;
}

/** One onnxruntime session and the models it runs: one, or several merged into one graph. */
export interface LoadedGraph {
  session: Session;
  inputName: string;
  /** index into `Classifier.specs` */
  specIndex: number;
  /** each model it runs, with its output names -> the session's */
  members: { model: LoadedModel; outputs: ReadonlyMap<string, string> }[];
  /** for a merged graph: its nodes, and the separate graphs' together */
  nodes?: MergedModel['nodes'];
}

/** The model input of one spec, and its bytes (0-255, HWC) for showing the crop as the model sees it. */
export interface ModelInput {
  spec: InputSpec;
  bytes: Uint8Array;
  data: Float32Array;
}

/** A model file that cannot be used as it is; the message says which and why. */
export class ModelLoadError extends Error {
  override name = 'ModelLoadError';
}

const round = (ms: number): number => Math.round(ms * 100) / 100;

async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

async function fetchOk(url: URL): Promise<Response> {
  const response = await fetch(url);
  if (!response.ok) throw new ModelLoadError(`GET ${url.pathname} answered ${response.status} ${response.statusText}`);
  return response;
}

function checkInput(file: string, session: Session, spec: InputSpec): string {
  if (session.inputs.length !== 1) throw new ModelLoadError(`${file} has ${session.inputs.length} inputs; expected one image input`);
  const [input] = session.inputs;
  const expected = [spec.height, spec.width, spec.channels];
  const [batch, ...rest] = input.shape;
  if (input.type !== 'float32' || input.shape.length !== 4 || rest.some((dim, i) => typeof dim === 'number' && dim !== expected[i]) || (typeof batch === 'number' && batch !== 1)) {
    throw new ModelLoadError(`${file}: input "${input.name}" is ${input.type} [${input.shape.join(', ')}]; its metadata says float32 [N, ${expected.join(', ')}]`);
  }
  return input.name;
}

function checkOutputs(file: string, sessionNames: ReadonlyMap<string, string>, metadata: ModelMetadata): void {
  const problem = outputMismatch(file, sessionNames, metadata);
  if (problem !== undefined) throw new ModelLoadError(problem);
}

/**
 * One session for `models` merged into one graph, or undefined where they cannot be merged or onnxruntime-web
 * will not run the merged graph: the caller then opens a session per model, which reports any fault of the
 * models themselves.
 */
async function openMerged(models: readonly { model: LoadedModel; bytes: Uint8Array }[], specIndex: number): Promise<LoadedGraph | undefined> {
  let session: Session | undefined;
  try {
    const merged = mergeModels(models.map(({ model, bytes }) => ({ key: model.task, bytes })));
    session = await createSession(merged.bytes);
    const inputName = checkInput(models.map((m) => m.model.file).join(' + '), session, models[0].model.metadata.input);
    const members = models.map(({ model }) => ({ model, outputs: new Map(Object.entries(merged.outputNames[model.task])) }));
    for (const { model, outputs } of members) checkOutputs(model.file, outputs, model.metadata);
    return { session, inputName, specIndex, members, nodes: merged.nodes };
  } catch (error) {
    if (session !== undefined) await releaseSession(session);
    // Models that cannot merge are normal; a merged graph that will not load is a fault of merging.
    if (error instanceof ModelMergeError) console.info(`The models run as separate graphs: ${error.message}`);
    else console.warn(`The models run as separate graphs: the merged graph failed to load (${error instanceof Error ? error.message : String(error)})`);
    return undefined;
  }
}

/** Sessions for `models` (one input spec): one merged graph where they can be merged, else one each. */
async function openGraphs(models: readonly { model: LoadedModel; bytes: Uint8Array }[], specIndex: number): Promise<LoadedGraph[]> {
  const merged = models.length > 1 ? await openMerged(models, specIndex) : undefined;
  if (merged !== undefined) return [merged];
  return Promise.all(
    models.map(async ({ model, bytes }): Promise<LoadedGraph> => {
      const session = await createSession(bytes);
      const inputName = checkInput(model.file, session, model.metadata.input);
      const outputs = new Map(session.outputs.map((o) => [o.name, o.name]));
      checkOutputs(model.file, outputs, model.metadata);
      return { session, inputName, specIndex, members: [{ model, outputs }] };
    }),
  );
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
  ) {}

  /** Fetches `manifest.json` and the models it lists from `modelsUrl`, checks them, and opens their sessions. */
  static async load(modelsUrl: URL): Promise<Classifier> {
    const manifestUrl = new URL(MANIFEST_FILE, modelsUrl);
    let manifest;
    try {
      manifest = validateModelManifest(await (await fetchOk(manifestUrl)).json(), manifestUrl.pathname);
    } catch (error) {
      throw error instanceof ModelLoadError ? error : new ModelLoadError(`${manifestUrl.pathname} is not a valid manifest: ${(error as Error).message}`);
    }
    if (manifest.models.length === 0) throw new ModelLoadError(`${manifestUrl.pathname} lists no models`);
    const fetched = await Promise.all(
      manifest.models.map(async (entry) => {
        const url = new URL(entry.file, modelsUrl);
        const bytes = new Uint8Array(await (await fetchOk(url)).arrayBuffer());
        const digest = await sha256(bytes);
        if (digest !== entry.sha256) throw new ModelLoadError(`${url.pathname} has sha256 ${digest}, but ${MANIFEST_FILE} says ${entry.sha256}`);
        const metadata = readModelMetadata(bytes);
        if (metadata.task !== entry.task) throw new ModelLoadError(`${url.pathname} is a ${metadata.task} model, but ${MANIFEST_FILE} lists it as ${entry.task}`);
        if (metadata.preprocessingVersion !== PREPROCESSING_VERSION) {
          throw new ModelLoadError(`${url.pathname} was trained with preprocessing version ${metadata.preprocessingVersion}; this page preprocesses with version ${PREPROCESSING_VERSION}`);
        }
        return { model: { task: metadata.task, file: entry.file, metadata }, bytes };
      }),
    );
    // Tasks in their usual order, whatever the manifest's.
    fetched.sort((a, b) => TASKS.indexOf(a.model.metadata.task) - TASKS.indexOf(b.model.metadata.task));
    const groups = groupByInputSpec(fetched, (entry) => entry.model.metadata.input);
    const specs = groups.map((group) => group.spec);
    const graphs = (await Promise.all(groups.map((group, specIndex) => openGraphs(group.items, specIndex)))).flat();
    return new Classifier(fetched.map((f) => f.model), graphs, specs);
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
      const outputs = await run(graph.session, { [graph.inputName]: { data, dims: [1, spec.height, spec.width, spec.channels] } });
      for (const { model, outputs: names } of graph.members) {
        tasks[model.task] = interpret(model.metadata, Object.fromEntries([...names].map(([own, inSession]) => [own, outputs[inSession]])));
      }
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
