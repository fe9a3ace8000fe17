/**
 * npm run train -- --task age|ethnicity|gender|all [--preset multitask|residual|seed] [--data <folder-or-csv>]
 *                  [--epochs N] [--limit N] [--out DIR] [--backend B] [--replicas N] [--seed S]
 *                  [--age-scheme coursework|decades] [--input-size N] [--width-multiplier X] [--blocks N]
 *                  [--ema DECAY] [--mixup ALPHA] [--crops utkface|aligned]
 *                  [--distill DIR[,DIR...] [--distill-weight W] [--distill-temperature T]] [--verbose]
 * npm run train -- --resume runs/<run>
 */
import { spawn } from 'node:child_process';
import { getEventListeners } from 'node:events';
import { existsSync } from 'node:fs';
import { rm, symlink, writeFile } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { extname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { AGE_SCHEMES, TASKS, taskLabels, type AgeScheme, type Task } from '../../contract/labels.ts';
import { BACKEND_NAMES, selectBackend, type BackendName } from '../../node-shared/tfjs/select.ts';
import { loadDataset, missingDataMessage } from '../data/load.ts';
import { formatDuration } from '../../node-shared/format.ts';
import { defaultDataSource, RUNS_DIR } from '../../node-shared/paths.ts';
import { DEFAULT_PRESET, PRESET_INPUT, PRESETS, trainsTogether, trainTask, trainTogether, type Preset, type TaskMetrics } from '../train-task.ts';
import { CheckpointError, readCheckpoint, removeCheckpoint, TrainingInterrupted, type CheckpointMeta } from '../checkpoint.ts';
import { MULTITASK_TRAINING, multitaskInput } from '../fit-multitask.ts';
import { formatEvaluationSummary } from '../evaluate.ts';
import { DEFAULT_DISTILL_TEMPERATURE, DEFAULT_DISTILL_WEIGHT, DEFAULT_RECIPE, recipeOf, type DistillOptions, type RecipeOptions } from '../recipe.ts';
import { assertSameTeachers, readTeachers, teacherFiles } from '../distill.ts';
import { CROP_SOURCES } from '../data/aligned-crops.ts';
import type { InputSpec } from '../../contract/preprocess.ts';
import { isMain, parseChoice, parsePositiveInt, prepareRunFolder, runCli, UsageError } from '../../node-shared/cli-args.ts';

/** The input sizes --input-size takes: the trunk downsamples 8 times, and the browser must afford it. */
const MIN_INPUT_SIZE = 32;
const MAX_INPUT_SIZE = 224;
/** The widest trunk --width-multiplier allows: 8x the filters is 64x the shipped compute. */
const MAX_WIDTH_MULTIPLIER = 8;
const MAX_BLOCKS = 8;
/** Past this the softened probabilities are all but uniform. */
const MAX_DISTILL_TEMPERATURE = 20;

const USAGE = `Usage: npm run train -- --task age|ethnicity|gender|all [options]

Options:
  --task T          age, ethnicity, gender, or all                                     (required)
  --preset P        ${PRESETS.join(', ')}                                 (default: ${DEFAULT_PRESET})
                    multitask: one residual network shared by the three tasks, 64x64 colour,
                      data-parallel over the CPU cores; trains with --task all only
                    residual:  a residual network per task, 48x48 grayscale
                    seed:      the coursework's three small CNNs, 48x48 grayscale
                    (with --task all, residual and seed train the three in parallel processes)
  --data PATH       a UTKFace folder or a Kaggle age_gender.csv      (default: ../shared/data/utkface)
                    (the CSV holds 48x48 grayscale faces: the residual and seed presets)
  --epochs N        override the preset's epochs (multitask 32, residual 30, seed 25)
  --limit N         train on a fixed random subset of N faces
  --out DIR         a new (or empty) folder for the run     (default: runs/<date-time>-<preset>)
  --backend B       ${BACKEND_NAMES.join(', ')} (default: the best one available)
  --replicas N      multitask: data-parallel replicas      (default: one per core on wasm and cpu)
  --seed S          split, subset and initial weights                           (default: 42)
  --age-scheme S    ${AGE_SCHEMES.join(', ')}                                 (default: coursework)
  --no-cache        decode the images again instead of reading the dataset cache
  --verbose         also print the test split's tables (per-class report, confusion matrix, subgroups,
                    calibration) and each task's epoch line; the tables are in <task>/evaluation.txt either way

Multitask levers (docs/training.md, "Recipes for the long run"; the defaults are the shipped models'):
  --input-size N        side of the colour input in pixels, ${MIN_INPUT_SIZE} to ${MAX_INPUT_SIZE}                    (default: ${DEFAULT_RECIPE.inputSize})
  --width-multiplier X  the trunk's filters times X, e.g. 1.5                               (default: ${DEFAULT_RECIPE.widthMultiplier})
  --blocks N            residual blocks per stage                                          (default: ${DEFAULT_RECIPE.blocksPerStage})
  --ema DECAY           validate and ship the weights' moving average, e.g. 0.999        (default: off)
  --mixup ALPHA         mixup within each replica's share of a batch, Beta(ALPHA, ALPHA)  (default: off)
  --crops C             utkface: UTKFace's crops; aligned: the detector's aligned crops of them, as the
                        server cuts faces (detected once, cached under .cache/)           (default: utkface)
  --distill DIRS        learn from teachers too: DIR[,DIR...], folders of exported models with their manifest
                        (models/, runs/<run>/onnx); their mean answers for the training faces are computed once
                        (cached under .cache/); each task's loss is (1 - W) x its loss on the truth + W x its loss
                        against the teachers' probabilities softened at T (for age, also their mean age)  (default: off)
  --distill-weight W    the teachers' share W of each task's loss, above 0 and at most 1  (default: ${DEFAULT_DISTILL_WEIGHT})
  --distill-temperature T   softens both sides' class probabilities: p^(1/T), normalized   (default: ${DEFAULT_DISTILL_TEMPERATURE})
  --resume RUN      continue the multitask run in folder RUN from its last completed epoch, with the options
                    it was started with (given again, they must match); it ends as an uninterrupted run would
  --help            this text

A multitask run writes a checkpoint after every epoch; Ctrl-C stops it there and prints the --resume command.`;

export interface TrainConfig {
  task: Task | 'all';
  preset: Preset;
  data: string;
  epochs?: number;
  limit?: number;
  out: string;
  backend?: BackendName;
  replicas?: number;
  seed: number;
  ageScheme: AgeScheme;
  cache: boolean;
  /** the multitask levers; the defaults for the other presets, which take none */
  recipe: RecipeOptions;
  /** print the tables and each task's epoch line, not only a line per epoch and the summary */
  verbose: boolean;
}

/** A number in (low, high] (or [low, high] with `inclusive`), or a usage error naming the flag. */
function parseNumber(flag: string, value: string, low: number, high: number, { inclusive = false } = {}): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n > high || n < low || (!inclusive && n === low)) {
    throw new UsageError(`${flag} must be a number ${inclusive ? 'from' : 'above'} ${low} ${inclusive ? 'to' : 'and at most'} ${high}; got "${value}"`);
  }
  return n;
}

