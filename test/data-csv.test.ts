/**
 * The Kaggle CSV loader and the folder-to-CSV converter, on files generated here (no dataset images).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Jimp } from 'jimp';
import { SEED_INPUT, type InputSpec } from '../contract/preprocess.ts';
import { convertUtkFaceToCsv } from '../training/cli/convert-csv.ts';
import type { LoadOptions } from '../training/data/dataset.ts';
import { CSV_HEADER, CsvFormatError, formatCsvRow, loadKaggleCsv } from '../training/data/kaggle-csv.ts';
import { loadDataset } from '../training/data/load.ts';
import { REPO_ROOT } from '../node-shared/paths.ts';

const PIXELS = 48 * 48;
const QUIET: LoadOptions = { progress: false, workers: 1, cacheDir: false, log: () => {} };

/** 48x48 gray bytes that depend on `seed`. */
function grayFace(seed: number): Uint8Array {
  return Uint8Array.from({ length: PIXELS }, (_, i) => (i * 7 + seed * 31) % 256);
}

function row(age: number | string, ethnicity: number | string, gender: number | string, name: string, pixels: string): string {
  return `${age},${ethnicity},${gender},${name},${pixels}`;
}

const pixelText = (seed: number) => Array.from(grayFace(seed)).join(' ');

/** Rows that must load: [age, ethnicity, gender, img_name]. */
const GOOD: [number, number, number, string][] = [
  [1, 0, 0, '1_0_0_20161219140623097.jpg.chip.jpg'],
  [116, 4, 1, '116_1_4_20170120134921760.jpg.chip.jpg'],
  [26, 2, 1, '26_1_2_20170116174525125.jpg.chip.jpg'],
  [30, 1, 0, '30_0_1_20170117131013526.jpg.chip.jpg'],
  [45, 3, 1, '45_1_3_20170119153212343.jpg.chip.jpg'],
  [61, 2, 0, '61_0_2_20170104165720436.jpg.chip.jpg'],
];

/** Every malformed row: [line, reason counted]. */
const MALFORMED: [string, string][] = [
  [row(30, 1, 0, 'short.jpg', pixelText(1).replace(/ \d+$/, '')), 'wrong pixel count'],
  [row(30, 1, 0, 'long.jpg', `${pixelText(1)} 7`), 'wrong pixel count'],
  [row(30, 1, 0, 'letters.jpg', pixelText(1).replace(/^\d+/, 'abc')), 'non-numeric pixel'],
  [row(30, 1, 0, 'fraction.jpg', pixelText(1).replace(/^\d+/, '12.5')), 'non-numeric pixel'],
  [row(30, 1, 0, 'bright.jpg', pixelText(1).replace(/^\d+/, '256')), 'pixel out of range'],
  [row(30, 1, 0, 'negative.jpg', pixelText(1).replace(/^\d+/, '-1')), 'pixel out of range'],
  [row('thirty', 1, 0, 'word-age.jpg', pixelText(1)), 'non-numeric label'],
  [row(30, '', 0, 'no-ethnicity.jpg', pixelText(1)), 'non-numeric label'],
  [row(0, 1, 0, 'age-zero.jpg', pixelText(1)), 'age out of range'],
  [row(117, 1, 0, 'age-117.jpg', pixelText(1)), 'age out of range'],
  [row(30, 5, 0, 'ethnicity-5.jpg', pixelText(1)), 'ethnicity out of range'],
  [row(30, 1, 2, 'gender-2.jpg', pixelText(1)), 'gender out of range'],
  [`30,1,0,${pixelText(1)}`, 'wrong column count'],
  [`30,1,0,extra,columns.jpg,${pixelText(1)}`, 'wrong column count'],
];

