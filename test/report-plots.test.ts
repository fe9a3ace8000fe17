import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Jimp } from 'jimp';
import {
  blues,
  CORRECT_COLOR,
  KEPT_EPOCH_COLOR,
  niceTicks,
  plotConfusionMatrix,
  plotHistory,
  plotSampleGrid,
  TRAIN_COLOR,
  VALIDATION_COLOR,
  WRONG_COLOR,
  type Box,
  type FaceSample,
} from '../training/report/plots.ts';

type Image = Awaited<ReturnType<typeof Jimp.read>>;
type RGB = readonly [number, number, number];

let dir = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'report-plots-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** Reads the file back, checking that it is a PNG (by signature) of the reported size. */
async function readPng(file: string, width: number, height: number): Promise<Image> {
  const bytes = await readFile(file);
  assert.deepEqual([...bytes.subarray(0, 8)], PNG_SIGNATURE, `${file} is not a PNG`);
  const image = await Jimp.read(file);
  assert.equal(image.bitmap.width, width);
  assert.equal(image.bitmap.height, height);
  return image;
}

function pixel(image: Image, x: number, y: number): RGB {
  const i = (y * image.bitmap.width + x) * 4;
  const d = image.bitmap.data;
  return [d[i], d[i + 1], d[i + 2]];
}

/** Pixels inside `box` (whole image when absent) whose colour is within `tolerance` of `color`. */
function countColor(image: Image, color: RGB, tolerance = 10, box?: Box): number {
  const { x = 0, y = 0, width = image.bitmap.width, height = image.bitmap.height } = box ?? {};
  let count = 0;
  for (let py = y; py < y + height; py++) {
    for (let px = x; px < x + width; px++) {
      const p = pixel(image, px, py);
      if (Math.abs(p[0] - color[0]) <= tolerance && Math.abs(p[1] - color[1]) <= tolerance && Math.abs(p[2] - color[2]) <= tolerance) count++;
    }
  }
  return count;
}

const luminance = ([r, g, b]: RGB): number => 0.2126 * r + 0.7152 * g + 0.0722 * b;

describe('niceTicks', () => {
  test('covers the range with steps of 1, 2 or 5 times a power of ten', () => {
    // rough step (1.62 - 0.37) / 5 = 0.25 rounds up to 0.5
    assert.deepEqual(niceTicks(0.37, 1.62, 6), { ticks: [0, 0.5, 1, 1.5, 2], min: 0, max: 2, decimals: 1 });
    assert.deepEqual(niceTicks(0.46, 0.91, 6).ticks, [0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1]);
    assert.deepEqual(niceTicks(0, 1, 6).ticks, [0, 0.2, 0.4, 0.6, 0.8, 1]);
    assert.deepEqual(niceTicks(1, 20, 8).ticks, [0, 5, 10, 15, 20]);
  });

  test('widens an empty range instead of dividing by zero', () => {
    const { ticks } = niceTicks(0.7, 0.7);
    assert.ok(ticks[0] < 0.7 && ticks[ticks.length - 1] > 0.7, `ticks ${ticks} do not surround 0.7`);
  });
});

