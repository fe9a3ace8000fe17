import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { alignFace, alignmentProblem, applySimilarity, cropToImage, fitSimilarity, warpToCrop, type Similarity } from '../contract/face/align.ts';
import type { FaceLandmarks, Point } from '../contract/face/blazeface.ts';
import { FACE_TEMPLATE } from '../contract/face/template.ts';
import { preprocessToBytes } from '../contract/preprocess.ts';
import { seededRandom } from '../node-shared/random.ts';
import { randomImage, referenceWarpToCrop } from './helpers/face-reference.ts';

const IDENTITY: Similarity = { a: 1, b: 0, tx: 0, ty: 0 };

function close(actual: number, expected: number, what: string, tolerance = 1e-6): void {
  assert.ok(Math.abs(actual - expected) <= tolerance, `${what}: ${actual}, expected ${expected}`);
}

/** Scale `scale`, rotation `degrees`, then translation. */
function similarity(scale: number, degrees: number, tx: number, ty: number): Similarity {
  const angle = (degrees * Math.PI) / 180;
  return { a: scale * Math.cos(angle), b: scale * Math.sin(angle), tx, ty };
}

/** The template's keypoints carried into an image by `toImage` (ears anywhere: alignment ignores them). */
function landmarksFor(toImage: Similarity): FaceLandmarks {
  const at = (name: 'rightEye' | 'leftEye' | 'nose' | 'mouth'): Point => applySimilarity(toImage, [FACE_TEMPLATE[name][0], FACE_TEMPLATE[name][1]]);
  return { rightEye: at('rightEye'), leftEye: at('leftEye'), nose: at('nose'), mouth: at('mouth'), rightEar: [0, 0], leftEar: [0, 0] };
}

function grey(width: number, height: number, values: number[]): { width: number; height: number; channels: 1; data: Uint8Array } {
  return { width, height, channels: 1, data: Uint8Array.from(values) };
}

describe('fitSimilarity', () => {
  it('recovers a known scale, rotation and translation exactly', () => {
    const from: Point[] = [[3, 7], [-2, 11], [40, -5], [17, 23], [0, 0]];
    const known = similarity(1.7, -23, 12.5, -40.25);
    const fitted = fitSimilarity(from, from.map((p) => applySimilarity(known, p)));
    for (const key of ['a', 'b', 'tx', 'ty'] as const) close(fitted[key], known[key], key, 1e-9);
  });

  it('fits a half-turn, 180 degrees, where b is 0 and a is negative', () => {
    const fitted = fitSimilarity([[0, 0], [2, 0]], [[2, 1], [0, 1]]);
    for (const [key, value] of Object.entries({ a: -1, b: 0, tx: 2, ty: 1 })) close(fitted[key as keyof Similarity], value, key);
  });

  it('rejects lists of different lengths and points that all coincide', () => {
    assert.throws(() => fitSimilarity([[0, 0]], [[0, 0]]), /at least 2/);
    assert.throws(() => fitSimilarity([[1, 1], [1, 1]], [[0, 0], [1, 1]]), /coincide/);
  });
});

describe('cropToImage', () => {
  it('is the transform that placed the template in the image', () => {
    const known = similarity(2.5, 12, 300, 120);
    const found = cropToImage(landmarksFor(known));
    for (const key of ['a', 'b', 'tx', 'ty'] as const) close(found[key], known[key], key, 1e-9);
  });
});

