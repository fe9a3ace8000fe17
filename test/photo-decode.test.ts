/**
 * Uploads decoded with sharp (imaging/photo-decode.ts): orientation, shrink-on-load, transparency, refusals.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import sharp from 'sharp';
import { ImageDecodeError } from '../contract/image-header.ts';
import { decodePhoto, ImageSizeError } from '../imaging/photo-decode.ts';

const LIMITS = { maxPixels: 25_000_000, minImageSide: 32 };

/** A width x height RGB image, red on its left half and blue on its right half. */
function halves(width: number, height: number): Promise<Buffer> {
  const data = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) data[(y * width + x) * 3 + (x < width / 2 ? 0 : 2)] = 255;
  return sharp(data, { raw: { width, height, channels: 3 } }).png().toBuffer();
}

const pixel = (photo: Awaited<ReturnType<typeof decodePhoto>>, x: number, y: number): number[] => {
  const i = (y * photo.pixels.width + x) * 3;
  return [...photo.pixels.data.subarray(i, i + 3)];
};

describe('decoding uploads with sharp', () => {
  it('applies the EXIF orientation: a 300x200 JPEG tagged "rotate 90° clockwise" becomes 200x300, its left half on top', async () => {
    const jpeg = await sharp(await halves(300, 200)).jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toBuffer();
    const photo = await decodePhoto(jpeg, LIMITS);
    assert.deepEqual([photo.width, photo.height, photo.pixels.width, photo.pixels.height, photo.scale], [200, 300, 200, 300, 1]);
    const [r, , b] = pixel(photo, 100, 20);
    assert.ok(r > 200 && b < 50, `top is the red half: ${pixel(photo, 100, 20)}`);
    assert.ok(pixel(photo, 100, 280)[2] > 200, 'bottom is the blue half');
  });

  it('shrinks a 4000x3000 JPEG while decoding it to 1024 on its longer side, and reports the photo size and scale', async () => {
    const jpeg = await sharp(await halves(4000, 3000)).jpeg().toBuffer();
    const photo = await decodePhoto(jpeg, LIMITS);
    assert.deepEqual([photo.width, photo.height, photo.pixels.width, photo.pixels.height], [4000, 3000, 1024, 768]);
    assert.ok(Math.abs(photo.scale - 4000 / 1024) < 1e-9);
    assert.equal(photo.pixels.data.length, 1024 * 768 * 3);
  });

  it('shows transparent pixels over white, as preprocessing composites them', async () => {
    const png = await sharp({ create: { width: 40, height: 40, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } }).png().toBuffer();
    const photo = await decodePhoto(png, LIMITS);
    assert.deepEqual(pixel(photo, 20, 20), [255, 255, 255]);
  });

  it('refuses an image over the pixel limit from its header, before decoding it', async () => {
    const png = await halves(600, 500);
    await assert.rejects(decodePhoto(png, { maxPixels: 100_000, minImageSide: 32 }), (error: unknown) => error instanceof ImageSizeError && error.problem.code === 'image_too_large');
  });

  it('refuses a truncated JPEG as corrupt, naming the format', async () => {
    const jpeg = await sharp(await halves(300, 200)).jpeg().toBuffer();
    await assert.rejects(decodePhoto(jpeg.subarray(0, jpeg.length / 2), LIMITS), (error: unknown) => error instanceof ImageDecodeError && error.reason === 'corrupt' && /jpeg/.test(error.message));
  });

  it('decodes WebP, which jimp did not', async () => {
    const webp = await sharp(await halves(64, 48)).webp({ lossless: true }).toBuffer();
    const photo = await decodePhoto(webp, LIMITS);
    assert.deepEqual([photo.format, photo.width, photo.height], ['webp', 64, 48]);
    assert.deepEqual(pixel(photo, 5, 5), [255, 0, 0]);
  });
});