/** The input a preset trains on: the multitask preset's at the recipe's size. */
export function trainInput(preset: Preset, recipe: RecipeOptions): InputSpec {
  return trainsTogether(preset) ? multitaskInput(recipe.inputSize) : PRESET_INPUT[preset];
}

const OPTIONS = {
  task: { type: 'string' },
  preset: { type: 'string' },
  data: { type: 'string' },
  epochs: { type: 'string' },
  limit: { type: 'string' },
  out: { type: 'string' },
  backend: { type: 'string' },
  replicas: { type: 'string' },
  seed: { type: 'string' },
  'age-scheme': { type: 'string' },
  'no-cache': { type: 'boolean', default: false },
  verbose: { type: 'boolean', default: false },
  'input-size': { type: 'string' },
  'width-multiplier': { type: 'string' },
  blocks: { type: 'string' },
  ema: { type: 'string' },
  mixup: { type: 'string' },
  crops: { type: 'string' },
  distill: { type: 'string' },
  'distill-weight': { type: 'string' },
  'distill-temperature': { type: 'string' },
  resume: { type: 'string' },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

type TrainArgs = ReturnType<typeof readTrainArgs>;

function readTrainArgs(argv: string[]) {
  const { values } = parseArgs({ args: argv, strict: true, allowPositionals: false, options: OPTIONS });
  if (values.help) throw new UsageError('');
  return values;
}

export function parseTrainArgs(argv: string[]): TrainConfig {
  return trainConfig(readTrainArgs(argv));
}

function trainConfig(values: TrainArgs): TrainConfig {
  if (values.resume !== undefined) throw new UsageError('--resume takes its options from the run\'s checkpoint');
  if (values.task === undefined) throw new UsageError('--task is required');
  const data = values.data ?? defaultDataSource();
  if (data === undefined) throw new UsageError(missingDataMessage(true));
  const preset = parseChoice('--preset', values.preset ?? DEFAULT_PRESET, PRESETS);
  const task = parseChoice('--task', values.task, [...TASKS, 'all'] as const);
  if (trainsTogether(preset) && task !== 'all' && process.env.FACE_TRAIN_CHILD === undefined) {
    throw new UsageError(`the ${preset} preset trains age, ethnicity and gender as one network: use --task all (or --preset residual for one task)`);
  }
  const recipe = recipeFlags(values);
  const levers = [...RECIPE_FLAGS.map(([flag]) => flag), ...DISTILL_FLAGS].filter((flag) => values[flag] !== undefined).map((flag) => `--${flag}`);
  if (!trainsTogether(preset) && levers.length > 0) throw new UsageError(`${levers.join(', ')}: the multitask preset's levers; the ${preset} preset takes none`);
  const input = trainInput(preset, recipe);
  if (extname(data).toLowerCase() === '.csv' && (input.height !== 48 || input.width !== 48 || input.channels !== 1)) {
    throw new UsageError(
      `the ${preset} preset trains on ${input.height}x${input.width}x${input.channels} faces, and a Kaggle CSV holds 48x48 grayscale ones: ` +
        'train it from the UTKFace folder, or train --preset residual or --preset seed from the CSV',
    );
  }
  return {
    task,
    preset,
    data: resolve(data),
    epochs: values.epochs === undefined ? undefined : parsePositiveInt('--epochs', values.epochs),
    limit: values.limit === undefined ? undefined : parsePositiveInt('--limit', values.limit),
    out: resolve(values.out ?? join(RUNS_DIR, `${new Date().toISOString().slice(0, 19).replace(/[:T]/g, '-')}-${preset}`)),
    backend: values.backend === undefined ? undefined : parseChoice('--backend', values.backend, BACKEND_NAMES),
    replicas: values.replicas === undefined ? undefined : parsePositiveInt('--replicas', values.replicas),
    seed: parsePositiveInt('--seed', values.seed ?? '42', 0),
    ageScheme: parseChoice('--age-scheme', values['age-scheme'] ?? 'coursework', AGE_SCHEMES),
    cache: !values['no-cache'],
    recipe,
    verbose: values.verbose,
  };
}

/** The recipe flags, each with the recipe key it sets and how its value is written in the recipe. */
const RECIPE_FLAGS = [
  ['input-size', 'inputSize'],
  ['width-multiplier', 'widthMultiplier'],
  ['blocks', 'blocksPerStage'],
  ['ema', 'ema'],
  ['mixup', 'mixup'],
  ['crops', 'crops'],
] as const satisfies readonly (readonly [keyof TrainArgs, keyof RecipeOptions])[];

/** The flags of distillation, whose options are one lever (`RecipeOptions.distill`). */
const DISTILL_FLAGS = ['distill', 'distill-weight', 'distill-temperature'] as const satisfies readonly (keyof TrainArgs)[];

/** The teacher folders --distill names, resolved. */
function teacherFolders(text: string): string[] {
  const dirs = text.split(',').map((dir) => dir.trim()).filter((dir) => dir !== '');
  if (dirs.length === 0) throw new UsageError(`--distill takes one or more model folders, separated by commas; got "${text}"`);
  return dirs.map((dir) => resolve(dir));
}

/** Distillation as its flags ask, checked; undefined without --distill. */
function distillFlags(values: TrainArgs): DistillOptions | undefined {
  if (values.distill === undefined) {
    const stray = DISTILL_FLAGS.filter((flag) => values[flag] !== undefined).map((flag) => `--${flag}`);
    if (stray.length > 0) throw new UsageError(`${stray.join(', ')}: options of distillation, which needs its teachers: add --distill DIR[,DIR...]`);
    return undefined;
  }
  const weight = values['distill-weight'];
  const temperature = values['distill-temperature'];
  return {
    teachers: teacherFolders(values.distill),
    weight: weight === undefined ? DEFAULT_DISTILL_WEIGHT : parseNumber('--distill-weight', weight, 0, 1),
    temperature: temperature === undefined ? DEFAULT_DISTILL_TEMPERATURE : parseNumber('--distill-temperature', temperature, 0, MAX_DISTILL_TEMPERATURE),
  };
}

/** The recipe the flags ask for, each flag checked; the default for every flag not given. */
function recipeFlags(values: TrainArgs): RecipeOptions {
  const distill = distillFlags(values);
  const given = (flag: (typeof RECIPE_FLAGS)[number][0]) => values[flag];
  const value = <T>(flag: (typeof RECIPE_FLAGS)[number][0], parse: (text: string) => T, fallback: T): T => {
    const text = given(flag);
    return text === undefined ? fallback : parse(text);
  };
  return {
    inputSize: value('input-size', (t) => {
      const n = parsePositiveInt('--input-size', t, MIN_INPUT_SIZE);
      if (n > MAX_INPUT_SIZE) throw new UsageError(`--input-size must be at most ${MAX_INPUT_SIZE}; got "${t}"`);
      return n;
    }, DEFAULT_RECIPE.inputSize),
    widthMultiplier: value('width-multiplier', (t) => parseNumber('--width-multiplier', t, 0, MAX_WIDTH_MULTIPLIER), DEFAULT_RECIPE.widthMultiplier),
    blocksPerStage: value('blocks', (t) => {
      const n = parsePositiveInt('--blocks', t);
      if (n > MAX_BLOCKS) throw new UsageError(`--blocks must be at most ${MAX_BLOCKS}; got "${t}"`);
      return n;
    }, DEFAULT_RECIPE.blocksPerStage),
    ema: value('ema', (t) => {
      const decay = Number(t);
      if (t.trim() === '' || !(decay > 0 && decay < 1)) throw new UsageError(`--ema must be a decay above 0 and below 1, e.g. 0.999; got "${t}"`);
      return decay;
    }, DEFAULT_RECIPE.ema),
    mixup: value('mixup', (t) => parseNumber('--mixup', t, 0, 100), DEFAULT_RECIPE.mixup),
    crops: value('crops', (t) => parseChoice('--crops', t, CROP_SOURCES), DEFAULT_RECIPE.crops),
    // absent without distillation, so that such a recipe is written as before distillation existed
    ...(distill === undefined ? {} : { distill }),
  };
}

/**
 * The options of the run at `--resume`, as its checkpoint records them. An option given again must match, since
 * any of them would change the weights; the learning rate's cosine reaches zero at the run's last epoch, so a
 * larger --epochs cannot extend a run exactly and is refused too. --data may name the same faces elsewhere (the
 * faces are checked when loaded) and --no-cache is free.
 */
export function resumeConfig(values: TrainArgs, runDir: string, meta: CheckpointMeta): TrainConfig {
  const recorded = meta.options;
  const recipe = recipeOf(recorded.recipe);
  if (values.out !== undefined) throw new UsageError(`--resume continues the run in its own folder (${runDir}); drop --out`);
  if (!trainsTogether(recorded.preset as Preset)) throw new UsageError(`--resume continues multitask runs only; the run in ${runDir} is a ${recorded.preset} run`);
  const given: [string, string | undefined, string | number | null][] = [
    ['--task', values.task, 'all'],
    ['--preset', values.preset, recorded.preset],
    ['--epochs', values.epochs, recorded.epochs],
    ['--limit', values.limit, recorded.limit],
    ['--backend', values.backend, recorded.backend],
    ['--replicas', values.replicas, recorded.replicas],
    ['--seed', values.seed, recorded.seed],
    ['--age-scheme', values['age-scheme'], recorded.ageScheme],
    ...RECIPE_FLAGS.map(([flag, key]): [string, string | undefined, string | number | null] => [`--${flag}`, values[flag], recipe[key]]),
    ['--distill', values.distill === undefined ? undefined : teacherFolders(values.distill).join(','), recipe.distill?.teachers.join(',') ?? null],
    ['--distill-weight', values['distill-weight'], recipe.distill?.weight ?? null],
    ['--distill-temperature', values['distill-temperature'], recipe.distill?.temperature ?? null],
  ];
  for (const [flag, value, wanted] of given) {
    if (value === undefined || value === String(wanted)) continue;
    const was = wanted === null ? `no ${flag}` : `${flag} ${wanted}`;
    const why = flag === '--epochs' ? ' (the learning rate decays to zero at the last epoch, so a run cannot be lengthened exactly)' : '';
    throw new UsageError(`${flag} ${value} does not match the run being resumed, which was started with ${was}${why}: drop ${flag} to resume it, or start a new run`);
  }
  return {
    task: 'all',
    preset: recorded.preset as Preset,
    data: resolve(values.data ?? recorded.data),
    epochs: recorded.epochs,
    limit: recorded.limit ?? undefined,
    out: runDir,
    backend: recorded.backend,
    replicas: recorded.replicas,
    seed: recorded.seed,
    ageScheme: recorded.ageScheme,
    cache: !values['no-cache'],
    recipe,
    verbose: values.verbose,
  };
}

/** The checkpoint of the run at --resume; a missing or unreadable one is the caller's mistake. */
async function readResumedRun(runDir: string): Promise<CheckpointMeta> {
  try {
    return await readCheckpoint(runDir);
  } catch (error) {
    if (error instanceof CheckpointError) throw new UsageError(`--resume ${error.message}`);
    throw error;
  }
}

const log = (line: string) => console.log(line);

/** Where the lines only --verbose prints go. */
function detailLog(config: TrainConfig): (line: string) => void {
  return config.verbose ? log : () => {};
}

/** The run's last lines: one per task, then where it all is (`heading`: what was trained, and how long it took). */
function printSummary(metrics: TaskMetrics[], config: TrainConfig, heading: string): void {
  if (config.verbose) log('');
  for (const m of metrics) log(formatEvaluationSummary({ task: m.task, accuracy: m.testAccuracy, count: m.testCount, years: m.years }, { faces: 'test faces' }));
  const [first] = metrics;
  const kept = metrics.every((m) => m.keptEpoch === first.keptEpoch && m.epochs === first.epochs)
    ? first.keptEpoch === undefined ? `${first.epochs} epochs` : `kept epoch ${first.keptEpoch} of ${first.epochs}`
    : metrics.map((m) => `${m.task}: ${m.keptEpoch === undefined ? `${m.epochs} epochs` : `kept epoch ${m.keptEpoch} of ${m.epochs}`}`).join(', ');
  log(`${heading}; ${kept}; run folder ${relative(process.cwd(), config.out) || '.'}`);
  log(`  each task's folder: model/, evaluation.txt (the tables${config.verbose ? '' : ', which --verbose prints'}), curves.png, confusion.png, metrics.json`);
}

async function trainOne(config: TrainConfig & { task: Task }): Promise<TaskMetrics> {
  const backend = await selectBackend(config.backend, log);
  const dataset = await loadDataset(config.data, trainInput(config.preset, config.recipe), { limit: config.limit, seed: config.seed, cacheDir: config.cache ? undefined : false });
  return trainTask({
    task: config.task,
    preset: config.preset,
    dataset,
    outDir: join(config.out, config.task),
    epochs: config.epochs,
    seed: config.seed,
    limit: config.limit,
    ageScheme: config.ageScheme,
    backend: backend.name,
    log,
    detail: detailLog(config),
  });
}

/**
 * Trains the three tasks as one network in this process (its replicas are threads), with a checkpoint after every
 * epoch; SIGINT or SIGTERM stops it there (`TrainingInterrupted`).
 */
async function trainShared(config: TrainConfig, resume?: CheckpointMeta): Promise<void> {
  const started = performance.now();
  const distill = config.recipe.distill;
  // Checked before any work: a missing teacher, or one that changed under a resumed run, is refused at once.
  const teachers = distill && (await readTeachers(distill.teachers, Object.fromEntries(TASKS.map((task) => [task, taskLabels(task, config.ageScheme)])) as Record<Task, string[]>));
  if (resume !== undefined && teachers !== undefined) assertSameTeachers(resume.teachers, teacherFiles(teachers), config.out);
  const backend = await selectBackend(config.backend, log);
  const loadOptions = { limit: config.limit, seed: config.seed, cacheDir: config.cache ? undefined : (false as const), crops: config.recipe.crops };
  const dataset = await loadDataset(config.data, trainInput(config.preset, config.recipe), loadOptions);
  const stopper = new AbortController();
  const stop = (signal: NodeJS.Signals) => {
    // Once training is over nothing listens, and the signal ends the process as it would without this handler.
    if (getEventListeners(stopper.signal, 'abort').length === 0) {
      console.error(`multitask: ${signal} after training, before every model was written; resume with: npm run train -- --resume ${relative(process.cwd(), config.out) || '.'}`);
      process.exit(128 + osConstants.signals[signal]);
    }
    log(`multitask: ${signal}: stopping; the checkpoint of the last completed epoch is kept`);
    stopper.abort(signal);
  };
  const signals = ['SIGINT', 'SIGTERM'] as const;
  for (const signal of signals) process.once(signal, stop);
  const metrics = await trainTogether({
    preset: config.preset,
    dataset,
    runDir: config.out,
    epochs: config.epochs,
    seed: config.seed,
    limit: config.limit,
    ageScheme: config.ageScheme,
    backend: backend.name,
    replicas: config.replicas,
    log,
    detail: detailLog(config),
    checkpoint: { runDir: config.out, run: { preset: config.preset, data: config.data, limit: config.limit ?? null, recipe: config.recipe }, resume },
    stop: stopper.signal,
    recipe: config.recipe,
    teachers: teachers && { teachers, datasetAt: (spec) => loadDataset(config.data, spec, loadOptions), cacheDir: config.cache ? undefined : false },
  }).finally(() => {
    for (const signal of signals) process.off(signal, stop);
  });
  const wallSeconds = (performance.now() - started) / 1000;
  await writeFile(join(config.out, 'run.json'), JSON.stringify({ tasks: TASKS, preset: config.preset, wallSeconds, trainSeconds: metrics[0].trainSeconds, failed: [] }, null, 2) + '\n');
  await removeCheckpoint(config.out);
  printSummary(metrics, config, `all: trained ${TASKS.length} models as one network in ${formatDuration(wallSeconds)} (wall time, data loading included)`);
}

/** Trains the three tasks in parallel child processes, their output prefixed with the task. */
async function trainAll(config: TrainConfig, argv: string[]): Promise<void> {
  // Decode once here so that the three processes start from the cache instead of decoding in parallel.
  await loadDataset(config.data, PRESET_INPUT[config.preset], { limit: config.limit, seed: config.seed, cacheDir: config.cache ? undefined : false });
  const started = performance.now();
  const childArgs = stripFlag(argv, '--task');
  if (!childArgs.includes('--out')) childArgs.push('--out', config.out);
  const results = await Promise.all(TASKS.map((task) => runChild(task, [...childArgs, '--task', task])));
  const wallSeconds = (performance.now() - started) / 1000;
  const failed = TASKS.filter((_, i) => results[i] !== 0);
  await writeFile(join(config.out, 'run.json'), JSON.stringify({ tasks: TASKS, wallSeconds, failed }, null, 2) + '\n');
  console.log(`all: trained ${TASKS.length - failed.length} of ${TASKS.length} models in ${formatDuration(wallSeconds)} (wall time, parallel processes); run folder ${relative(process.cwd(), config.out) || '.'}`);
  if (failed.length > 0) throw new Error(`training failed for: ${failed.join(', ')} (see the lines prefixed with their names above)`);
}

function runChild(task: Task, args: string[]): Promise<number> {
  return new Promise((resolveExit) => {
    const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, FACE_TRAIN_CHILD: task },
    });
    const prefix = `[${task}] `.padEnd(12);
    for (const stream of [child.stdout, child.stderr]) {
      let pending = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => {
        const lines = (pending + chunk).split(/\r?\n|\r/);
        pending = lines.pop() ?? '';
        for (const line of lines) if (line.trim() !== '') process.stdout.write(prefix + line + '\n');
      });
      stream.on('end', () => pending.trim() !== '' && process.stdout.write(prefix + pending + '\n'));
    }
    child.on('exit', (code) => resolveExit(code ?? 1));
  });
}

