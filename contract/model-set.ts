/**
 * Loading a model set, written once for every runtime: the manifest, each file checked against its sha256, the
 * metadata each classifier carries (task, labels, input spec, what each output means) and the preprocessing
 * version it was trained with, classifiers that read the same input merged into one graph (merge-models.ts) so
 * that shared layers run once, and each session's inputs and outputs checked against the metadata. Detector
 * entries (a model without our metadata, such as BlazeFace) are sha256-checked and opened as sessions of their own.
 *
 * What differs per runtime comes in from the caller: the files (`ModelSource.readFile`: Node reads a folder or a
 * package, the page fetches from its origin) and the sessions (`ModelRuntime`: onnxruntime-node in
 * node-shared/onnxruntime-node.ts, onnxruntime-web in web-demo/src/browser/runtime.ts).
 *
 * Pure TypeScript with no Node imports: it bundles for the browser as it is.
 */
import { TASKS, type Task } from './labels.ts';
import { mergeModels, ModelMergeError } from './merge-models.ts';
import {
  isDetectorEntry,
  outputMismatch,
  readModelMetadata,
  validateModelManifest,
  type DetectorInputSpec,
  type DetectorManifestEntry,
  type ModelManifest,
  type ModelMetadata,
} from './metadata.ts';
import { groupByInputSpec, PREPROCESSING_VERSION, type InputSpec } from './preprocess.ts';
import { taskPrediction, type TaskPrediction } from './prediction.ts';
import { resizedDetectorGraphs } from './face/detector-resize.ts';
import { detectorProblem } from './face/photo.ts';

export const MANIFEST_FILE = 'manifest.json';

// ---------------------------------------------------------------------------------------------
// The runtime adapter: what each onnxruntime implements.

/** A tensor's name, element type and shape as the model declares it (a string for a symbolic dimension). */
export interface TensorInfo {
  name: string;
  type: string;
  shape: (number | string)[];
}

export interface FloatTensor {
  data: Float32Array;
  dims: readonly number[];
}

/** An open model; its inputs and outputs are read from the runtime, never from constants. */
export interface Session {
  readonly inputs: readonly TensorInfo[];
  readonly outputs: readonly TensorInfo[];
}

