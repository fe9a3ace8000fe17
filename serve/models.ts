/**
 * Loading the shipped models: the manifest's files, checked against their sha256, with the metadata each
 * carries (task, labels, input spec, what each output means), on the execution provider the config asks for.
 * Input and output shapes are read from the session and checked against the metadata. Models that read the same
 * input are merged into one graph (contract/merge-models.ts) unless the config says not to, so that layers
 * they share, such as the multitask preset's trunk, are computed once per image.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { TASKS } from '../contract/labels.ts';
import { outputMismatch, readModelMetadata, validateModelManifest, type ModelManifest, type ModelMetadata, type OutputSpec } from '../contract/metadata.ts';
import { groupByInputSpec, PREPROCESSING_VERSION, type InputSpec } from '../contract/preprocess.ts';
import type { Device, MergeMode } from './config.ts';
import type { Logger } from './log.ts';
import { mergeModels, ModelMergeError } from '../contract/merge-models.ts';
import { taskPrediction, type TaskPrediction } from '../contract/prediction.ts';
import { createSession, missingCudaBinaries, releaseSession, RUNTIME_NAME, type FloatTensor, type Provider, type Session, type TensorInfo } from './runtime.ts';

export const MANIFEST_FILE = 'manifest.json';

/** One onnxruntime session ready to serve, and the tasks it answers: one model's, or several merged into one graph. */
export interface ServedGraph {
  tasks: string[];
  inputSpec: InputSpec;
  /** Index of the graph's input spec among the distinct specs (each image is preprocessed once per spec). */
  specIndex: number;
  inputName: string;
  /** Whether the batch dimension is free; a graph fixed at batch 1 runs image by image. */
  batchable: boolean;
  session: Session;
  /** Each task's prediction for batch row `row`, from the session's outputs. */
  interpret(outputs: Record<string, FloatTensor>, row: number): Record<string, TaskPrediction>;
}

/** What GET /v1/models answers. */
export interface ModelsReport {
  provider: Provider;
  providerNote?: string;
  runtime: string;
  models: {
    task: string;
    file: string;
    sha256: string;
    bytes: number;
    labels: string[];
    input: InputSpec;
    outputs: OutputSpec[];
    onnx: { inputs: readonly TensorInfo[]; outputs: readonly TensorInfo[] };
    metadata: ModelMetadata;
  }[];
  /** The onnxruntime sessions, and for a merged one how many nodes merging saved. */
  sessions: { tasks: string[]; nodes?: { separate: number; merged: number } }[];
}

export interface LoadedModels {
  graphs: ServedGraph[];
  /** The distinct input specs, in `specIndex` order. */
  specs: InputSpec[];
  report: ModelsReport;
}

export interface LoadOptions {
  device: Device;
  /** auto: merge models that read the same input into one graph where they can be; off: a session per model */
  merge: MergeMode;
  threads: number;
  log: Logger;
}

/** A model folder that cannot be served as it is; the message says what to do. */
export class ModelLoadError extends Error {
  override name = 'ModelLoadError';
}

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/** The files to load with their expected sha256: the manifest's, or (without one) whichever <task>.onnx exist. */
async function listModelFiles(dir: string, log: Logger): Promise<{ task: string; file: string; sha256?: string; bytes?: number }[]> {
  const manifestPath = join(dir, MANIFEST_FILE);
  if (existsSync(manifestPath)) {
    let manifest: ModelManifest;
    try {
      manifest = validateModelManifest(JSON.parse(await readFile(manifestPath, 'utf8')), manifestPath);
    } catch (error) {
      throw new ModelLoadError(`${manifestPath} is not a valid manifest: ${(error as Error).message}`);
    }
    if (manifest.models.length === 0) throw new ModelLoadError(`${manifestPath} lists no models`);
    const tasks = manifest.models.map((entry) => entry.task);
    const twice = tasks.find((task, i) => tasks.indexOf(task) !== i);
    if (twice !== undefined) throw new ModelLoadError(`${manifestPath} lists two ${twice} models; expected one per task`);
    return manifest.models.map((entry) => ({ task: entry.task, file: entry.file, sha256: entry.sha256, bytes: entry.bytes }));
  }
  const found = TASKS.filter((task) => existsSync(join(dir, `${task}.onnx`))).map((task) => ({ task, file: `${task}.onnx` }));
  if (found.length === 0) {
    throw new ModelLoadError(
      `No models in ${dir}: expected ${MANIFEST_FILE} and ${TASKS.map((t) => `${t}.onnx`).join(', ')}. ` +
        'Export them with `npm run export`, or point --models (SERVE_MODELS_DIR) at a folder that holds them.',
    );
  }
  log.warn(`${manifestPath} is missing: serving ${found.map((f) => f.file).join(', ')} without checking their sha256`);
  return found;
}