function stripFlag(argv: string[], flag: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === flag) i++;
    else if (!argv[i].startsWith(`${flag}=`)) out.push(argv[i]);
  }
  return out;
}

/** Points runs/latest at the newest run, which `npm run export -- --all` picks up. */
async function markLatest(out: string): Promise<void> {
  if (relative(RUNS_DIR, out).startsWith('..')) return;
  const latest = join(RUNS_DIR, 'latest');
  await rm(latest, { force: true });
  await symlink(relative(RUNS_DIR, out), latest);
}

/** Says how a stopped run can go on, and exits as a process ended by the signal does (128 + its number). */
async function reportInterrupted(stopped: TrainingInterrupted, config: TrainConfig, removeIfEmpty: () => Promise<void>): Promise<void> {
  const signal = stopped.reason as NodeJS.Signals;
  process.exitCode = 128 + (osConstants.signals[signal] ?? osConstants.signals.SIGINT);
  if (stopped.epochsDone === 0) {
    await removeCheckpoint(config.out);
    await removeIfEmpty();
    console.error(`multitask: stopped before the first epoch ended: nothing to resume; run the same command again to start over`);
    return;
  }
  const run = relative(process.cwd(), config.out) || '.';
  console.error(`multitask: stopped after epoch ${stopped.epochsDone} of ${config.epochs ?? MULTITASK_TRAINING.epochs}; the checkpoint is in ${join(run, 'checkpoint')}`);
  console.error(`resume with: npm run train -- --resume ${run}`);
}

