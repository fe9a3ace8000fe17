/**
 * The UTKFace folder loader and loadDataset's cache, on folders of images generated here with jimp;
 * plus one check on the real folder beside the repository (`../shared/data/utkface`) when it is there.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Jimp } from 'jimp';
import { decodeImage } from '../imaging/decode.ts';
import { MAX_AGE, MIN_AGE } from '../contract/labels.ts';
import { preprocessToBytes, SEED_INPUT, type InputSpec } from '../contract/preprocess.ts';
import type { Dataset, LoadOptions } from '../training/data/dataset.ts';
import { createProgress } from '../training/data/ingest.ts';
import { loadDataset } from '../training/data/load.ts';
import { loadUtkFace, MIN_FILES_FOR_WORKERS, parseUtkFaceName } from '../training/data/utkface.ts';
import { DEFAULT_UTKFACE } from '../node-shared/paths.ts';

/** A generated face-sized JPEG whose pixels depend on `seed`, so that every file differs. */
async function generatedJpeg(seed: number, width = 64, height = 56): Promise<Uint8Array> {
  const image = new Jimp({ width, height, color: 0x000000ff });
  const data = image.bitmap.data;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const at = (y * width + x) * 4;
      data[at] = (x * 4 + seed * 37) & 255;
      data[at + 1] = (y * 4 + seed * 11) & 255;
      data[at + 2] = ((x + y) * 2 + seed * 5) & 255;
    }
  }
  const jpeg = await image.getBuffer('image/jpeg', { quality: 90 });
  // A plain Uint8Array: this repository's @types/node Buffer does not type-check as one under TS 5.9.
  return new Uint8Array(jpeg.buffer, jpeg.byteOffset, jpeg.byteLength);
}

/** Well-formed names: [file name, age, gender, race]; the last two have the real set's odd date fields. */
const GOOD: [string, number, number, number][] = [
  ['1_0_0_20170109150557335.jpg.chip.jpg', 1, 0, 0],
  ['116_1_4_20170120134921760.jpg.chip.jpg', 116, 1, 4],
  ['26_1_2_20170116174525125.jpg.chip.jpg', 26, 1, 2],
  ['30_0_1_20170117131013526.jpg.chip.jpg', 30, 0, 1],
  ['35_1_3_20170119153212343.jpg.chip.jpg', 35, 1, 3],
  ['42_0_0_20170104201443273.jpg.chip.jpg', 42, 0, 0],
  ['5_1_1_20170109193024515.jpg.chip.jpg', 5, 1, 1],
  ['61_0_2_20170104165720436.jpg.chip.jpg', 61, 0, 2],
  ['24_0_1_20170116220224657 .jpg.chip.jpg', 24, 0, 1],
  ['55_0_0_20170116232725357jpg.chip.jpg', 55, 0, 0],
];

/** Every malformed entry a loader must survive: [entry as reported, reason counted]. */
const MALFORMED: [string, string][] = [
  ['39_1_20170116174525125.jpg.chip.jpg', 'missing race field'],
  ['x_0_1_20170116174525125.jpg.chip.jpg', 'non-numeric label'],
  ['0_0_1_20170116174525125.jpg.chip.jpg', 'age out of range'],
  ['117_0_1_20170116174525125.jpg.chip.jpg', 'age out of range'],
  ['30_2_1_20170116174525125.jpg.chip.jpg', 'gender out of range'],
  ['30_1_5_20170116174525125.jpg.chip.jpg', 'race out of range'],
  ['face.jpg', 'malformed name'],
  ['31_1_2_20170116174525125.jpg.chip.jpg', 'undecodable image'], // text in a .jpg
  ['32_1_2_20170116174525125.jpg.chip.jpg', 'undecodable image'], // a JPEG cut in half
  ['33_0_3_20170116174525125.jpg.chip.jpg', 'undecodable image'], // empty file
  ['notes.txt', 'not an image file'],
  ['.DS_Store', 'not an image file'],
  ['extra/', 'subfolder'],
];