describe('plotHistory', () => {
  const epoch = Array.from({ length: 12 }, (_, i) => i + 1);
  const history = {
    epoch,
    loss: epoch.map((e) => 1.5 / e + 0.2),
    valLoss: epoch.map((e) => 1.4 / e + 0.35),
    accuracy: epoch.map((e) => 0.9 - 0.4 / e),
    valAccuracy: epoch.map((e) => 0.8 - 0.35 / e),
  };

  test('writes a 1000 x 420 PNG with train and validation curves in both panels', async () => {
    const file = join(dir, 'curves.png');
    const plot = await plotHistory(history, file, 'gender: loss and accuracy');
    const image = await readPng(file, 1000, 420);
    assert.deepEqual([plot.width, plot.height], [1000, 420]);
    for (const panel of [plot.panels.loss, plot.panels.accuracy]) {
      assert.ok(countColor(image, TRAIN_COLOR, 10, panel) > 200, 'the train curve colour is missing from a panel');
      assert.ok(countColor(image, VALIDATION_COLOR, 10, panel) > 200, 'the validation curve colour is missing from a panel');
    }
    // the two panels sit side by side without overlapping
    assert.ok(plot.panels.loss.x + plot.panels.loss.width < plot.panels.accuracy.x);
  });

  test('draws only the train curve when there was no validation set', async () => {
    const file = join(dir, 'curves-train-only.png');
    const plot = await plotHistory({ ...history, valLoss: [], valAccuracy: [] }, file, 'no validation', { width: 800, height: 360 });
    const image = await readPng(file, 800, 360);
    assert.ok(countColor(image, TRAIN_COLOR) > 200);
    assert.equal(countColor(image, VALIDATION_COLOR, 10, plot.panels.loss), 0);
  });

  test('marks the kept epoch with a labelled line in both panels, and nowhere without one', async () => {
    const file = join(dir, 'curves-kept.png');
    const plot = await plotHistory(history, file, 'age: loss and accuracy', { keptEpoch: 7 });
    const image = await readPng(file, 1000, 420);
    assert.ok(plot.kept !== undefined, 'the kept epoch is reported');
    for (const [name, panel] of Object.entries(plot.panels) as [keyof typeof plot.panels, Box][]) {
      const x = plot.kept.x[name];
      assert.ok(x > panel.x + panel.width / 2 && x < panel.x + panel.width, `epoch 7 of 12 lies right of the ${name} panel's middle`);
      // a dashed line: the colour down most of the column's height
      const column = countColor(image, KEPT_EPOCH_COLOR, 10, { x: x - 1, y: panel.y, width: 2, height: panel.height });
      assert.ok(column > panel.height * 0.6, `${column} kept-epoch pixels in the ${name} panel's column at x ${x}`);
    }
    for (const label of plot.kept.labels) assert.ok(countColor(image, KEPT_EPOCH_COLOR, 60, label) > 20, 'the "kept: epoch 7" label is drawn');
    const unmarked = await plotHistory(history, join(dir, 'curves-unmarked.png'), 'no kept epoch');
    assert.equal(unmarked.kept, undefined);
    assert.equal(countColor(await readPng(unmarked.file, 1000, 420), KEPT_EPOCH_COLOR), 0);
  });

  test('puts a described loss legend above the loss panel, where it hides no curve', async () => {
    const file = join(dir, 'curves-losses.png');
    const loss = { train: 'train: label-smoothed cross-entropy, faces augmented', validation: 'validation: cross-entropy', note: 'different losses, not comparable' };
    const plot = await plotHistory(history, file, 'gender: loss and accuracy', { loss });
    const image = await readPng(file, 1000, 420);
    const plain = await plotHistory(history, join(dir, 'curves-plain.png'), 'gender: loss and accuracy');
    assert.ok(plot.panels.loss.y > plain.panels.loss.y, 'the panels move down to make room for the legend rows');
    assert.equal(plot.panels.accuracy.y, plot.panels.loss.y, 'both panels keep one top');
    const above: Box = { x: plot.panels.loss.x - 24, y: plain.panels.loss.y - 4, width: plot.panels.loss.width, height: plot.panels.loss.y - plain.panels.loss.y };
    assert.ok(countColor(image, TRAIN_COLOR, 10, above) > 20, 'the train entry is above the panel');
    assert.ok(countColor(image, VALIDATION_COLOR, 10, above) > 20, 'the validation entry is above the panel');
    // no legend text inside the loss panel, where the plain plot prints its legend's names
    const inner = (panel: Box): Box => ({ x: panel.x + 2, y: panel.y + 2, width: panel.width - 4, height: panel.height - 4 });
    const TEXT: RGB = [0x22, 0x22, 0x22];
    assert.ok(countColor(await readPng(plain.file, 1000, 420), TEXT, 10, inner(plain.panels.loss)) > 20, 'the plain plot has its legend inside');
    assert.equal(countColor(image, TEXT, 10, inner(plot.panels.loss)), 0);
  });

  test('rejects a history whose series lengths disagree, naming the series', async () => {
    await assert.rejects(plotHistory({ ...history, loss: [1, 2] }, join(dir, 'bad.png'), 'bad'), /history\.loss has 2 values but history\.epoch has 12/);
  });
});