/** What a runtime gives the loader: sessions from model bytes, runs on float32 tensors, and release. */
export interface ModelRuntime<S extends Session = Session> {
  createSession(modelBytes: Uint8Array): Promise<S>;
  /** Runs the model on float32 inputs and returns every output as float32. */
  run(session: S, inputs: Record<string, FloatTensor>): Promise<Record<string, FloatTensor>>;
  releaseSession(session: S): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// What to load, and where the bytes come from.

/** A model folder that cannot be used as it is; the message says which file and what to do. */
export class ModelLoadError extends Error {
  override name = 'ModelLoadError';
}

/** A classifier to load: a manifest entry, or (a server folder without a manifest) a file with no sha256 to check. */
export interface ClassifierToLoad {
  kind?: 'classifier';
  task: Task;
  file: string;
  sha256?: string;
}

export type ModelToLoad = ClassifierToLoad | DetectorManifestEntry;

/** Where the files come from; the caller knows how to reach them. */
export interface ModelSource {
  /** the manifest as messages name it: a path in Node, a URL path in the page */
  manifestPath: string;
  /** an entry's file as messages name it */
  pathOf(entry: ModelToLoad): string;
  /** an entry's bytes; a ModelLoadError it throws is passed on as it is, any other error is reported as unreadable */
  readFile(entry: ModelToLoad): Promise<Uint8Array>;
}

/** Where the loader reports what it decided (merging or not); the server's logger, or the page's console. */
export interface LoadLog {
  info(message: string): void;
  warn(message: string): void;
}

/** The manifest's text parsed and checked: one classifier per task, detectors with distinct names. */
export function parseManifest(text: string, manifestPath: string): ModelManifest {
  let manifest: ModelManifest;
  try {
    manifest = validateModelManifest(JSON.parse(text), manifestPath);
  } catch (error) {
    throw new ModelLoadError(`${manifestPath} is not a valid manifest: ${(error as Error).message}`);
  }
  if (manifest.models.length === 0) throw new ModelLoadError(`${manifestPath} lists no models`);
  const tasks = manifest.models.flatMap((entry) => (isDetectorEntry(entry) ? [] : [entry.task]));
  const twice = tasks.find((task, i) => tasks.indexOf(task) !== i);
  if (twice !== undefined) throw new ModelLoadError(`${manifestPath} lists two ${twice} models; expected one per task`);
  const detectors = manifest.models.flatMap((entry) => (isDetectorEntry(entry) ? [entry.name] : []));
  const named = detectors.find((name, i) => detectors.indexOf(name) !== i);
  if (named !== undefined) throw new ModelLoadError(`${manifestPath} lists two detectors named "${named}"; give each its own name`);
  return manifest;
}

// ---------------------------------------------------------------------------------------------
// Reading and checking the files.

export interface CheckedClassifier {
  task: Task;
  file: string;
  /** as messages name it */
  path: string;
  bytes: Uint8Array;
  sha256: string;
  metadata: ModelMetadata;
}

export interface CheckedDetector {
  entry: DetectorManifestEntry;
  path: string;
  bytes: Uint8Array;
  sha256: string;
}

/** The files read and checked, not yet opened: the server picks its execution provider from them. */
export interface CheckedModels {
  manifestPath: string;
  /** in the usual task order, whatever the manifest's */
  classifiers: CheckedClassifier[];
  detectors: CheckedDetector[];
}

/** Lowercase hex sha256, through Web Crypto (in browsers and in Node 20). */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await globalThis.crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** What to do about a file that cannot be read, or whose sha256 is not the manifest's. */
interface Advice {
  unreadable: string;
  changed: string;
}

const CLASSIFIER_ADVICE: Advice = {
  unreadable: 'export the models again with `npm run export`',
  changed: 'the file changed after export; export the models again',
};
const DETECTOR_ADVICE: Advice = {
  unreadable: 'install the package its manifest entry names (`npm ci`) or correct the entry',
  changed: 'the file is not the one the manifest entry was written for; install the package version it was written for or correct the entry',
};

/** An entry's bytes and sha256, refused where the manifest gives another sha256. */
async function readChecked(source: ModelSource, entry: ModelToLoad, advice: Advice): Promise<{ path: string; bytes: Uint8Array; sha256: string }> {
  const path = source.pathOf(entry);
  let bytes: Uint8Array;
  try {
    bytes = await source.readFile(entry);
  } catch (error) {
    if (error instanceof ModelLoadError) throw error;
    // A Node error's code (ENOENT) says it all; its message repeats the path.
    const code = (error as { code?: unknown }).code;
    throw new ModelLoadError(`Cannot read ${path} (${typeof code === 'string' ? code : (error as Error).message}); ${advice.unreadable}`);
  }
  const digest = await sha256Hex(bytes);
  if (entry.sha256 !== undefined && digest !== entry.sha256) {
    throw new ModelLoadError(`${path} has sha256 ${digest}, but ${MANIFEST_FILE} says ${entry.sha256}: ${advice.changed}`);
  }
  return { path, bytes, sha256: digest };
}

async function checkClassifier(source: ModelSource, entry: ClassifierToLoad): Promise<CheckedClassifier> {
  const { path, bytes, sha256 } = await readChecked(source, entry, CLASSIFIER_ADVICE);
  let metadata: ModelMetadata;
  try {
    metadata = readModelMetadata(bytes);
  } catch (error) {
    throw new ModelLoadError(`${path}: ${(error as Error).message}`);
  }
  if (metadata.task !== entry.task) throw new ModelLoadError(`${path} is a ${metadata.task} model, but ${MANIFEST_FILE} lists it as ${entry.task}`);
  if (metadata.preprocessingVersion !== PREPROCESSING_VERSION) {
    throw new ModelLoadError(
      `${path} was trained with preprocessing version ${metadata.preprocessingVersion}, but this code preprocesses with version ${PREPROCESSING_VERSION}; export a model trained with the current preprocessing`,
    );
  }
  return { task: entry.task, file: entry.file, path, bytes, sha256, metadata };
}

/** Reads every entry's file and checks it (sha256; for classifiers also metadata, task and preprocessing version). */
export async function checkModelFiles(source: ModelSource, entries: readonly ModelToLoad[]): Promise<CheckedModels> {
  const detectorEntries = entries.filter(isDetectorEntry);
  const classifierEntries = entries.filter((entry): entry is ClassifierToLoad => !isDetectorEntry(entry));
  const [classifiers, detectors] = await Promise.all([
    Promise.all(classifierEntries.map((entry) => checkClassifier(source, entry))),
    Promise.all(detectorEntries.map(async (entry): Promise<CheckedDetector> => ({ entry, ...(await readChecked(source, entry, DETECTOR_ADVICE)) }))),
  ]);
  classifiers.sort((a, b) => TASKS.indexOf(a.task) - TASKS.indexOf(b.task));
  return { manifestPath: source.manifestPath, classifiers, detectors };
}

// ---------------------------------------------------------------------------------------------
// Opening the sessions.

/** A classifier ready to answer, with its tensors as onnxruntime declares them under the model's own names. */
export interface LoadedClassifier extends Omit<CheckedClassifier, 'bytes'> {
  size: number;
  onnx: { inputs: TensorInfo[]; outputs: TensorInfo[] };
}

/** One session and the classifiers it runs: one, or several merged into one graph. */
export interface ClassifierGraph<S extends Session = Session> {
  session: S;
  tasks: Task[];
  inputSpec: InputSpec;
  /** index of the graph's input spec in `ModelSet.specs` (each image is preprocessed once per spec) */
  specIndex: number;
  inputName: string;
  /** whether the batch dimension is free; a graph fixed at batch 1 runs image by image */
  batchable: boolean;
  /** each classifier it runs, with its output names -> the session's */
  members: { model: LoadedClassifier; outputs: ReadonlyMap<string, string> }[];
  /** for a merged graph: its nodes, and the separate graphs' together */
  nodes?: { separate: number; merged: number };
  /** each task's prediction for batch row `row`, from the session's outputs */
  interpret(outputs: Record<string, FloatTensor>, row: number): Record<string, TaskPrediction>;
}

/** A detector's session; its input name and layout are read from the session. */
export interface LoadedDetector<S extends Session = Session> {
  name: string;
  file: string;
  path: string;
  sha256: string;
  size: number;
  input: DetectorInputSpec;
  inputName: string;
  /** where the channels are in the session's input: last (NHWC) or after the batch (NCHW) */
  layout: 'nhwc' | 'nchw';
  /** the session at the detector's own input side */
  session: S;
  /** a session per side it is run at (`detectorSides`: its own, and a face crop's), `session` among them */
  sessionsBySide: ReadonlyMap<number, S>;
}

export interface ModelSet<S extends Session = Session> {
  classifiers: LoadedClassifier[];
  graphs: ClassifierGraph<S>[];
  /** the classifiers' distinct input specs, in `specIndex` order */
  specs: InputSpec[];
  detectors: LoadedDetector<S>[];
  /** Releases every session. */
  release(): Promise<void>;
}

export interface OpenOptions {
  /** merge classifiers that read the same input into one graph where they can be; false: a session per model */
  merge: boolean;
  log: LoadLog;
}

/** The image input's name and whether its batch dimension is free, refused where it disagrees with `spec`. */
function checkImageInput(file: string, session: Session, spec: InputSpec): { inputName: string; batchable: boolean } {
  if (session.inputs.length !== 1) throw new ModelLoadError(`${file} has ${session.inputs.length} inputs; expected one image input`);
  const [input] = session.inputs;
  const expected = [spec.height, spec.width, spec.channels];
  const [batch, ...rest] = input.shape;
  if (input.type !== 'float32' || input.shape.length !== 4 || rest.some((dim, i) => typeof dim === 'number' && dim !== expected[i])) {
    throw new ModelLoadError(`${file}: input "${input.name}" is ${input.type} [${input.shape.join(', ')}]; its metadata says float32 [N, ${expected.join(', ')}]`);
  }
  if (typeof batch === 'number' && batch !== 1) throw new ModelLoadError(`${file}: input "${input.name}" has a fixed batch size of ${batch}; expected 1 or a free dimension`);
  return { inputName: input.name, batchable: typeof batch !== 'number' };
}

/** A classifier's prediction for one batch row, reading each output its metadata describes under the session's name for it. */
function makeInterpreter(path: string, sessionName: ReadonlyMap<string, string>, metadata: ModelMetadata): (outputs: Record<string, FloatTensor>, row: number) => TaskPrediction {
  const problem = outputMismatch(path, sessionName, metadata);
  if (problem !== undefined) throw new ModelLoadError(problem);
  const rowOf = (tensor: FloatTensor, row: number): Float32Array => {
    const size = tensor.dims.slice(1).reduce((a, b) => a * b, 1);
    return tensor.data.subarray(row * size, (row + 1) * size);
  };
  return (outputs, row) => {
    const rows: Record<string, Float32Array> = {};
    for (const output of metadata.outputs) rows[output.name] = rowOf(outputs[sessionName.get(output.name) as string], row);
    return taskPrediction(metadata, rows);
  };
}

function loaded(model: CheckedClassifier, onnx: LoadedClassifier['onnx']): LoadedClassifier {
  const { bytes, ...rest } = model;
  return { ...rest, size: bytes.length, onnx };
}

type GraphWithoutSpec<S extends Session> = Omit<ClassifierGraph<S>, 'specIndex'>;

/** A graph from its session and members, answering for every member's task. */
function graphOf<S extends Session>(session: S, spec: InputSpec, input: { inputName: string; batchable: boolean }, members: ClassifierGraph<S>['members']): GraphWithoutSpec<S> {
  const interpreters = members.map(({ model, outputs }) => ({ task: model.task, interpret: makeInterpreter(model.path, outputs, model.metadata) }));
  return {
    session,
    tasks: members.map((m) => m.model.task),
    inputSpec: spec,
    ...input,
    members,
    interpret: (outputs, row) => Object.fromEntries(interpreters.map((m) => [m.task, m.interpret(outputs, row)])),
  };
}

/**
 * One session for `group` merged into one graph, or undefined where they cannot be merged or the runtime will not
 * run the merged graph: the caller then opens a session per model, which reports any fault of the models
 * themselves. A failed merge never stops loading.
 */
async function openMerged<S extends Session>(group: readonly CheckedClassifier[], runtime: ModelRuntime<S>, log: LoadLog): Promise<GraphWithoutSpec<S> | undefined> {
  const files = group.map((m) => m.file).join(', ');
  let session: S | undefined;
  try {
    const merged = mergeModels(group.map((model) => ({ key: model.task, bytes: model.bytes })));
    session = await runtime.createSession(merged.bytes);
    const opened = session;
    const input = checkImageInput(group.map((m) => m.path).join(' + '), opened, group[0].metadata.input);
    const members = group.map((model) => {
      const names = new Map(Object.entries(merged.outputNames[model.task]));
      const fromSession = new Map([...names].map(([own, inSession]) => [inSession, own]));
      // Each model is reported under its own names, not the merged graph's.
      const onnx = {
        inputs: opened.inputs.map((i) => ({ ...i, name: merged.inputNames[model.task] })),
        outputs: opened.outputs.filter((o) => fromSession.has(o.name)).map((o) => ({ ...o, name: fromSession.get(o.name) as string })),
      };
      return { model: loaded(model, onnx), outputs: names };
    });
    const graph = { ...graphOf(opened, group[0].metadata.input, input, members), nodes: merged.nodes };
    log.info(`${graph.tasks.join(', ')}: one merged graph, ${merged.nodes.merged} nodes where the separate graphs have ${merged.nodes.separate}`);
    return graph;
  } catch (error) {
    if (session !== undefined) await runtime.releaseSession(session);
    // Models that cannot merge are normal; a merged graph that will not load is a fault of merging, worth a warning.
    if (error instanceof ModelMergeError) log.info(`${files} run as separate graphs: ${error.message}`);
    else log.warn(`${files} run as separate graphs: the merged graph failed to load (${(error as Error).message.split('\n')[0]})`);
    return undefined;
  }
}

/** Sessions for `group` (classifiers with one input spec): one merged graph where they can be merged, else one each. */
async function openGroup<S extends Session>(group: readonly CheckedClassifier[], runtime: ModelRuntime<S>, options: OpenOptions): Promise<GraphWithoutSpec<S>[]> {
  if (options.merge && group.length > 1) {
    const merged = await openMerged(group, runtime, options.log);
    if (merged !== undefined) return [merged];
  }
  return settleAll(
    group.map(async (model) => {
      const session = await runtime.createSession(model.bytes);
      const input = checkImageInput(model.path, session, model.metadata.input);
      const outputs = new Map(session.outputs.map((o) => [o.name, o.name]));
      const member = { model: loaded(model, { inputs: [...session.inputs], outputs: [...session.outputs] }), outputs };
      return graphOf(session, model.metadata.input, input, [member]);
    }),
  );
}

/** Where the channels are in a detector's input, refused where its shape disagrees with the manifest's input. */
function detectorLayout(path: string, session: Session, spec: DetectorInputSpec): { inputName: string; layout: LoadedDetector['layout'] } {
  if (session.inputs.length !== 1) throw new ModelLoadError(`${path} has ${session.inputs.length} inputs; expected one image input`);
  const [input] = session.inputs;
  const matches = (expected: number[]): boolean => input.shape.slice(1).every((dim, i) => typeof dim !== 'number' || dim === expected[i]);
  const layouts = { nhwc: [spec.height, spec.width, spec.channels], nchw: [spec.channels, spec.height, spec.width] } as const;
  const layout = (['nhwc', 'nchw'] as const).find((name) => matches([...layouts[name]]));
  if (input.type !== 'float32' || input.shape.length !== 4 || layout === undefined) {
    throw new ModelLoadError(
      `${path}: input "${input.name}" is ${input.type} [${input.shape.join(', ')}]; ${MANIFEST_FILE} says float32 [N, ${layouts.nhwc.join(', ')}] (or [N, ${layouts.nchw.join(', ')}]); correct the entry's input`,
    );
  }
  return { inputName: input.name, layout };
}

async function openDetector<S extends Session>(detector: CheckedDetector, runtime: ModelRuntime<S>): Promise<LoadedDetector<S>> {
  // A detector refused here is released with the rest by openModelSet.
  const session = await runtime.createSession(detector.bytes);
  const { entry, path, sha256, bytes } = detector;
  const layout = detectorLayout(path, session, entry.input);
  // Checked here, for the server and the page alike: a detector the face steps cannot run stops the load.
  const problem = detectorProblem({ name: entry.name, file: entry.file, layout: layout.layout, input: entry.input });
  if (problem !== undefined) throw new ModelLoadError(problem);
  const sessionsBySide = new Map<number, S>([[entry.input.height, session]]);
  for (const [side, graph] of resizedDetectorGraphs(bytes, entry.input.height)) sessionsBySide.set(side, await runtime.createSession(graph));
  return { name: entry.name, file: entry.file, path, sha256, size: bytes.length, input: entry.input, ...layout, session, sessionsBySide };
}

/**
 * Every value once all of `promises` have settled, or the first (in order) of their errors: unlike Promise.all, no
 * work is still opening sessions when it rejects, so the caller can release all that was opened.
 */
async function settleAll<T>(promises: readonly Promise<T>[]): Promise<T[]> {
  const results = await Promise.allSettled(promises);
  const failed = results.find((result) => result.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
  return results.map((result) => (result as PromiseFulfilledResult<T>).value);
}

/** `runtime`, keeping account of the sessions opened through it and not yet released. */
function accountedRuntime<S extends Session>(runtime: ModelRuntime<S>): { runtime: ModelRuntime<S>; open: Set<S> } {
  const open = new Set<S>();
  return {
    open,
    runtime: {
      createSession: async (modelBytes) => {
        const session = await runtime.createSession(modelBytes);
        open.add(session);
        return session;
      },
      run: (session, inputs) => runtime.run(session, inputs),
      releaseSession: async (session) => {
        open.delete(session);
        await runtime.releaseSession(session);
      },
    },
  };
}

/**
 * Opens the checked models' sessions in `runtime`. If any fails to open or to pass its checks, every session it
 * opened is released (a failed reload must not leak native sessions) and the first error is thrown.
 */
export async function openModelSet<S extends Session>(checked: CheckedModels, runtime: ModelRuntime<S>, options: OpenOptions): Promise<ModelSet<S>> {
  const accounted = accountedRuntime(runtime);
  try {
    // Each distinct input spec is one group: its models may merge, and each image is preprocessed once for it.
    const groups = groupByInputSpec(checked.classifiers, (model) => model.metadata.input);
    const opened = await settleAll(groups.map((group) => openGroup(group.items, accounted.runtime, options)));
    const graphs = opened.flatMap((own, specIndex) => own.map((graph) => ({ ...graph, specIndex })));
    const detectors = await settleAll(checked.detectors.map((detector) => openDetector(detector, accounted.runtime)));
    const byTask = new Map(graphs.flatMap((graph) => graph.members.map((m) => [m.model.task, m.model] as const)));
    return {
      classifiers: checked.classifiers.map((model) => byTask.get(model.task) as LoadedClassifier),
      graphs,
      specs: groups.map((group) => group.spec),
      detectors,
      release: async () => {
        const sessions = [...graphs.map((graph) => graph.session), ...detectors.flatMap((detector) => [...detector.sessionsBySide.values()])];
        for (const session of sessions) await runtime.releaseSession(session);
      },
    };
  } catch (error) {
    for (const session of accounted.open) {
      // The load's own error is the one to report; a session that will not release is only worth a warning.
      await runtime.releaseSession(session).catch((releaseError: unknown) => options.log.warn(`releasing a session after a failed load failed: ${(releaseError as Error).message}`));
    }
    throw error;
  }
}

/**
 * Each face's answer per task through every graph of the set: `inputs[face][specIndex]` is the face scaled for each
 * of the set's input specs. One run per graph for all the faces, or face by face where a graph is fixed at batch 1.
 */
export async function answerFaces<S extends Session>(
  set: { readonly graphs: readonly ClassifierGraph<S>[] },
  run: ModelRuntime<S>['run'],
  inputs: readonly (readonly Float32Array[])[],
): Promise<Record<Task, TaskPrediction>[]> {
  const answers = inputs.map(() => ({}) as Record<Task, TaskPrediction>);
  for (const graph of set.graphs) {
    const { height, width, channels } = graph.inputSpec;
    const size = height * width * channels;
    const perRun = graph.batchable ? inputs.length : 1;
    for (let start = 0; start < inputs.length; start += perRun) {
      const count = Math.min(perRun, inputs.length - start);
      const data = new Float32Array(count * size);
      for (let row = 0; row < count; row++) data.set(inputs[start + row][graph.specIndex], row * size);
      const outputs = await run(graph.session, { [graph.inputName]: { data, dims: [count, height, width, channels] } });
      for (let row = 0; row < count; row++) Object.assign(answers[start + row], graph.interpret(outputs, row));
    }
  }
  return answers;
}

/** Reads, checks and opens every entry: `checkModelFiles` then `openModelSet`. */
export async function loadModelSet<S extends Session>(source: ModelSource, entries: readonly ModelToLoad[], runtime: ModelRuntime<S>, options: OpenOptions): Promise<ModelSet<S>> {
  return openModelSet(await checkModelFiles(source, entries), runtime, options);
}
