/**
 * npm run evaluate -- --model <run folder | task folder | model.onnx | folder of .onnx> --data <folder-or-csv>
 *                     [--split test|all] [--limit N] [--backend B]
 */
import { existsSync, statSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { TASKS, type AgeScheme } from '../../contract/labels.ts';
import type { InputSpec } from '../../contract/preprocess.ts';
import { BACKEND_NAMES, selectBackend } from '../../node-shared/tfjs/select.ts';
import type { Dataset } from '../data/dataset.ts';
import { loadDataset, missingDataMessage } from '../data/load.ts';
import { trainTestSplit } from '../data/split.ts';
import { evaluate, formatEvaluation, formatEvaluationSummary, onnxPredictor, tfjsPredictor, type OutputsInfo, type Predictor } from '../evaluate.ts';
import { loadModel } from '../models/io.ts';
import { defaultDataSource } from '../../node-shared/paths.ts';
import type { TestSplitInfo } from '../train-task.ts';
import { isMain, parseChoice, parsePositiveInt, runCli, UsageError } from '../../node-shared/cli-args.ts';

const USAGE = `Usage: npm run evaluate -- --model PATH [options]

  --model PATH     what to evaluate                                                   (required):
                     a run folder (age/, ethnicity/, gender/ inside) or one task folder of it, or
                     an exported .onnx file, or a folder of them (e.g. models/), run in onnxruntime-node
  --data PATH      a UTKFace folder or a Kaggle age_gender.csv   (default: ../shared/data/utkface)
  --split S        test: only the faces the training run held out for testing (default; an error on data
                     other than the run's, where that split cannot be recovered); all: every face
  --limit N        a fixed random subset of N faces of the data (default: the training run's own)
  --backend B      for tfjs models: ${BACKEND_NAMES.join(', ')} (default: the best one available)`;

/** One model to evaluate, whatever form it comes in. */
interface Candidate {
  name: string;
  info: OutputsInfo & { ageScheme: AgeScheme; input: InputSpec };
  split?: TestSplitInfo;
  predictor(): Promise<{ predict: Predictor; release(): void | Promise<void> }>;
}

async function readJson(file: string): Promise<unknown> {
  return JSON.parse(await readFile(file, 'utf8'));
}

/** A task folder written by training: model/, training-info.json and metrics.json. */
async function tfjsCandidate(folder: string): Promise<Candidate> {
  const info = (await readJson(join(folder, 'training-info.json'))) as Candidate['info'];
  const metrics = existsSync(join(folder, 'metrics.json')) ? ((await readJson(join(folder, 'metrics.json'))) as { split?: TestSplitInfo }) : {};
  return {
    name: folder,
    info,
    split: metrics.split,
    predictor: async () => {
      const model = await loadModel(join(folder, 'model'));
      return {
        predict: tfjsPredictor(model, info.input, info),
        release: () => {
          model.dispose();
        },
      };
    },
  };
}

/** An exported model: everything evaluation needs is in its metadata. */
async function onnxCandidate(file: string): Promise<Candidate> {
  const bytes = new Uint8Array(await readFile(file));
  const { predict, metadata, release } = await onnxPredictor(bytes, { file });
  const metrics = (metadata.metrics ?? {}) as { split?: TestSplitInfo };
  return {
    name: file,
    info: { task: metadata.task, labels: metadata.labels, outputs: metadata.outputs, ageScheme: metadata.ageScheme ?? 'coursework', input: metadata.input },
    split: metrics.split,
    predictor: async () => ({ predict, release }),
  };
}

async function candidates(path: string): Promise<Candidate[]> {
  if (!existsSync(path)) throw new UsageError(`--model "${path}" does not exist`);
  if (statSync(path).isFile()) {
    if (!path.endsWith('.onnx')) throw new UsageError(`--model "${path}" is a file but not an .onnx model`);
    return [await onnxCandidate(path)];
  }
  if (existsSync(join(path, 'training-info.json'))) return [await tfjsCandidate(path)];
  if (basename(path) === 'model' && existsSync(join(path, '..', 'training-info.json'))) return [await tfjsCandidate(resolve(path, '..'))];
  const taskFolders = TASKS.map((task) => join(path, task)).filter((d) => existsSync(join(d, 'training-info.json')));
  if (taskFolders.length > 0) return Promise.all(taskFolders.map(tfjsCandidate));
  const onnxFiles = (await readdir(path)).filter((f) => f.endsWith('.onnx')).sort();
  if (onnxFiles.length > 0) return Promise.all(onnxFiles.map((f) => onnxCandidate(join(path, f))));
  throw new UsageError(`"${path}" holds no model: expected a training run (training-info.json and model/, or age/, ethnicity/, gender/ folders) or .onnx files`);
}

/** What a model's report is headed with: its file or folder name, and its task where the name does not say it. */
function heading(candidate: Candidate): string {
  const name = basename(candidate.name);
  return name.replace(/\.onnx$/, '') === candidate.info.task ? name : `${name} (${candidate.info.task})`;
}

/** The faces the run held out for testing: the same seeded split over the same loaded data. */
function testIndices(split: TestSplitInfo | undefined, dataset: Dataset, name: string): ArrayLike<number> | undefined {
  if (split === undefined) {
    console.error(`${name}: it records no test split; evaluating every face (--split all)`);
    return undefined;
  }
  if (split.datasetCount !== dataset.count) {
    // Scoring every face instead would include the training faces under a --split test that promises held-out ones.
    throw new UsageError(
      `${name}: its test split was drawn from ${split.datasetCount} faces and this data has ${dataset.count}, so the test split cannot be recovered on it; ` +
        'pass --split all to score every face (training faces included)',
    );
  }
  return trainTestSplit(dataset.count, split.testFraction, split.seed).test;
}

if (isMain(import.meta.url)) runCli(USAGE, async (argv) => {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      model: { type: 'string' },
      data: { type: 'string' },
      split: { type: 'string', default: 'test' },
      limit: { type: 'string' },
      backend: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) throw new UsageError('');
  if (values.model === undefined) throw new UsageError('--model is required');
  const data = values.data ?? defaultDataSource();
  if (data === undefined) throw new UsageError(missingDataMessage(true));
  const split = parseChoice('--split', values.split ?? 'test', ['test', 'all'] as const);
  const limit = values.limit === undefined ? undefined : parsePositiveInt('--limit', values.limit);
  const backend = values.backend === undefined ? undefined : parseChoice('--backend', values.backend, BACKEND_NAMES);

  const models = await candidates(resolve(values.model));
  if (models.some((m) => !m.name.endsWith('.onnx'))) await selectBackend(backend, (line) => console.error(line));
  const summaries: string[] = [];
  for (const candidate of models) {
    const { info } = candidate;
    const runLimit = limit ?? candidate.split?.limit ?? undefined;
    const dataset = await loadDataset(resolve(data), info.input, { limit: runLimit, seed: candidate.split?.seed });
    const indices = (split === 'test' ? testIndices(candidate.split, dataset, basename(candidate.name)) : undefined) ?? Int32Array.from({ length: dataset.count }, (_, i) => i);
    const { predict, release } = await candidate.predictor();
    const evaluation = await evaluate(predict, dataset, indices, info.task, info.labels, info.ageScheme);
    console.log(`${formatEvaluation(evaluation, heading(candidate))}\n`);
    // Two models of one task (a folder of .onnx files) are told apart by their file names.
    const sameTask = models.filter((m) => m.info.task === info.task).length > 1;
    summaries.push(formatEvaluationSummary(evaluation, sameTask ? { heading: heading(candidate) } : {}));
    await release();
  }
  for (const line of summaries) console.log(line);
  tf.disposeVariables();
});
