/**
 * npm run convert:csv -- --data <utkface folder> --out <file.csv> [--limit N] [--workers N] [--no-cache]
 *
 * Writes the faces of a UTKFace folder to one CSV file in the Kaggle age_gender.csv format (48x48 gray, through
 * the same decoding and preprocessing as training), so that the folder and CSV paths can be checked against each
 * other.
 */
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { rename, rm, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { LoadOptions } from '../data/dataset.ts';
import { CSV_HEADER, CSV_SPEC, formatCsvRow } from '../data/kaggle-csv.ts';
import { loadDataset } from '../data/load.ts';
import { isMain, parsePositiveInt, prepareOutputFile, runCli, UsageError } from '../../node-shared/cli-args.ts';

const USAGE = `Usage: npm run convert:csv -- --data <utkface folder> --out <file.csv> [options]

Options:
  --data DIR      a UTKFace folder of {age}_{gender}_{race}_{date&time}.jpg.chip.jpg   (required)
  --out FILE      the CSV file to write, header ${CSV_HEADER}      (required)
                  (its folder is created if missing)
  --limit N       write a fixed random subset of N faces
  --workers N     parallel decode workers                           (default: CPU cores)
  --no-cache      decode the images again instead of reading the dataset cache
  --help          this text`;

export interface ConvertConfig {
  data: string;
  out: string;
  limit?: number;
  workers?: number;
  cache: boolean;
}

export function parseConvertArgs(argv: string[]): ConvertConfig {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      data: { type: 'string' },
      out: { type: 'string' },
      limit: { type: 'string' },
      workers: { type: 'string' },
      'no-cache': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) throw new UsageError('');
  if (values.data === undefined) throw new UsageError('--data is required');
  if (values.out === undefined) throw new UsageError('--out is required');
  return {
    data: resolve(values.data),
    out: resolve(values.out),
    limit: values.limit === undefined ? undefined : parsePositiveInt('--limit', values.limit),
    workers: values.workers === undefined ? undefined : parsePositiveInt('--workers', values.workers),
    cache: !values['no-cache'],
  };
}

/** Converts a UTKFace folder to a Kaggle-format CSV; returns the number of rows written. */
export async function convertUtkFaceToCsv(folder: string, out: string, options: LoadOptions = {}): Promise<number> {
  const info = await stat(folder).catch(() => undefined);
  if (info === undefined || !info.isDirectory()) throw new UsageError(`--data "${folder}" is not a folder; expected a UTKFace folder`);
  // Before decoding: a wrong --out would otherwise fail only after every image is decoded.
  await prepareOutputFile('--out', out);
  const dataset = await loadDataset(folder, CSV_SPEC, options);
  const faceBytes = CSV_SPEC.height * CSV_SPEC.width * CSV_SPEC.channels;
  // Written aside and renamed, so that an interrupted run leaves no half CSV under the real name.
  const partial = `${out}.partial`;
  const stream = createWriteStream(partial);
  try {
    const write = async (line: string): Promise<void> => {
      if (!stream.write(`${line}\n`)) await once(stream, 'drain');
    };
    await write(CSV_HEADER);
    for (let i = 0; i < dataset.count; i++) {
      const labels = { age: dataset.ages[i], gender: dataset.genders[i], ethnicity: dataset.ethnicities[i] };
      await write(formatCsvRow(labels, dataset.names[i], dataset.pixels.subarray(i * faceBytes, (i + 1) * faceBytes)));
    }
    stream.end();
    await once(stream, 'finish');
    await rename(partial, out);
  } catch (error) {
    stream.destroy();
    await rm(partial, { force: true });
    throw error;
  }
  return dataset.count;
}

if (isMain(import.meta.url)) {
  runCli(USAGE, async (argv) => {
    const config = parseConvertArgs(argv);
    const rows = await convertUtkFaceToCsv(config.data, config.out, {
      limit: config.limit,
      workers: config.workers,
      cacheDir: config.cache ? undefined : false,
    });
    console.log(`wrote ${rows.toLocaleString('en-US')} faces to ${config.out}`);
  });
}