/** The provider to use: cpu as asked; cuda or a start-up error; auto = cuda where it works, else cpu and why. */
async function chooseProvider(device: Device, probeModel: Uint8Array, threads: number): Promise<{ provider: Provider; note?: string }> {
  if (device === 'cpu') return { provider: 'cpu' };
  const howToInstall = 'install the CUDA provider with `npm run setup:cuda` (it needs CUDA 12 and cuDNN 9 on the host)';
  let why = missingCudaBinaries();
  if (why === undefined) {
    try {
      await releaseSession(await createSession(probeModel, { provider: 'cuda', threads }));
      return { provider: 'cuda' };
    } catch (error) {
      why = `the CUDA provider failed to start (${(error as Error).message.split('\n')[0]})`;
    }
  }
  if (device === 'cuda') throw new ModelLoadError(`--device cuda: ${why}; ${howToInstall}, or run with --device auto or cpu`);
  return { provider: 'cpu', note: `CUDA is not used because ${why}; to use a GPU, ${howToInstall}` };
}

function checkInput(file: string, session: Session, spec: InputSpec): { inputName: string; batchable: boolean } {
  if (session.inputs.length !== 1) throw new ModelLoadError(`${file} has ${session.inputs.length} inputs; expected one image input`);
  const [input] = session.inputs;
  const expected = [spec.height, spec.width, spec.channels];
  const [batch, ...rest] = input.shape;
  if (input.type !== 'float32' || input.shape.length !== 4 || rest.some((dim, i) => typeof dim === 'number' && dim !== expected[i])) {
    throw new ModelLoadError(
      `${file}: input "${input.name}" is ${input.type} [${input.shape.join(', ')}]; its metadata says float32 [N, ${expected.join(', ')}]`,
    );
  }
  if (typeof batch === 'number' && batch !== 1) throw new ModelLoadError(`${file}: input "${input.name}" has a fixed batch size of ${batch}; expected 1 or a free dimension`);
  return { inputName: input.name, batchable: typeof batch !== 'number' };
}

/**
 * A model's prediction for one batch row, reading each output its metadata describes from the session output
 * `sessionName` maps it to (the same name, unless the model was merged into one graph with others).
 */
