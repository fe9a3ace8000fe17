/**
 * The Kaggle "Age, gender and ethnicity (face data) CSV" (`age_gender.csv`): UTKFace at 48x48 grayscale,
 * one face a row. Read as a stream (the real file is ~200 MB); malformed rows are skipped and reported.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { createInterface } from 'node:readline';
import { MAX_AGE, MIN_AGE, type FaceLabels } from '../../contract/labels.ts';
import { SEED_INPUT, type InputSpec } from '../../contract/preprocess.ts';
import type { Dataset, LoadOptions } from './dataset.ts';
import { createProgress, DEFAULT_SUBSET_SEED, SkipCollector, subsetOrder, validateLimit } from './ingest.ts';

export const CSV_HEADER = 'age,ethnicity,gender,img_name,pixels';
const COLUMNS = CSV_HEADER.split(',');

/** What the CSV holds: 48x48 grayscale, the only spec it can serve. */
export const CSV_SPEC: InputSpec = SEED_INPUT;
const PIXELS_PER_FACE = CSV_SPEC.height * CSV_SPEC.width * CSV_SPEC.channels;

/** A file that is not in the Kaggle CSV format at all (as opposed to a bad row, which is skipped). */
export class CsvFormatError extends Error {
  override name = 'CsvFormatError';
}

/** Loads a Kaggle-format CSV into a Dataset; `spec` must be 48x48x1 (what the file holds). */
export async function loadKaggleCsv(file: string, spec: InputSpec, options: LoadOptions = {}): Promise<Dataset> {
  assertCsvServes(spec, file);
  validateLimit(options.limit);
  const { size } = await stat(file);
  const progress = createProgress({ label: `reading ${basename(file)}`, total: size, enabled: options.progress, formatCount: formatMegabytes });
  const skipped = new SkipCollector();
  const rows = new RowStore();
  const input = createReadStream(file, { highWaterMark: 1 << 20 });
  const lines = createInterface({ input, crlfDelay: Infinity });
  let lineNumber = 0;
  try {
    for await (const rawLine of lines) {
      lineNumber++;
      if (lineNumber === 1) {
        checkHeader(rawLine, file);
        continue;
      }
      if (rawLine.trim() === '') continue;
      const row = parseRow(rawLine, rows.nextPixels());
      if ('reason' in row) {
        skipped.add(`line ${lineNumber}${row.name ? ` (${row.name})` : ''}`, row.reason, row.detail);
      } else {
        rows.commit(row.labels, row.name);
      }
      if (lineNumber % 256 === 0) progress.update(input.bytesRead);
    }
  } finally {
    lines.close();
    input.destroy();
  }
  if (lineNumber === 0) throw new CsvFormatError(`${file} is empty; expected the header "${CSV_HEADER}" and one row per face`);
  progress.update(size);
  progress.finish();

  let keep = Array.from({ length: rows.count }, (_, i) => i);
  if (options.limit !== undefined && options.limit < rows.count) {
    keep = subsetOrder(rows.names, options.seed ?? DEFAULT_SUBSET_SEED)
      .slice(0, options.limit)
      .sort((a, b) => a - b);
  }
  return rows.toDataset(keep, skipped);
}

/** Throws unless `spec` is what the CSV holds. */
export function assertCsvServes(spec: InputSpec, file = 'The CSV file'): void {
  if (spec.height !== CSV_SPEC.height || spec.width !== CSV_SPEC.width || spec.channels !== CSV_SPEC.channels) {
    throw new Error(
      `${file} holds ${CSV_SPEC.height}x${CSV_SPEC.width} grayscale faces (the Kaggle age_gender.csv format), so it can only serve ` +
        `an input spec of ${CSV_SPEC.height}x${CSV_SPEC.width}x${CSV_SPEC.channels}; asked for ${spec.height}x${spec.width}x${spec.channels}. ` +
        'Load the UTKFace image folder for other input sizes.',
    );
  }
}