if (isMain(import.meta.url)) runCli(USAGE, async (argv) => {
  const values = readTrainArgs(argv);
  const resumeDir = values.resume === undefined ? undefined : resolve(values.resume);
  const resume = resumeDir === undefined ? undefined : await readResumedRun(resumeDir);
  const config = resumeDir === undefined || resume === undefined ? trainConfig(values) : resumeConfig(values, resumeDir, resume);
  // Before anything starts (the backend, the run folder): a mistyped path is a usage error.
  if (!existsSync(config.data)) throw new UsageError(`--data "${config.data}" does not exist; expected a UTKFace folder or a Kaggle age_gender.csv file`);
  // A child of --task all writes its task folder into the run folder its parent checked and made; a resumed run
  // continues in its own.
  const removeIfEmpty = process.env.FACE_TRAIN_CHILD === undefined && resume === undefined ? await prepareRunFolder('--out', config.out) : async () => {};
  try {
    if (config.task === 'all') {
      if (trainsTogether(config.preset)) await trainShared(config, resume);
      else await trainAll(config, argv);
      await markLatest(config.out);
    } else {
      const metrics = await trainOne({ ...config, task: config.task });
      if (process.env.FACE_TRAIN_CHILD === undefined) await markLatest(config.out);
      printSummary([metrics], config, `${config.task}: done`);
    }
  } catch (error) {
    if (error instanceof TrainingInterrupted) return reportInterrupted(error, config, removeIfEmpty);
    if (resume === undefined) await removeIfEmpty();
    throw error;
  }
});