let root = '';
let goodCsv = '';
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'csv-test-'));
  goodCsv = join(root, 'good.csv');
  await writeFile(goodCsv, [CSV_HEADER, ...GOOD.map(([age, eth, gender, name], i) => row(age, eth, gender, name, pixelText(i))), ''].join('\n'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('loadKaggleCsv', () => {
  test('loads every row with its labels, name and exact pixels, in file order', async () => {
    const dataset = await loadKaggleCsv(goodCsv, SEED_INPUT, QUIET);
    assert.equal(dataset.count, GOOD.length);
    assert.deepEqual(dataset.spec, SEED_INPUT);
    assert.deepEqual(dataset.names, GOOD.map(([, , , name]) => name));
    assert.deepEqual(Array.from(dataset.ages), GOOD.map(([age]) => age));
    assert.deepEqual(Array.from(dataset.ethnicities), GOOD.map(([, eth]) => eth));
    assert.deepEqual(Array.from(dataset.genders), GOOD.map(([, , gender]) => gender));
    GOOD.forEach((_, i) => assert.deepEqual(dataset.pixels.subarray(i * PIXELS, (i + 1) * PIXELS), grayFace(i)));
    assert.equal(dataset.skipped.count, 0);
  });

  test('skips, counts and reports each malformed row, with CRLF line ends, a quoted name and blank lines', async () => {
    const file = join(root, 'malformed.csv');
    const lines = [
      `\uFEFF${CSV_HEADER}`,
      row(20, 0, 1, '"quoted, with a comma.jpg"', pixelText(8)),
      ...MALFORMED.map(([line]) => line),
      '',
      row(21, 1, 0, 'last.jpg', pixelText(9)),
      '',
    ];
    await writeFile(file, lines.join('\r\n'));
    const dataset = await loadKaggleCsv(file, SEED_INPUT, QUIET);
    assert.deepEqual(dataset.names, ['quoted, with a comma.jpg', 'last.jpg']);
    assert.deepEqual(dataset.pixels.subarray(PIXELS), grayFace(9));

    const expected: Record<string, number> = {};
    for (const [, reason] of MALFORMED) expected[reason] = (expected[reason] ?? 0) + 1;
    assert.deepEqual(dataset.skipped.byReason, expected);
    assert.equal(dataset.skipped.count, MALFORMED.length);
    for (const reason of Object.keys(expected)) {
      assert.ok(dataset.skipped.examples.some((e) => e.reason.startsWith(reason)), `an example of "${reason}": ${JSON.stringify(dataset.skipped.examples)}`);
    }
    const examples = Object.fromEntries(dataset.skipped.examples.map((e) => [e.entry, e.reason]));
    assert.equal(examples['line 3 (short.jpg)'], 'wrong pixel count: 2303 values, expected 2304 (48x48)');
    assert.equal(examples['line 5 (letters.jpg)'], 'non-numeric pixel: "abc"');
    assert.equal(examples['line 7 (bright.jpg)'], 'pixel out of range: 256, expected 0 to 255');
    assert.equal(examples['line 13 (ethnicity-5.jpg)'], 'ethnicity out of range: 5, expected 0 to 4');
    assert.match(examples['line 15'], /^wrong column count: 4 columns, expected 5/);
  });

  test('a wrong header is an error that shows the expected header', async () => {
    const file = join(root, 'wrong-header.csv');
    await writeFile(file, `age,gender,ethnicity,img_name,pixels\n${row(30, 1, 0, 'a.jpg', pixelText(1))}\n`);
    await assert.rejects(loadKaggleCsv(file, SEED_INPUT, QUIET), (error) => {
      assert.ok(error instanceof CsvFormatError);
      assert.match(error.message, /has the header "age,gender,ethnicity,img_name,pixels"; expected "age,ethnicity,gender,img_name,pixels"/);
      return true;
    });
    const empty = join(root, 'empty.csv');
    await writeFile(empty, '');
    await assert.rejects(loadKaggleCsv(empty, SEED_INPUT, QUIET), /empty\.csv is empty; expected the header/);
  });

  test('any spec other than 48x48x1 is an error that says what the CSV holds and what was asked', async () => {
    const rgb: InputSpec = { height: 48, width: 48, channels: 3, scaling: 'unit' };
    const bigger: InputSpec = { height: 64, width: 64, channels: 1, scaling: 'unit' };
    await assert.rejects(loadKaggleCsv(goodCsv, rgb, QUIET), /holds 48x48 grayscale faces .* only serve an input spec of 48x48x1; asked for 48x48x3/);
    await assert.rejects(loadDataset(goodCsv, bigger, QUIET), /holds 48x48 grayscale faces .* asked for 64x64x1/);
  });

  test('a limit keeps the same seeded subset on every run, in file order', async () => {
    const first = await loadKaggleCsv(goodCsv, SEED_INPUT, { ...QUIET, limit: 3 });
    const again = await loadKaggleCsv(goodCsv, SEED_INPUT, { ...QUIET, limit: 3 });
    assert.equal(first.count, 3);
    assert.deepEqual(again.names, first.names);
    assert.deepEqual(again.pixels, first.pixels);
    const order = GOOD.map(([, , , name]) => name);
    assert.deepEqual(first.names, [...first.names].sort((a, b) => order.indexOf(a) - order.indexOf(b)));
  });

  test('loadDataset reads a CSV from the cache the second time', async () => {
    const options: LoadOptions = { ...QUIET, cacheDir: join(root, 'cache') };
    const cold = await loadDataset(goodCsv, SEED_INPUT, options);
    const warm = await loadDataset(goodCsv, SEED_INPUT, options);
    assert.deepEqual([cold.cache?.status, warm.cache?.status], ['written', 'hit']);
    assert.deepEqual(warm.pixels, cold.pixels);
    assert.deepEqual(warm.names, cold.names);
  });

  test('formatCsvRow quotes a name with a comma and refuses a face that is not 48x48', () => {
    assert.equal(formatCsvRow({ age: 3, ethnicity: 2, gender: 1 }, 'a,b"c.jpg', new Uint8Array(PIXELS)).slice(0, 20), '3,2,1,"a,b""c.jpg",0');
    assert.throws(() => formatCsvRow({ age: 3, ethnicity: 2, gender: 1 }, 'x', new Uint8Array(10)), /holds 2304 pixels \(48x48 gray\); got 10/);
  });
});

describe('convert:csv', () => {
  /** A UTKFace-style folder of generated 90x80 RGB JPEGs (centre-cropped by preprocessing), plus junk. */
  async function generatedFolder(): Promise<string> {
    const folder = join(root, 'utkface');
    await mkdir(folder, { recursive: true });
    await Promise.all(
      GOOD.map(async ([age, eth, gender, name], i) => {
        const image = new Jimp({ width: 90, height: 80, color: 0x000000ff });
        image.scan((x, y, at) => {
          image.bitmap.data[at] = (x * 3 + i * 40) & 255;
          image.bitmap.data[at + 1] = (y * 3 + age) & 255;
          image.bitmap.data[at + 2] = (x + y + eth * 50 + gender * 20) & 255;
        });
        const jpeg = await image.getBuffer('image/jpeg', { quality: 95 });
        await writeFile(join(folder, name), new Uint8Array(jpeg.buffer, jpeg.byteOffset, jpeg.byteLength));
      }),
    );
    await writeFile(join(folder, '39_1_20170116174525125.jpg.chip.jpg'), 'no race field, and not a JPEG either');
    await writeFile(join(folder, 'notes.txt'), 'junk');
    return folder;
  }

  test('a folder converted to CSV loads back with the same names, labels and pixels (within 1 level)', async () => {
    const folder = await generatedFolder();
    const csv = join(root, 'converted.csv');
    assert.equal(await convertUtkFaceToCsv(folder, csv, QUIET), GOOD.length);
    assert.equal((await readFile(csv, 'utf8')).split('\n')[0], CSV_HEADER);

    const fromFolder = await loadDataset(folder, SEED_INPUT, QUIET);
    const fromCsv = await loadDataset(csv, SEED_INPUT, QUIET);
    assert.equal(fromCsv.count, fromFolder.count);
    assert.deepEqual(fromCsv.names, fromFolder.names);
    assert.deepEqual(fromCsv.ages, fromFolder.ages);
    assert.deepEqual(fromCsv.genders, fromFolder.genders);
    assert.deepEqual(fromCsv.ethnicities, fromFolder.ethnicities);
    assert.equal(fromCsv.pixels.length, fromFolder.pixels.length);
    const worst = fromCsv.pixels.reduce((max, v, i) => Math.max(max, Math.abs(v - fromFolder.pixels[i])), 0);
    assert.ok(worst <= 1, `largest pixel difference ${worst}`);
    assert.equal(fromCsv.skipped.count, 0);
    assert.deepEqual(fromFolder.skipped.byReason, { 'missing race field': 1, 'not an image file': 1 });

    const limitedFolder = await loadDataset(folder, SEED_INPUT, { ...QUIET, limit: 3 });
    const limitedCsv = await loadDataset(csv, SEED_INPUT, { ...QUIET, limit: 3 });
    assert.deepEqual(limitedCsv.names, limitedFolder.names, 'a limit keeps the same faces from both');
  });

  test('the command names the missing or unknown flag, points to --help and exits 2', () => {
    const run = (...args: string[]) =>
      spawnSync(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'training', 'cli', 'convert-csv.ts'), ...args], { cwd: REPO_ROOT, encoding: 'utf8' });
    const missing = run('--data', root);
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /error: --out is required/);
    assert.match(missing.stderr, /^Run `npm run convert:csv -- --help` for usage\.$/m);
    const unknown = run('--data', root, '--out', join(root, 'x.csv'), '--colour');
    assert.equal(unknown.status, 2);
    assert.match(unknown.stderr, /--colour/);
    assert.match(unknown.stderr, /Run `npm run convert:csv -- --help` for usage\./);
  });
});