async function makeFolder(root: string, name: string, withMalformed: boolean): Promise<string> {
  const folder = join(root, name);
  await mkdir(folder, { recursive: true });
  await Promise.all(GOOD.map(async ([file], i) => writeFile(join(folder, file), await generatedJpeg(i))));
  if (withMalformed) {
    for (const [entry] of MALFORMED) {
      if (entry.endsWith('/')) await mkdir(join(folder, entry), { recursive: true });
      else await writeFile(join(folder, entry), await generatedJpeg(99));
    }
    await writeFile(join(folder, '31_1_2_20170116174525125.jpg.chip.jpg'), 'this is not a JPEG\n');
    const jpeg = await generatedJpeg(7);
    await writeFile(join(folder, '32_1_2_20170116174525125.jpg.chip.jpg'), jpeg.subarray(0, Math.floor(jpeg.length / 2)));
    await writeFile(join(folder, '33_0_3_20170116174525125.jpg.chip.jpg'), '');
    await writeFile(join(folder, 'notes.txt'), 'labels are in the file names\n');
    await writeFile(join(folder, 'extra', '20_0_0_20170116174525125.jpg.chip.jpg'), await generatedJpeg(8));
  }
  return folder;
}

const QUIET: LoadOptions = { progress: false, workers: 1, cacheDir: false, log: () => {} };
const faceBytes = (spec: InputSpec) => spec.height * spec.width * spec.channels;

function face(dataset: Dataset, name: string): Uint8Array {
  const i = dataset.names.indexOf(name);
  assert.ok(i >= 0, `${name} is in the dataset`);
  const size = faceBytes(dataset.spec);
  return dataset.pixels.subarray(i * size, (i + 1) * size);
}

let root = '';
let folder = '';
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'utkface-test-'));
  folder = await makeFolder(root, 'faces', true);
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('parseUtkFaceName', () => {
  test('reads age, gender and race from a UTKFace name', () => {
    assert.deepEqual(parseUtkFaceName('26_1_2_20170116174525125.jpg.chip.jpg'), { labels: { age: 26, gender: 1, ethnicity: 2 } });
  });

  test('names the problem of each malformed name', () => {
    for (const [entry, reason] of MALFORMED) {
      if (['undecodable image', 'not an image file', 'subfolder'].includes(reason)) continue;
      const parsed = parseUtkFaceName(entry);
      assert.ok('reason' in parsed && parsed.reason === reason, `${entry}: expected "${reason}", got ${JSON.stringify(parsed)}`);
    }
  });
});

