/**
 * Loading the shipped models for the server: contract/model-set.ts reads and checks the manifest's files and
 * merges the models that read the same input into one graph (unless the config says not to), in onnxruntime-node
 * on the execution provider the config asks for. What is the server's own: the provider choice (logged), a
 * folder without a manifest served unchecked, and what GET /v1/models reports.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TASKS } from '../contract/labels.ts';
import type { ModelMetadata, OutputSpec } from '../contract/metadata.ts';
import {
  checkModelFiles,
  MANIFEST_FILE,
  ModelLoadError,
  openModelSet,
  parseManifest,
  sha256Hex,
  type CheckedModels,
  type ClassifierGraph,
  type LoadedDetector,
  type ModelToLoad,
  type TensorInfo,
} from '../contract/model-set.ts';
import type { InputSpec } from '../contract/preprocess.ts';
import { folderModelSource } from '../node-shared/model-files.ts';
import { createSession, missingCudaBinaries, nodeRuntime, releaseSession, RUNTIME_NAME, type NodeSession, type Provider } from '../node-shared/onnxruntime-node.ts';
import type { Device, MergeMode } from './config.ts';
import type { Logger } from './log.ts';
import { MANIFEST_CONTENT_TYPE, ONNX_CONTENT_TYPE, servedFile, type ServedFile } from './model-files.ts';

export { MANIFEST_FILE, ModelLoadError } from '../contract/model-set.ts';

/** One onnxruntime session ready to serve, and the tasks it answers: one model's, or several merged into one graph. */
export type ServedGraph = ClassifierGraph<NodeSession>;

/** A face detector, with the bytes it was opened from (checked against the manifest) for the decode threads' own sessions. */
export type ServedDetector = LoadedDetector<NodeSession> & { bytes: Uint8Array };

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
  /** what /models/ serves, by file name: the manifest and each model's bytes as loaded and checked */
  files: Map<string, ServedFile>;
  graphs: ServedGraph[];
  /** The distinct input specs, in `specIndex` order. */
  specs: InputSpec[];
  /** the manifest's detectors, each its own session */
  detectors: ServedDetector[];
  report: ModelsReport;
  /** Releases every session. */
  release(): Promise<void>;
}

export interface LoadOptions {
  device: Device;
  /** auto: merge models that read the same input into one graph where they can be; off: a session per model */
  merge: MergeMode;
  threads: number;
  log: Logger;
}

/**
 * The files to load with their expected sha256: the manifest's, or (without one) whichever <task>.onnx exist; with
 * the manifest's bytes, read once, so that the page is served the manifest the models were loaded from.
 */
async function listModelFiles(dir: string, log: Logger): Promise<{ entries: ModelToLoad[]; manifest?: Uint8Array }> {
  const manifestPath = join(dir, MANIFEST_FILE);
  if (existsSync(manifestPath)) {
    const manifest = new Uint8Array(await readFile(manifestPath));
    return { entries: parseManifest(new TextDecoder().decode(manifest), manifestPath).models, manifest };
  }
  const found = TASKS.filter((task) => existsSync(join(dir, `${task}.onnx`))).map((task) => ({ task, file: `${task}.onnx` }));
  if (found.length === 0) {
    throw new ModelLoadError(
      `No models in ${dir}: expected ${MANIFEST_FILE} and ${TASKS.map((t) => `${t}.onnx`).join(', ')}. ` +
        'Export them with `npm run export`, or point --models (SERVE_MODELS_DIR) at a folder that holds them.',
    );
  }
  log.warn(`${manifestPath} is missing: serving ${found.map((f) => f.file).join(', ')} without checking their sha256`);
  return { entries: found };
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

export async function loadModels(dir: string, options: LoadOptions): Promise<LoadedModels> {
  const { entries, manifest } = await listModelFiles(dir, options.log);
  const checked = await checkModelFiles(folderModelSource(dir), entries);
  if (checked.classifiers.length === 0) throw new ModelLoadError(`${checked.manifestPath} lists no classifiers; the server needs at least one (export them with \`npm run export\`)`);
  const { provider, note } = await chooseProvider(options.device, checked.classifiers[0].bytes, options.threads);
  if (note !== undefined) options.log.info(`device auto: using CPU. ${note}`);
  options.log.info(`execution provider: ${provider} (${RUNTIME_NAME})`);
  const runtime = nodeRuntime({ provider, threads: options.threads });
  const set = await openModelSet(checked, runtime, { merge: options.merge === 'auto', log: options.log });

  const report: ModelsReport = {
    provider,
    ...(note === undefined ? {} : { providerNote: note }),
    runtime: RUNTIME_NAME,
    models: set.classifiers.map((model) => ({
      task: model.task,
      file: model.file,
      sha256: model.sha256,
      bytes: model.size,
      labels: model.metadata.labels,
      input: model.metadata.input,
      outputs: model.metadata.outputs,
      onnx: model.onnx,
      metadata: model.metadata,
    })),
    sessions: set.graphs.map((graph) => ({ tasks: graph.tasks, ...(graph.nodes === undefined ? {} : { nodes: graph.nodes }) })),
  };
  let files: Map<string, ServedFile>;
  let detectors: ServedDetector[];
  try {
    files = await servedFiles(checked, manifest);
    detectors = set.detectors.map((detector) => ({ ...detector, bytes: checkedBytes(checked, detector.file) }));
  } catch (error) {
    await set.release();
    throw error;
  }
  return { graphs: set.graphs, specs: set.specs, detectors, report, release: set.release, files };
}

function checkedBytes(checked: CheckedModels, file: string): Uint8Array {
  const found = checked.detectors.find((detector) => detector.entry.file === file);
  if (found === undefined) throw new Error(`The detector ${file} was opened but not among the checked files`);
  return found.bytes;
}

/** The manifest and every model file, as the page will fetch them (models the server did not load are not offered). */
async function servedFiles(checked: CheckedModels, manifest: Uint8Array | undefined): Promise<Map<string, ServedFile>> {
  const files = new Map<string, ServedFile>();
  if (manifest !== undefined) files.set(MANIFEST_FILE, servedFile(manifest, MANIFEST_CONTENT_TYPE, await sha256Hex(manifest)));
  for (const model of checked.classifiers) files.set(model.file, servedFile(model.bytes, ONNX_CONTENT_TYPE, model.sha256));
  for (const detector of checked.detectors) files.set(detector.entry.file, servedFile(detector.bytes, ONNX_CONTENT_TYPE, detector.sha256));
  return files;
}