/** One CSV row (no newline) for a face: labels, name and its 48x48 gray bytes. */
export function formatCsvRow(labels: FaceLabels, name: string, pixels: Uint8Array): string {
  if (pixels.length !== PIXELS_PER_FACE) {
    throw new RangeError(`A CSV row holds ${PIXELS_PER_FACE} pixels (48x48 gray); got ${pixels.length}`);
  }
  const quoted = /[",\r\n]/.test(name) ? `"${name.replace(/"/g, '""')}"` : name;
  return `${labels.age},${labels.ethnicity},${labels.gender},${quoted},${pixels.join(' ')}`;
}

function checkHeader(line: string, file: string): void {
  const columns = splitCsvLine(line.replace(/^\uFEFF/, '')).map((c) => c.trim());
  if (columns.join(',') !== CSV_HEADER) {
    const shown = line.length > 80 ? `${line.slice(0, 80)}...` : line;
    throw new CsvFormatError(`${file} has the header "${shown}"; expected "${CSV_HEADER}" (the Kaggle age_gender.csv format)`);
  }
}

type ParsedRow = { labels: FaceLabels; name: string } | { reason: string; detail: string; name?: string };

const LABEL_RULES: readonly { column: 'age' | 'ethnicity' | 'gender'; min: number; max: number }[] = [
  { column: 'age', min: MIN_AGE, max: MAX_AGE },
  { column: 'ethnicity', min: 0, max: 4 },
  { column: 'gender', min: 0, max: 1 },
];

/** Parses a data row, writing its pixels into `pixels` (2,304 bytes). */
function parseRow(line: string, pixels: Uint8Array): ParsedRow {
  const fields = splitCsvLine(line);
  if (fields.length !== COLUMNS.length) {
    return { reason: 'wrong column count', detail: `${fields.length} columns, expected ${COLUMNS.length} (${CSV_HEADER})` };
  }
  const [ageText, ethnicityText, genderText, name, pixelText] = fields;
  const texts = { age: ageText, ethnicity: ethnicityText, gender: genderText };
  const labels: FaceLabels = { age: 0, ethnicity: 0, gender: 0 };
  for (const { column, min, max } of LABEL_RULES) {
    const text = texts[column].trim();
    if (!/^-?\d+$/.test(text)) return { reason: 'non-numeric label', detail: `${column} "${text}"`, name };
    const value = Number(text);
    if (value < min || value > max) return { reason: `${column} out of range`, detail: `${value}, expected ${min} to ${max}`, name };
    labels[column] = value;
  }
  const problem = parsePixels(pixelText, pixels);
  return problem === undefined ? { labels, name } : { ...problem, name };
}

/** Space-separated whole numbers 0-255, exactly as many as `out` holds; the first problem otherwise. */
function parsePixels(text: string, out: Uint8Array): { reason: string; detail: string } | undefined {
  let count = 0;
  let value = -1;
  for (let i = 0; i <= text.length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : 32;
    if (c >= 48 && c <= 57) {
      value = value < 0 ? c - 48 : value * 10 + (c - 48);
      if (value > 255) return pixelProblem(text, i);
    } else if (c === 32 || c === 9) {
      if (value >= 0) {
        if (count < out.length) out[count] = value;
        count++;
        value = -1;
      }
    } else {
      return pixelProblem(text, i);
    }
  }
  if (count !== out.length) return { reason: 'wrong pixel count', detail: `${count} values, expected ${out.length} (48x48)` };
  return undefined;
}

function pixelProblem(text: string, at: number): { reason: string; detail: string } {
  const start = Math.max(text.lastIndexOf(' ', at) + 1, 0);
  const end = text.indexOf(' ', at);
  const token = text.slice(start, end < 0 ? undefined : end);
  const shown = token.length > 20 ? `${token.slice(0, 20)}...` : token;
  if (/^[-+]?\d+$/.test(token)) return { reason: 'pixel out of range', detail: `${shown}, expected 0 to 255` };
  return { reason: 'non-numeric pixel', detail: `"${shown}"` };
}

/** Splits a CSV line on commas; quoted fields ("a,b" and "" for a quote) only take the slow path. */
export function splitCsvLine(line: string): string[] {
  if (!line.includes('"')) return line.split(',');
  const fields: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quoted) {
      if (c === '"' && line[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') {
        quoted = false;
      } else {
        field += c;
      }
    } else if (c === '"') {
      quoted = true;
    } else if (c === ',') {
      fields.push(field);
      field = '';
    } else {
      field += c;
    }
  }
  fields.push(field);
  return fields;
}

/** Valid rows as they stream in: pixels in one growing buffer, labels in arrays. */
class RowStore {
  count = 0;
  readonly names: string[] = [];
  private readonly labels: FaceLabels[] = [];
  private pixels = new Uint8Array(PIXELS_PER_FACE * 1024);

  /** Where the next row's pixels are parsed to (overwritten when that row is skipped). */
  nextPixels(): Uint8Array {
    const needed = (this.count + 1) * PIXELS_PER_FACE;
    if (needed > this.pixels.length) {
      const grown = new Uint8Array(this.pixels.length * 2);
      grown.set(this.pixels);
      this.pixels = grown;
    }
    return this.pixels.subarray(this.count * PIXELS_PER_FACE, needed);
  }

  commit(labels: FaceLabels, name: string): void {
    this.labels.push(labels);
    this.names.push(name);
    this.count++;
  }

  toDataset(keep: number[], skipped: SkipCollector): Dataset {
    const dataset: Dataset = {
      spec: { ...CSV_SPEC },
      count: keep.length,
      pixels: new Uint8Array(keep.length * PIXELS_PER_FACE),
      ages: new Uint8Array(keep.length),
      genders: new Uint8Array(keep.length),
      ethnicities: new Uint8Array(keep.length),
      names: [],
      skipped: skipped.toReport(),
    };
    keep.forEach((row, i) => {
      dataset.pixels.set(this.pixels.subarray(row * PIXELS_PER_FACE, (row + 1) * PIXELS_PER_FACE), i * PIXELS_PER_FACE);
      dataset.ages[i] = this.labels[row].age;
      dataset.genders[i] = this.labels[row].gender;
      dataset.ethnicities[i] = this.labels[row].ethnicity;
      dataset.names.push(this.names[row]);
    });
    return dataset;
  }
}

function formatMegabytes(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}