describe('loadUtkFace', () => {
  test('loads every well-named image with its labels, and skips, counts and reports each malformed entry', async () => {
    const dataset = await loadUtkFace(folder, SEED_INPUT, QUIET);
    assert.equal(dataset.count, GOOD.length);
    assert.deepEqual(dataset.names, GOOD.map(([name]) => name).sort());
    for (const [name, age, gender, race] of GOOD) {
      const i = dataset.names.indexOf(name);
      assert.deepEqual([dataset.ages[i], dataset.genders[i], dataset.ethnicities[i]], [age, gender, race], name);
    }
    assert.equal(dataset.pixels.length, GOOD.length * 48 * 48);

    const expected: Record<string, number> = {};
    for (const [, reason] of MALFORMED) expected[reason] = (expected[reason] ?? 0) + 1;
    assert.deepEqual(dataset.skipped.byReason, expected);
    assert.equal(dataset.skipped.count, MALFORMED.length);
    for (const [entry, reason] of MALFORMED) {
      assert.ok(
        dataset.skipped.examples.some((e) => e.reason.startsWith(reason) && (e.entry === entry || reason === 'age out of range')),
        `an example of "${reason}" (${entry}) is reported: ${JSON.stringify(dataset.skipped.examples)}`,
      );
    }
    const undecodable = dataset.skipped.examples.find((e) => e.entry === '31_1_2_20170116174525125.jpg.chip.jpg');
    assert.match(undecodable?.reason ?? '', /undecodable image: Not a supported image/);
  });

  test('holds the same bytes as decodeImage + preprocessToBytes in this thread, for a 48x48 gray and a 32x32 RGB spec', async () => {
    const rgb: InputSpec = { height: 32, width: 32, channels: 3, scaling: 'unit' };
    for (const spec of [SEED_INPUT, rgb]) {
      const dataset = await loadUtkFace(folder, spec, QUIET);
      for (const [name] of GOOD.slice(0, 3)) {
        const expected = preprocessToBytes(await decodeImage(await readFile(join(folder, name))), spec);
        assert.deepEqual(face(dataset, name), expected, `${name} at ${spec.height}x${spec.width}x${spec.channels}`);
      }
    }
  });

  test(`decodes ${MIN_FILES_FOR_WORKERS}+ files in worker threads, to the same bytes with 1 and 2 workers as on this thread`, async () => {
    const many = join(root, 'many');
    await mkdir(many);
    const names = Array.from({ length: MIN_FILES_FOR_WORKERS + 6 }, (_, i) => `${20 + (i % 50)}_${i % 2}_${i % 5}_2017010100000${String(i).padStart(4, '0')}.jpg.chip.jpg`);
    await Promise.all(names.map(async (name, i) => writeFile(join(many, name), await generatedJpeg(i, 40, 40))));
    await writeFile(join(many, names[5]), 'not a JPEG');
    const one = await loadUtkFace(many, SEED_INPUT, QUIET);
    const two = await loadUtkFace(many, SEED_INPUT, { ...QUIET, workers: 2 });
    assert.equal(one.count, names.length - 1);
    assert.deepEqual(one.skipped.byReason, { 'undecodable image': 1 });
    assert.equal(one.skipped.examples[0].entry, names[5]);
    assert.deepEqual(two.names, one.names);
    assert.deepEqual(two.pixels, one.pixels);
    for (const name of [names[0], names.at(-1)!]) {
      const expected = preprocessToBytes(await decodeImage(await readFile(join(many, name))), SEED_INPUT);
      assert.deepEqual(face(two, name), expected, name);
    }
  });

  test('a limit keeps the same seeded subset on every run, in name order; another seed keeps another', async () => {
    const first = await loadUtkFace(folder, SEED_INPUT, { ...QUIET, limit: 4 });
    const again = await loadUtkFace(folder, SEED_INPUT, { ...QUIET, limit: 4 });
    const otherSeed = await loadUtkFace(folder, SEED_INPUT, { ...QUIET, limit: 4, seed: 7 });
    assert.equal(first.count, 4);
    assert.deepEqual(again.names, first.names);
    assert.deepEqual(again.pixels, first.pixels);
    assert.deepEqual(first.names, [...first.names].sort());
    assert.notDeepEqual(otherSeed.names, first.names);
    const all = await loadUtkFace(folder, SEED_INPUT, { ...QUIET, limit: 100 });
    assert.equal(all.count, GOOD.length, 'a limit above the number of faces keeps them all');
  });

  test('a limit replaces a chosen file that fails to decode with the next one of the shuffle', async () => {
    const mixed = join(root, 'mostly-broken');
    await mkdir(mixed);
    await writeFile(join(mixed, '20_0_0_20170101000000001.jpg.chip.jpg'), 'broken');
    await writeFile(join(mixed, '21_0_0_20170101000000002.jpg.chip.jpg'), 'broken');
    await writeFile(join(mixed, '22_0_0_20170101000000003.jpg.chip.jpg'), await generatedJpeg(3));
    const dataset = await loadUtkFace(mixed, SEED_INPUT, { ...QUIET, limit: 1 });
    assert.deepEqual(dataset.names, ['22_0_0_20170101000000003.jpg.chip.jpg']);
  });

  test('progress: a bar with count, rate and ETA on a terminal; a line every 10% elsewhere', () => {
    const written: string[] = [];
    const pipe = { isTTY: false, write: (text: string) => written.push(text) };
    const progress = createProgress({ label: 'decoding', total: 200, stream: pipe });
    for (let done = 1; done <= 200; done++) progress.update(done);
    progress.finish();
    assert.equal(written.length, 11);
    assert.match(written[0], /^decoding +20\/200 +10% +[\d.]+ images\/s +ETA \d+:\d\d\n$/);
    assert.match(written[10], /^decoding +200\/200 +100% .* in \d+:\d\d\n$/);

    const screen: string[] = [];
    const tty = createProgress({ label: 'decoding', total: 50, stream: { isTTY: true, write: (text: string) => screen.push(text) } });
    tty.update(50);
    tty.finish();
    assert.match(screen[0], /^\rdecoding +\[#{24}\] +50\/50 +100% +[\d.]+ images\/s +ETA/);
    assert.ok(screen.at(-1)!.endsWith('\n'));

    const silent: string[] = [];
    const off = createProgress({ label: 'x', total: 10, enabled: false, stream: { isTTY: false, write: (t: string) => silent.push(t) } });
    off.update(10);
    off.finish();
    assert.deepEqual(silent, []);
  });
});

describe('loadDataset', () => {
  test('the second load of a folder comes from the cache, with the same faces and skip report', async () => {
    const cacheDir = join(root, 'cache-hit');
    const lines: string[] = [];
    const options: LoadOptions = { ...QUIET, cacheDir, log: (line) => lines.push(line) };
    const cold = await loadDataset(folder, SEED_INPUT, options);
    assert.equal(cold.cache?.status, 'written');
    const warm = await loadDataset(folder, SEED_INPUT, options);
    assert.equal(warm.cache?.status, 'hit');
    assert.equal(warm.cache?.file, cold.cache?.file);
    assert.deepEqual({ ...warm, cache: undefined }, { ...cold, cache: undefined });
    assert.ok(lines.some((l) => l.startsWith(`loaded ${GOOD.length} faces`) && l.includes('(cache hit: ')), lines.join('\n'));
    assert.ok(lines.some((l) => l.startsWith(`skipped ${MALFORMED.length}:`) && l.includes('1 missing race field')), lines.join('\n'));
    assert.ok(lines.some((l) => l.includes('e.g. 39_1_20170116174525125.jpg.chip.jpg: missing race field')), lines.join('\n'));

    const otherSpec = await loadDataset(folder, { ...SEED_INPUT, height: 32, width: 32 }, options);
    assert.equal(otherSpec.cache?.status, 'written', 'another spec has its own cache file');
    const limited = await loadDataset(folder, SEED_INPUT, { ...options, limit: 3 });
    assert.equal(limited.cache?.status, 'written', 'a limit has its own cache file');
    assert.equal((await readdir(cacheDir)).length, 3);
  });

  test('a folder that changed (a file added) misses the cache', async () => {
    const changing = await makeFolder(root, 'changing', false);
    const cacheDir = join(root, 'cache-change');
    assert.equal((await loadDataset(changing, SEED_INPUT, { ...QUIET, cacheDir })).cache?.status, 'written');
    await writeFile(join(changing, '70_1_0_20170101000000009.jpg.chip.jpg'), await generatedJpeg(42));
    const after = await loadDataset(changing, SEED_INPUT, { ...QUIET, cacheDir });
    assert.equal(after.cache?.status, 'written');
    assert.equal(after.count, GOOD.length + 1);
  });

  test('a corrupted, truncated or foreign cache file is detected and rebuilt, not crashed on', async () => {
    const cacheDir = join(root, 'cache-corrupt');
    const lines: string[] = [];
    const options: LoadOptions = { ...QUIET, cacheDir, log: (line) => lines.push(line) };
    const cold = await loadDataset(folder, SEED_INPUT, options);
    const file = cold.cache!.file!;
    const { size } = await stat(file);

    const bytes = new Uint8Array(await readFile(file));
    bytes[size - 5000] ^= 0xff; // one pixel byte
    await writeFile(file, bytes);
    const flipped = await loadDataset(folder, SEED_INPUT, options);
    assert.equal(flipped.cache?.status, 'rebuilt');
    assert.deepEqual(flipped.pixels, cold.pixels);
    assert.ok(lines.some((l) => l.includes('checksum mismatch') && l.includes('rebuilding')), lines.join('\n'));

    await truncate(file, size - 100);
    assert.equal((await loadDataset(folder, SEED_INPUT, options)).cache?.status, 'rebuilt');
    assert.ok(lines.some((l) => l.includes(`${size - 100} bytes, expected ${size}`)), lines.join('\n'));

    await truncate(file, 20);
    assert.equal((await loadDataset(folder, SEED_INPUT, options)).cache?.status, 'rebuilt');
    await writeFile(file, 'not a cache file at all');
    assert.equal((await loadDataset(folder, SEED_INPUT, options)).cache?.status, 'rebuilt');

    const healed = await loadDataset(folder, SEED_INPUT, options);
    assert.equal(healed.cache?.status, 'hit');
    assert.deepEqual(healed.pixels, cold.pixels);
  });

  test('names a missing path, a path that is neither a folder nor a .csv, and a folder without faces', async () => {
    await assert.rejects(loadDataset(join(root, 'nope'), SEED_INPUT, QUIET), /Data source ".*nope" does not exist.*UTKFace folder or a Kaggle age_gender.csv/);
    const text = join(root, 'faces.txt');
    await writeFile(text, 'hello');
    await assert.rejects(loadDataset(text, SEED_INPUT, QUIET), /is neither a folder nor a \.csv file/);
    const junk = join(root, 'junk');
    await mkdir(join(junk, 'sub'), { recursive: true });
    await writeFile(join(junk, 'readme.md'), '# no faces here');
    await assert.rejects(loadDataset(junk, SEED_INPUT, QUIET), /No faces could be loaded from .*junk: 1 not an image file, 1 subfolder/);
    await assert.rejects(loadDataset(folder, SEED_INPUT, { ...QUIET, limit: 0 }), /limit must be a whole number of at least 1; got 0/);
  });
});

describe('the real UTKFace folder (../shared/data/utkface)', () => {
  test('loads a 300-face subset with labels in range and the three names without a race field skipped', async (t) => {
    if (!existsSync(DEFAULT_UTKFACE)) {
      t.skip(`no UTKFace folder at ${DEFAULT_UTKFACE}: put the data beside the repository to run this check`);
      return;
    }
    const dataset = await loadDataset(DEFAULT_UTKFACE, SEED_INPUT, { ...QUIET, limit: 300, workers: 2 });
    assert.equal(dataset.count, 300);
    assert.equal(dataset.pixels.length, 300 * 48 * 48);
    assert.equal(new Set(dataset.names).size, 300);
    assert.deepEqual(dataset.skipped.byReason, { 'missing race field': 3 });
    assert.ok(dataset.ages.every((age) => age >= MIN_AGE && age <= MAX_AGE));
    assert.ok(dataset.genders.every((gender) => gender <= 1));
    assert.ok(dataset.ethnicities.every((race) => race <= 4));
    assert.deepEqual(new Set(dataset.genders), new Set([0, 1]));
    assert.deepEqual(new Set(dataset.ethnicities), new Set([0, 1, 2, 3, 4]));
    const means = Array.from({ length: 300 }, (_, i) => dataset.pixels.subarray(i * 2304, (i + 1) * 2304).reduce((a, b) => a + b, 0) / 2304);
    assert.ok(means.every((mean) => mean > 5 && mean < 250), 'every face has content (not blank)');
  });
});