function makeInterpreter(file: string, sessionName: ReadonlyMap<string, string>, metadata: ModelMetadata): (outputs: Record<string, FloatTensor>, row: number) => TaskPrediction {
  const problem = outputMismatch(file, sessionName, metadata);
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

interface ModelFile {
  path: string;
  file: string;
  bytes: Uint8Array;
  digest: string;
  metadata: ModelMetadata;
}

type OpenedGroup = { graphs: Omit<ServedGraph, 'specIndex'>[]; onnx: Map<ModelFile, { inputs: TensorInfo[]; outputs: TensorInfo[] }>; sessions: ModelsReport['sessions'] };

/**
 * One session for the models of `group` merged into one graph, or undefined where they cannot be merged or
 * onnxruntime will not run the merged graph: the caller then opens a session per model, which reports any
 * fault of the models themselves. A failed merge never stops the server.
 */
async function openMerged(group: readonly ModelFile[], options: LoadOptions, open: (bytes: Uint8Array) => Promise<Session>): Promise<OpenedGroup | undefined> {
  const files = group.map((m) => m.file).join(', ');
  let session: Session | undefined;
  try {
    const merged = mergeModels(group.map((model) => ({ key: model.metadata.task, bytes: model.bytes })));
    session = await open(merged.bytes);
    const opened = session;
    const { inputName, batchable } = checkInput(group.map((m) => m.path).join(' + '), opened, group[0].metadata.input);
    const onnx = new Map<ModelFile, { inputs: TensorInfo[]; outputs: TensorInfo[] }>();
    const interpreters = group.map((model) => {
      const task = model.metadata.task;
      const names = new Map(Object.entries(merged.outputNames[task]));
      const fromSession = new Map([...names].map(([own, inSession]) => [inSession, own]));
      // Each model is reported under its own names, not the merged graph's.
      onnx.set(model, {
        inputs: opened.inputs.map((i) => ({ ...i, name: merged.inputNames[task] })),
        outputs: opened.outputs.filter((o) => fromSession.has(o.name)).map((o) => ({ ...o, name: fromSession.get(o.name) as string })),
      });
      return { task, interpret: makeInterpreter(model.path, names, model.metadata) };
    });
    const tasks = group.map((m) => m.metadata.task);
    options.log.info(`${tasks.join(', ')}: one merged graph, ${merged.nodes.merged} nodes where the separate graphs have ${merged.nodes.separate}`);
    return {
      graphs: [{ tasks, inputSpec: group[0].metadata.input, inputName, batchable, session: opened, interpret: (outputs, row) => Object.fromEntries(interpreters.map((m) => [m.task, m.interpret(outputs, row)])) }],
      onnx,
      sessions: [{ tasks, nodes: merged.nodes }],
    };
  } catch (error) {
    if (session !== undefined) await releaseSession(session);
    // Models that cannot merge are normal; a merged graph that will not load is a fault of merging, worth a warning.
    if (error instanceof ModelMergeError) options.log.info(`${files} run as separate graphs: ${error.message}`);
    else options.log.warn(`${files} run as separate graphs: the merged graph failed to load (${(error as Error).message.split('\n')[0]})`);
    return undefined;
  }
}

/** Sessions for `group` (models with one input spec): one merged graph where they can be merged, else one each. */
async function openSessions(group: readonly ModelFile[], options: LoadOptions, provider: Provider): Promise<OpenedGroup> {
  const open = (bytes: Uint8Array) => createSession(bytes, { provider, threads: options.threads });
  if (options.merge === 'auto' && group.length > 1) {
    const merged = await openMerged(group, options, open);
    if (merged !== undefined) return merged;
  }
  const onnx = new Map<ModelFile, { inputs: TensorInfo[]; outputs: TensorInfo[] }>();
  const graphs = await Promise.all(
    group.map(async (model): Promise<Omit<ServedGraph, 'specIndex'>> => {
      const session = await open(model.bytes);
      const { inputName, batchable } = checkInput(model.path, session, model.metadata.input);
      const interpret = makeInterpreter(model.path, new Map(session.outputs.map((o) => [o.name, o.name])), model.metadata);
      onnx.set(model, { inputs: [...session.inputs], outputs: [...session.outputs] });
      const task = model.metadata.task;
      return { tasks: [task], inputSpec: model.metadata.input, inputName, batchable, session, interpret: (outputs, row) => ({ [task]: interpret(outputs, row) }) };
    }),
  );
  return { graphs, onnx, sessions: group.map((m) => ({ tasks: [m.metadata.task] })) };
}

export async function loadModels(dir: string, options: LoadOptions): Promise<LoadedModels> {
  const entries = await listModelFiles(dir, options.log);
  const files = await Promise.all(
    entries.map(async (entry) => {
      const path = join(dir, entry.file);
      let bytes: Uint8Array;
      try {
        const buffer = await readFile(path);
        bytes = new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
      } catch (error) {
        throw new ModelLoadError(`Cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}); export the models again with \`npm run export\``);
      }
      const digest = sha256(bytes);
      if (entry.sha256 !== undefined && digest !== entry.sha256) {
        throw new ModelLoadError(`${path} has sha256 ${digest}, but ${MANIFEST_FILE} says ${entry.sha256}: the file changed after export; export the models again`);
      }
      let metadata: ModelMetadata;
      try {
        metadata = readModelMetadata(bytes);
      } catch (error) {
        throw new ModelLoadError(`${path}: ${(error as Error).message}`);
      }
      if (metadata.task !== entry.task) throw new ModelLoadError(`${path} is a ${metadata.task} model, but ${MANIFEST_FILE} lists it as ${entry.task}`);
      if (metadata.preprocessingVersion !== PREPROCESSING_VERSION) {
        throw new ModelLoadError(
          `${path} was trained with preprocessing version ${metadata.preprocessingVersion}, but this server preprocesses with version ${PREPROCESSING_VERSION}; export a model trained with the current preprocessing`,
        );
      }
      return { path, file: basename(path), bytes, digest, metadata } satisfies ModelFile;
    }),
  );

  const { provider, note } = await chooseProvider(options.device, files[0].bytes, options.threads);
  if (note !== undefined) options.log.info(`device auto: using CPU. ${note}`);
  options.log.info(`execution provider: ${provider} (${RUNTIME_NAME})`);

  // Each distinct input spec is one group: its models may merge, and each image is preprocessed once for it.
  const groups = groupByInputSpec(files, (file) => file.metadata.input);
  const specs = groups.map((group) => group.spec);
  const opened = await Promise.all(groups.map((group) => openSessions(group.items, options, provider)));
  const graphs = opened.flatMap(({ graphs: own }, specIndex) => own.map((graph) => ({ ...graph, specIndex })));
  const onnx = new Map(opened.flatMap((o) => [...o.onnx]));

  const report: ModelsReport = {
    provider,
    ...(note === undefined ? {} : { providerNote: note }),
    runtime: RUNTIME_NAME,
    models: files.map((model) => ({
      task: model.metadata.task,
      file: model.file,
      sha256: model.digest,
      bytes: model.bytes.length,
      labels: model.metadata.labels,
      input: model.metadata.input,
      outputs: model.metadata.outputs,
      onnx: onnx.get(model) as { inputs: TensorInfo[]; outputs: TensorInfo[] },
      metadata: model.metadata,
    })),
    sessions: opened.flatMap((o) => o.sessions),
  };
  return { graphs, specs, report };
}
