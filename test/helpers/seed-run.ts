/** What the CLI tests share to fake a training run of the `seed` preset without training it. */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { saveTfjsModelFolder } from '../../export/tfjs-model.ts';
import { taskLabels, TASKS, type Task } from '../../contract/labels.ts';
import type { TrainingInfo } from '../../contract/metadata.ts';
import { SEED_INPUT } from '../../contract/preprocess.ts';
import { buildSeedModel } from '../../training/models/seed.ts';

/** The training-info.json a `seed` run writes for `task` (the coursework's 30% test split, seed 42). */
export function seedTrainingInfo(task: Task): TrainingInfo {
  const labels = taskLabels(task);
  return {
    task,
    preset: 'seed',
    labels,
    ageScheme: 'coursework',
    input: SEED_INPUT,
    preprocessingVersion: 1,
    outputs: [{ name: 'output', kind: task === 'gender' ? 'sigmoid' : 'probabilities', labels }],
    seed: 42,
    split: { testFraction: 0.3, seed: 42 },
  };
}

/**
 * A run folder as `npm run train -- --task all --preset seed` writes it, with untrained models: each task's
 * tfjs model and training-info.json, and its metrics.json where `metricsOf` is given.
 */
export async function writeSeedRun(run: string, metricsOf?: (task: Task) => object): Promise<void> {
  for (const task of TASKS) {
    const model = buildSeedModel(task, taskLabels(task).length, 21);
    await saveTfjsModelFolder(model, join(run, task, 'model'));
    model.dispose();
    await writeFile(join(run, task, 'training-info.json'), JSON.stringify(seedTrainingInfo(task), null, 2));
    if (metricsOf !== undefined) await writeFile(join(run, task, 'metrics.json'), JSON.stringify(metricsOf(task)));
  }
}