describe('warpToCrop', () => {
  const image = grey(3, 3, [10, 20, 30, 40, 50, 60, 70, 80, 90]);

  it('copies the image under the identity', () => {
    assert.deepEqual([...warpToCrop(image, IDENTITY, 3, { width: 3, height: 3, channels: 1 })], [10, 20, 30, 40, 50, 60, 70, 80, 90]);
  });

  it('interpolates bilinearly between pixel centres, repeating the edge beyond the last one', () => {
    // Half a pixel right and a quarter down: each output is 3/4 of its row's mix and 1/4 of the next row's.
    const out = warpToCrop(image, { a: 1, b: 0, tx: 0.5, ty: 0.25 }, 3, { width: 3, height: 3, channels: 1 });
    const expected = [15 + 7.5, 25 + 7.5, 30 + 7.5, 45 + 7.5, 55 + 7.5, 60 + 7.5, 75, 85, 90];
    assert.deepEqual([...out], expected.map(Math.round));
  });

  it('repeats the edge pixels for a crop wholly outside the image', () => {
    const out = warpToCrop(image, { a: 1, b: 0, tx: -50, ty: 100 }, 3, { width: 3, height: 3, channels: 1 });
    assert.deepEqual([...out], [70, 70, 70, 70, 70, 70, 70, 70, 70]);
  });

  it('rotates: a quarter turn reads the image column by column', () => {
    // u runs down the image's first column: (u, v) -> (3 - v, u).
    const out = warpToCrop(image, { a: 0, b: 1, tx: 3, ty: 0 }, 3, { width: 3, height: 3, channels: 1 });
    assert.deepEqual([...out], [30, 60, 90, 20, 50, 80, 10, 40, 70]);
  });

  it('averages the footprint when it shrinks, giving what preprocessToBytes gives on whole blocks', () => {
    const values = Array.from({ length: 16 }, (_, i) => (i * 37) % 256);
    const big = grey(4, 4, values);
    const spec = { width: 2, height: 2, channels: 1 as const, scaling: 'unit' as const };
    assert.deepEqual([...warpToCrop(big, IDENTITY, 4, spec)], [...preprocessToBytes(big, spec)]);
  });

  it('converts RGB to BT.601 luma and composites transparent pixels over white, as preprocessToBytes', () => {
    const rgba = { width: 2, height: 1, channels: 4 as const, data: Uint8Array.of(200, 100, 50, 255, 0, 0, 0, 0) };
    const spec = { width: 2, height: 1, channels: 1 as const, scaling: 'unit' as const };
    const square = { width: 2, height: 2, channels: 4 as const, data: Uint8Array.of(...rgba.data, ...rgba.data) };
    const expected = [...preprocessToBytes(square, { ...spec, height: 2 })].slice(0, 2);
    assert.deepEqual([...warpToCrop(rgba, IDENTITY, 2, { width: 2, height: 2, channels: 1 })].slice(0, 2), expected);
    assert.deepEqual([...warpToCrop(rgba, IDENTITY, 2, { width: 2, height: 2, channels: 3 })].slice(0, 6), [200, 100, 50, 255, 255, 255]);
  });
});

describe('warpToCrop against the loop it replaced', () => {
  const CASES = 400;

  it('gives the same bytes for random images, transforms and specs: 1, 3 and 4 channels, shrinking and enlarging, crops partly or wholly outside', () => {
    const random = seededRandom(20240611);
    for (let n = 0; n < CASES; n++) {
      const channels = ([1, 3, 4] as const)[n % 3];
      const image = randomImage(random, 1 + Math.floor(random() * 90), 1 + Math.floor(random() * 90), channels);
      const spec = { width: 1 + Math.floor(random() * 40), height: 1 + Math.floor(random() * 40), channels: random() < 0.5 ? (1 as const) : (3 as const) };
      const cropSize = 4 + random() * 100;
      // Scales from a tenth (enlarging: one sample per pixel) to three (shrinking: many), any angle, and shifts that put the crop partly or wholly outside.
      const toImage = similarity(0.1 + random() * 2.9, random() * 360 - 180, (random() - 0.3) * image.width * 1.5, (random() - 0.3) * image.height * 1.5);
      const what = `case ${n}: ${image.width}x${image.height}x${channels} -> ${spec.width}x${spec.height}x${spec.channels}, ${JSON.stringify(toImage)}`;
      assert.deepEqual(warpToCrop(image, toImage, cropSize, spec), referenceWarpToCrop(image, toImage, cropSize, spec), what);
    }
  });

  it('gives the same bytes on whole- and half-pixel transforms, where taps fall on pixel centres or halfway, and on Uint8ClampedArray pixels', () => {
    const random = seededRandom(7);
    for (const channels of [1, 3, 4] as const) {
      const image = randomImage(random, 13, 9, channels);
      const clamped = { ...image, data: new Uint8ClampedArray(image.data) };
      // Whole and half pixels: weights of 0, 1 and 1/2, and means that end in .5, where rounding is decided.
      for (const toImage of [IDENTITY, { a: 1, b: 0, tx: -3, ty: 2 }, { a: 0, b: 1, tx: 9, ty: 0 }, { a: -1, b: 0, tx: 13, ty: 9 }, { a: 2, b: 0, tx: 0, ty: 0 }, { a: 1, b: 0, tx: 0.5, ty: -0.5 }, { a: 0.5, b: 0, tx: 0.25, ty: 0 }]) {
        for (const spec of [{ width: 13, height: 9, channels: 3 as const }, { width: 5, height: 4, channels: 1 as const }, { width: 40, height: 30, channels: 3 as const }]) {
          const expected = referenceWarpToCrop(image, toImage, 13, spec);
          assert.deepEqual(warpToCrop(image, toImage, 13, spec), expected, `${channels} channels, ${JSON.stringify(toImage)}, ${JSON.stringify(spec)}`);
          assert.deepEqual(warpToCrop(clamped, toImage, 13, spec), expected, `Uint8ClampedArray, ${channels} channels`);
        }
      }
    }
  });

  it('gives the same bytes as alignFace does on a 200x200 photo that one face fills, at the model sizes, and on a face half outside a larger photo', () => {
    const random = seededRandom(99);
    const filling = landmarksFor(similarity(1.02, 4, -2, 3));
    const halfOut = landmarksFor(similarity(0.7, -20, 250, -60));
    for (const channels of [3, 4, 1] as const) {
      const photo = randomImage(random, 200, 200, channels);
      const wide = randomImage(random, 320, 240, channels);
      for (const spec of [{ width: 64, height: 64, channels: 3 as const }, { width: 48, height: 48, channels: 1 as const }, { width: 200, height: 200, channels: 3 as const }]) {
        assert.deepEqual(alignFace(photo, filling, spec), referenceWarpToCrop(photo, cropToImage(filling), FACE_TEMPLATE.size, spec), `${channels} channels, filling`);
        assert.deepEqual(alignFace(wide, halfOut, spec), referenceWarpToCrop(wide, cropToImage(halfOut), FACE_TEMPLATE.size, spec), `${channels} channels, half outside`);
      }
    }
  });
});

