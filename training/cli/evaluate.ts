/**
 * npm run evaluate -- --model <run task folder | run folder> --data <folder-or-csv> [--split test|all] [--limit N] [--backend B]
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { TASKS, type AgeScheme, type Task } from '../../models/spec/labels.ts';
import type { InputSpec } from '../../models/spec/preprocess.ts';
import { BACKEND_NAMES, selectBackend } from '../backend/select.ts';
import type { Dataset } from '../data/dataset.ts';
import { loadDataset } from '../data/load.ts';
import { evaluate, formatEvaluation, tfjsPredictor } from '../evaluate.ts';
import { loadModel } from '../models/io.ts';
import { defaultDataSource } from '../paths.ts';
import { isMain, parseChoice, parsePositiveInt, runCli, UsageError } from './args.ts';

const USAGE = `Usage: npm run evaluate -- --model DIR [options]

  --model DIR      a task folder written by training (holding model/ and training-info.json),
                   or a run folder holding age/, ethnicity/ and gender/        (required)
  --data PATH      a UTKFace folder or a Kaggle age_gender.csv   (default: ../shared/data/utkface)
  --split S        test: only the faces of the run's test split (default); all: every face
  --limit N        a fixed random subset of N faces of the data
  --backend B      ${BACKEND_NAMES.join(', ')} (default: the best one available)`;

/** What training writes beside the model (training-info.json); the fields evaluation needs. */
interface RunInfo {
  task: Task;
  labels: string[];
  ageScheme: AgeScheme;
  input: InputSpec;
}

/** The task folders to evaluate: the folder itself, or its age/, ethnicity/ and gender/ subfolders. */
function taskFolders(dir: string): string[] {
  if (existsSync(join(dir, 'training-info.json'))) return [dir];
  if (basename(dir) === 'model' && existsSync(join(dir, '..', 'training-info.json'))) return [resolve(dir, '..')];
  const folders = TASKS.map((task) => join(dir, task)).filter((d) => existsSync(join(d, 'training-info.json')));
  if (folders.length === 0) throw new UsageError(`"${dir}" holds no trained model: expected training-info.json and model/ in it, or in its age/, ethnicity/ and gender/ subfolders`);
  return folders;
}

/** Indices of the dataset's faces that the run held out for testing, matched by file name. */
async function testSplitIndices(folder: string, dataset: Dataset): Promise<number[] | undefined> {
  const file = join(folder, 'test-split.json');
  if (!existsSync(file)) return undefined;
  const names = new Set(JSON.parse(await readFile(file, 'utf8')) as string[]);
  const indices: number[] = [];
  dataset.names.forEach((name, i) => names.has(name) && indices.push(i));
  return indices;
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
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) throw new UsageError('');
  if (values.model === undefined) throw new UsageError('--model is required');
  const data = values.data ?? defaultDataSource();
  if (data === undefined) throw new UsageError('--data is required: no UTKFace folder at ../shared/data/utkface');
  const split = parseChoice('--split', values.split ?? 'test', ['test', 'all'] as const);
  const limit = values.limit === undefined ? undefined : parsePositiveInt('--limit', values.limit);
  const backend = values.backend === undefined ? undefined : parseChoice('--backend', values.backend, BACKEND_NAMES);

  await selectBackend(backend, (line) => console.error(line));
  for (const folder of taskFolders(resolve(values.model))) {
    const info = JSON.parse(await readFile(join(folder, 'training-info.json'), 'utf8')) as RunInfo;
    const dataset = await loadDataset(resolve(data), info.input, { limit });
    let indices: ArrayLike<number> = Int32Array.from({ length: dataset.count }, (_, i) => i);
    if (split === 'test') {
      const held = await testSplitIndices(folder, dataset);
      if (held === undefined || held.length === 0) {
        console.error(`${info.task}: the run's test split is not in this data; evaluating every face (--split all)`);
      } else {
        indices = held;
      }
    }
    const model = await loadModel(join(folder, 'model'));
    const evaluation = await evaluate(tfjsPredictor(model, info.input), dataset, indices, info.task, info.labels, info.ageScheme);
    console.log(formatEvaluation(evaluation) + '\n');
    model.dispose();
  }
});
