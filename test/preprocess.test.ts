import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { preprocess, preprocessToBytes, type PixelBuffer } from '../contract/preprocess.ts';

function gray(width: number, height: number, value: (x: number, y: number) => number): PixelBuffer {
  const data = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) data[y * width + x] = value(x, y);
  return { width, height, channels: 1, data };
}

function rgba(width: number, height: number, pixel: [number, number, number, number]): PixelBuffer {
  const data = new Uint8Array(width * height * 4);
  for (let i = 0; i < width * height; i++) data.set(pixel, i * 4);
  return { width, height, channels: 4, data };
}

describe('preprocessing (golden values)', () => {
  it('averages whole 2x2 blocks when halving', () => {
    const image = gray(4, 4, (x, y) => y * 4 + x);
    // Block means 2.5, 4.5, 10.5, 12.5, rounded half up.
    assert.deepEqual(Array.from(preprocessToBytes(image, { height: 2, width: 2, channels: 1, scaling: 'unit' })), [3, 5, 11, 13]);
  });

  it('weights partially covered source pixels by their area (3x3 to 2x2)', () => {
    const image = gray(3, 3, (x, y) => 10 * y + x);
    // Each output covers 1.5x1.5 source pixels: weights (2/3, 1/3) for the first output on an axis, (1/3, 2/3) for the second.
    // (0,0): 33/9 = 3.67; (0,1): 45/9 = 5; (1,0): 153/9 = 17; (1,1): 165/9 = 18.33.
    assert.deepEqual(Array.from(preprocessToBytes(image, { height: 2, width: 2, channels: 1, scaling: 'unit' })), [4, 5, 17, 18]);
  });

  it('converts RGB to gray with BT.601 luma (as PIL "L")', () => {
    const spec = { height: 1, width: 1, channels: 1 as const, scaling: 'unit' as const };
    assert.deepEqual(Array.from(preprocessToBytes(rgba(2, 2, [255, 0, 0, 255]), spec)), [76]);
    assert.deepEqual(Array.from(preprocessToBytes(rgba(2, 2, [0, 255, 0, 255]), spec)), [150]);
    assert.deepEqual(Array.from(preprocessToBytes(rgba(2, 2, [0, 0, 255, 255]), spec)), [29]);
  });

  it('composites pixels that are not opaque over white, so the colour under a transparent pixel does not matter', () => {
    const rgb = { height: 1, width: 1, channels: 3 as const, scaling: 'unit' as const };
    // jimp keeps a transparent pixel's stored colour, a browser canvas reads it back as black: both become white.
    assert.deepEqual(Array.from(preprocessToBytes(rgba(2, 2, [200, 10, 90, 0]), rgb)), [255, 255, 255]);
    assert.deepEqual(Array.from(preprocessToBytes(rgba(2, 2, [0, 0, 0, 0]), rgb)), [255, 255, 255]);
    // Half-transparent: halfway to white. (0*128 + 255*127) / 255 = 127; (200*128 + 255*127) / 255 = 227.4.
    assert.deepEqual(Array.from(preprocessToBytes(rgba(2, 2, [0, 200, 255, 128]), rgb)), [127, 227, 255]);
    // Gray models see the composite too: (0, 0, 255) at alpha 9 is (246, 246, 255), luma 247.0.
    assert.deepEqual(Array.from(preprocessToBytes(rgba(2, 2, [0, 0, 255, 9]), { ...rgb, channels: 1 })), [247]);
  });

  it('keeps RGB channels in HWC order for 3-channel models', () => {
    const out = preprocessToBytes(rgba(4, 4, [10, 20, 30, 255]), { height: 2, width: 2, channels: 3, scaling: 'unit' });
    assert.deepEqual(Array.from(out), [10, 20, 30, 10, 20, 30, 10, 20, 30, 10, 20, 30]);
  });

  it('centre-crops a wide image to a square before resizing', () => {
    // 4x2: columns 0 and 3 are 255, the centre columns 1 and 2 are 0; the crop keeps only the centre.
    const image = gray(4, 2, (x) => (x === 0 || x === 3 ? 255 : 0));
    assert.deepEqual(Array.from(preprocessToBytes(image, { height: 1, width: 1, channels: 1, scaling: 'unit' })), [0]);
    const tall = gray(2, 4, (_, y) => (y === 0 || y === 3 ? 255 : 100));
    assert.deepEqual(Array.from(preprocessToBytes(tall, { height: 2, width: 2, channels: 1, scaling: 'unit' })), [100, 100, 100, 100]);
  });

  it('upscales by repeating pixels', () => {
    const out = preprocessToBytes(gray(2, 2, (x, y) => 100 * y + x), { height: 4, width: 4, channels: 1, scaling: 'unit' });
    assert.deepEqual(Array.from(out), [0, 0, 1, 1, 0, 0, 1, 1, 100, 100, 101, 101, 100, 100, 101, 101]);
  });

  it('scales bytes to [0, 1] float32 for the model', () => {
    const out = preprocess(gray(2, 2, (x, y) => (x + y) * 85), { height: 2, width: 2, channels: 1, scaling: 'unit' });
    assert.ok(out instanceof Float32Array);
    assert.deepEqual(Array.from(out), [0, 85 / 255, 85 / 255, 170 / 255].map((v) => Math.fround(v)));
  });

  it('rejects a pixel buffer whose length does not match its size', () => {
    assert.throws(() => preprocessToBytes({ width: 3, height: 3, channels: 4, data: new Uint8Array(10) }, { height: 2, width: 2, channels: 1, scaling: 'unit' }), /expected 3x3x4 = 36/);
  });
});