describe('alignFace', () => {
  it('gives a UTKFace crop back unchanged when the face sits on the template', () => {
    const data = Uint8Array.from({ length: 200 * 200 * 3 }, (_, i) => (i * 7919) % 251);
    const crop = { width: 200, height: 200, channels: 3 as const, data };
    assert.deepEqual(alignFace(crop, landmarksFor(IDENTITY), { width: 200, height: 200, channels: 3 }), data);
  });

  it('undoes a rotation, scale and shift: the face placed in a larger image comes back as the model input', () => {
    // A smooth pattern, so that resampling twice changes it little.
    const pattern = (x: number, y: number): number => 128 + 100 * Math.sin(x / 23) * Math.cos(y / 31);
    const crop = { width: 200, height: 200, channels: 1 as const, data: Uint8Array.from({ length: 200 * 200 }, (_, i) => pattern(i % 200, Math.floor(i / 200))) };
    const toImage = similarity(1.6, 10, 150, 40);
    const photo = { width: 600, height: 450, channels: 1 as const, data: warpToCrop(crop, invert(toImage), 600, { width: 600, height: 600, channels: 1 }).subarray(0, 600 * 450) };
    const spec = { width: 64, height: 64, channels: 1 as const, scaling: 'unit' as const };
    const aligned = alignFace(photo, landmarksFor(toImage), spec);
    const direct = preprocessToBytes(crop, spec);
    const worst = aligned.reduce((most, v, i) => Math.max(most, Math.abs(v - direct[i])), 0);
    assert.ok(worst <= 3, `largest difference from preprocessToBytes on the crop: ${worst}`);
  });
});

function invert(t: Similarity): Similarity {
  const norm = t.a * t.a + t.b * t.b;
  const a = t.a / norm;
  const b = -t.b / norm;
  return { a, b, tx: -(a * t.tx - b * t.ty), ty: -(b * t.tx + a * t.ty) };
}

describe('alignmentProblem', () => {
  it('passes a face of fair size inside the image', () => {
    assert.equal(alignmentProblem(landmarksFor(similarity(1, 5, 100, 100)), { width: 400, height: 400 }), null);
  });

  it('names a face whose eyes are too close together', () => {
    assert.match(alignmentProblem(landmarksFor(similarity(0.1, 0, 10, 10)), { width: 400, height: 400 }) ?? '', /^face too small: eyes 7\.9 px apart, under \d+/);
  });

  it("judges the size on the pixels the face is cut from and says it in the photo's pixels (a photo shrunk 4x)", () => {
    const message = alignmentProblem(landmarksFor(similarity(0.1, 0, 10, 10)), { width: 400, height: 400 }, 4) ?? '';
    assert.match(message, /^face too small: eyes 31\.6 px apart, under 48 \(12 once the photo is shrunk to 400 px a side/);
  });

  it('names a face whose crop is mostly outside the image', () => {
    assert.match(alignmentProblem(landmarksFor(similarity(1, 0, -120, 0)), { width: 400, height: 400 }) ?? '', /^face too cut off: 60% of its crop is outside the image/);
  });
});