describe('plotConfusionMatrix', () => {
  // Row shares: the 900 cell is the largest count and the largest share of its row (90%).
  const cm = [
    [900, 60, 40],
    [30, 120, 50],
    [0, 0, 0],
  ];

  test('colours the cell with the largest count darkest and an empty row lightest', async () => {
    const file = join(dir, 'confusion.png');
    const plot = await plotConfusionMatrix(cm, ['White', 'Black', 'Asian'], file, 'ethnicity: confusion matrix');
    const image = await readPng(file, plot.width, plot.height);
    // a corner of each cell, away from the printed count
    const cellColor = (t: number, p: number): RGB => pixel(image, plot.cells[t][p].x + 3, plot.cells[t][p].y + 3);
    const darkest = luminance(cellColor(0, 0));
    for (let t = 0; t < 3; t++) {
      for (let p = 0; p < 3; p++) {
        if (t !== 0 || p !== 0) assert.ok(luminance(cellColor(t, p)) > darkest, `cell ${t},${p} is as dark as the 900 cell`);
      }
    }
    assert.deepEqual(cellColor(0, 0), blues(0.9));
    assert.deepEqual(cellColor(1, 1), blues(0.6));
    assert.deepEqual(cellColor(2, 2), blues(0));
  });

  test('prints the count inside the cell (white text on a dark cell)', async () => {
    const file = join(dir, 'confusion-text.png');
    const plot = await plotConfusionMatrix(cm, ['White', 'Black', 'Asian'], file, 't');
    const image = await readPng(file, plot.width, plot.height);
    assert.ok(countColor(image, [255, 255, 255], 40, plot.cells[0][0]) > 20, 'no light text pixels in the dark 900 cell');
  });

  test('rejects a matrix whose size does not match the labels', async () => {
    await assert.rejects(plotConfusionMatrix(cm, ['a', 'b'], join(dir, 'bad.png'), 'bad'), /must be 2 x 2/);
  });
});

describe('plotSampleGrid', () => {
  /** A 48 x 48 face-sized gradient whose pixel (x, y) is (x * 5 + y) % 256. */
  function gradient(): Uint8Array {
    const pixels = new Uint8Array(48 * 48);
    for (let y = 0; y < 48; y++) for (let x = 0; x < 48; x++) pixels[y * 48 + x] = (x * 5 + y) % 256;
    return pixels;
  }
  const samples: FaceSample[] = [0, 1, 2, 3, 4].map((k) => ({
    pixels: gradient(),
    height: 48,
    width: 48,
    channels: 1,
    predicted: 'female',
    truth: k < 3 ? 'female' : 'male',
    correct: k < 3,
  }));

  test('upscales each face 3x with nearest neighbour, framed green when right and red when wrong', async () => {
    const file = join(dir, 'samples.png');
    const plot = await plotSampleGrid(samples, file, 'gender: sample faces');
    const image = await readPng(file, plot.width, plot.height);
    assert.equal(plot.faces.length, 5);
    for (const face of plot.faces) assert.deepEqual([face.width, face.height], [144, 144]);
    // 5 faces: 3 per row by default, so two rows
    assert.equal(plot.faces[3].x, plot.faces[0].x);
    assert.ok(plot.faces[3].y > plot.faces[0].y + 144);
    const face = plot.faces[1];
    for (const [x, y] of [[0, 0], [10, 7], [47, 47]]) {
      const value = (x * 5 + y) % 256;
      for (const [dx, dy] of [[0, 0], [2, 2]]) assert.deepEqual(pixel(image, face.x + x * 3 + dx, face.y + y * 3 + dy), [value, value, value]);
    }
    assert.deepEqual(pixel(image, plot.faces[0].x - 2, plot.faces[0].y + 50), CORRECT_COLOR);
    assert.deepEqual(pixel(image, plot.faces[4].x - 2, plot.faces[4].y + 50), WRONG_COLOR);
  });

  test('draws RGB faces in colour and honours scale and columns', async () => {
    const red = new Uint8Array(10 * 8 * 3);
    for (let i = 0; i < red.length; i += 3) red[i] = 200;
    const file = join(dir, 'samples-rgb.png');
    const plot = await plotSampleGrid([{ ...samples[0], pixels: red, height: 10, width: 8, channels: 3 }, { ...samples[0], pixels: red, height: 10, width: 8, channels: 3 }], file, 'rgb', { scale: 5, columns: 1 });
    const image = await readPng(file, plot.width, plot.height);
    assert.deepEqual([plot.faces[0].width, plot.faces[0].height], [40, 50]);
    assert.equal(plot.faces[1].x, plot.faces[0].x);
    assert.deepEqual(pixel(image, plot.faces[0].x + 20, plot.faces[0].y + 25), [200, 0, 0]);
  });

  test('writes a valid picture when there are no faces to show', async () => {
    const file = join(dir, 'samples-empty.png');
    const plot = await plotSampleGrid([], file, 'no misclassified faces');
    await readPng(file, plot.width, plot.height);
    assert.deepEqual(plot.faces, []);
  });

  test('rejects a face whose pixel count does not match its size, naming the sample', async () => {
    await assert.rejects(
      plotSampleGrid([{ ...samples[0], channels: 3 }], join(dir, 'bad.png'), 'bad'),
      /samples\[0\]\.pixels has 2304 bytes; 48 x 48 x 3 needs 6912/,
    );
    await assert.rejects(plotSampleGrid([{ ...samples[0], channels: 2 }], join(dir, 'bad.png'), 'bad'), /samples\[0\]\.channels is 2; expected 1 or 3/);
  });
});
