/** decodeImage and readImageHeader on images generated here with jimp (no dataset images). */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Jimp } from 'jimp';
import { decodeImage, readImageHeader, type ImageFormat } from '../imaging/decode.ts';
import { jpegLimits } from '../imaging/jpeg.ts';
import { concatBytes as concat } from '../contract/onnx-wire.ts';
import { assertDecodeError } from './helpers/decode-errors.ts';

const RED = [255, 0, 0];
const BLUE = [0, 0, 255];

/** A width x height image whose left half is red and right half blue. */
function halves(width: number, height: number) {
  const image = new Jimp({ width, height, color: 0xff0000ff });
  for (let y = 0; y < height; y++) for (let x = Math.floor(width / 2); x < width; x++) image.setPixelColor(0x0000ffff, x, y);
  return image;
}

function rgbAt(image: { width: number; data: Uint8Array | Uint8ClampedArray }, x: number, y: number): number[] {
  const at = (y * image.width + x) * 4;
  return Array.from(image.data.subarray(at, at + 3));
}

function assertColour(actual: number[], expected: number[], what: string): void {
  assert.ok(actual.every((v, i) => Math.abs(v - expected[i]) <= 8), `${what}: got ${actual}, expected about ${expected}`);
}

/** Plain Uint8Array bytes (this repository's @types/node Buffer does not type-check as a Uint8Array under TS 5.9). */
function concatBytes(...parts: (Uint8Array | number[])[]): Uint8Array {
  return concat(parts.map((part) => (part instanceof Uint8Array ? part : Uint8Array.from(part))));
}

async function encode(image: ReturnType<typeof halves>, mime: 'image/jpeg' | 'image/png' | 'image/bmp' | 'image/gif' | 'image/tiff'): Promise<Uint8Array> {
  const buffer = await image.getBuffer(mime);
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

/** Inserts an EXIF APP1 segment with only an Orientation tag right after the JPEG's SOI marker. */
function withExifOrientation(jpeg: Uint8Array, orientation: number): Uint8Array {
  // "Exif\0\0", a big-endian TIFF header, an IFD at offset 8 with one entry: tag 0x0112 (Orientation), SHORT, count 1.
  const exif = [0x45, 0x78, 0x69, 0x66, 0, 0];
  const tiff = [0x4d, 0x4d, 0x00, 0x2a, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, orientation, 0, 0, 0, 0, 0, 0];
  const length = exif.length + tiff.length + 2;
  return concatBytes(jpeg.subarray(0, 2), [0xff, 0xe1, length >> 8, length & 0xff], exif, tiff, jpeg.subarray(2));
}

describe('readImageHeader', () => {
  const formats: [ImageFormat, 'image/jpeg' | 'image/png' | 'image/bmp' | 'image/gif' | 'image/tiff'][] = [
    ['jpeg', 'image/jpeg'],
    ['png', 'image/png'],
    ['bmp', 'image/bmp'],
    ['gif', 'image/gif'],
    ['tiff', 'image/tiff'],
  ];
  for (const [format, mime] of formats) {
    test(`reads the format and size of a ${format.toUpperCase()} (37x23) from its header`, async () => {
      const bytes = await encode(halves(37, 23), mime);
      assert.deepEqual(readImageHeader(bytes), { format, width: 37, height: 23 });
    });
  }

  test('reads a GIF whose frame claims 20000x20000 inside a 10x10 screen as 20000x20000 (a bomb the screen hides)', () => {
    const gif = concatBytes(
      new TextEncoder().encode('GIF89a'),
      [10, 0, 10, 0, 0x00, 0, 0], // 10x10 logical screen, no global colour table
      [0x21, 0xf9, 4, 0, 0, 0, 0, 0], // a graphic control extension, skipped
      [0x2c, 0, 0, 0, 0, 0x20, 0x4e, 0x20, 0x4e, 0x00], // image descriptor: 20000x20000 at (0, 0)
      [2, 1, 0, 0, 0x3b], // LZW code size, one data sub-block, terminator, trailer
    );
    assert.deepEqual(readImageHeader(gif), { format: 'gif', width: 20000, height: 20000 });
  });

  test('reads a PNG that claims 16000x16000 from its first 24 bytes, without the rest of the file', () => {
    const png = concatBytes([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], new Uint8Array(25));
    const view = new DataView(png.buffer);
    view.setUint32(8, 13);
    png.set([0x49, 0x48, 0x44, 0x52], 12); // IHDR
    view.setUint32(16, 16000);
    view.setUint32(20, 16000);
    assert.deepEqual(readImageHeader(png), { format: 'png', width: 16000, height: 16000 });
  });

  test('recognises a WebP header (VP8X) so that decoding can refuse it by name', async () => {
    const webp = new Uint8Array(30);
    webp.set(new TextEncoder().encode('RIFF'), 0);
    webp[4] = 22;
    webp.set(new TextEncoder().encode('WEBPVP8X'), 8);
    webp.set([(640 - 1) & 0xff, (640 - 1) >> 8, 0, (480 - 1) & 0xff, (480 - 1) >> 8, 0], 24);
    assert.deepEqual(readImageHeader(webp), { format: 'webp', width: 640, height: 480 });
    await assert.rejects(decodeImage(webp), (e) => assertDecodeError(e, 'unsupported-format', /"webp".*jpeg, png, bmp, gif, tiff/));
  });

  test('rejects bytes that are not an image with an ImageDecodeError naming the supported formats', () => {
    assert.throws(() => readImageHeader(new TextEncoder().encode('hello, this is text')), (e) => assertDecodeError(e, 'unsupported-format', /Not a supported image.*jpeg, png/));
    assert.throws(() => readImageHeader(new Uint8Array(0)), (e) => assertDecodeError(e, 'empty', /empty/));
  });

  test('rejects a JPEG whose header is cut off before the frame size', async () => {
    const jpeg = await encode(halves(16, 16), 'image/jpeg');
    assert.throws(() => readImageHeader(jpeg.subarray(0, 40)), (e) => assertDecodeError(e, 'truncated', /JPEG header is truncated/));
  });
});

/**
 * An uncompressed TIFF of `pages` (little-endian; grey, or RGB with `samples` 3): each page's pixels, then its
 * IFD, linked in order. A page holds all its bytes unless `bytes` says fewer (a page that claims more than it has);
 * `extra` entries (tag, type, count, value or offset) follow the page's own.
 */
function multiPageTiff(pages: { width: number; height: number; grey: number; bytes?: number; samples?: 1 | 3; extra?: [tag: number, type: number, count: number, value: number][] }[]): Uint8Array {
  const parts: Uint8Array[] = [Uint8Array.from([0x49, 0x49, 0x2a, 0, 0, 0, 0, 0])];
  let offset = 8;
  const links: { at: number; part: Uint8Array }[] = [];
  for (const page of pages) {
    const samples = page.samples ?? 1;
    const count = page.bytes ?? page.width * page.height * samples;
    const data = new Uint8Array(count).fill(page.grey);
    const dataAt = offset;
    offset += data.length;
    // ImageWidth, ImageLength, BitsPerSample, Compression (none), Photometric (grey, black is zero; or RGB),
    // StripOffsets, SamplesPerPixel, RowsPerStrip, StripByteCounts: tag, type (3 SHORT, 4 LONG), value.
    const base: [number, number, number][] = [[256, 4, page.width], [257, 4, page.height], [258, 3, 8], [259, 3, 1], [262, 3, samples === 1 ? 1 : 2], [273, 4, dataAt], [277, 3, samples], [278, 4, page.height], [279, 4, count]];
    const entries: [number, number, number, number][] = [...base.map(([tag, type, value]): [number, number, number, number] => [tag, type, 1, value]), ...(page.extra ?? [])];
    const ifd = new Uint8Array(2 + entries.length * 12 + 4);
    const view = new DataView(ifd.buffer);
    view.setUint16(0, entries.length, true);
    entries.forEach(([tag, type, count, value], e) => {
      view.setUint16(2 + e * 12, tag, true);
      view.setUint16(4 + e * 12, type, true);
      view.setUint32(6 + e * 12, count, true);
      if (type === 3 && count === 1) view.setUint16(10 + e * 12, value, true);
      else view.setUint32(10 + e * 12, value, true);
    });
    links.push({ at: offset, part: ifd });
    offset += ifd.length;
    parts.push(data, ifd);
  }
  const tiff = concat(parts);
  const view = new DataView(tiff.buffer, tiff.byteOffset, tiff.byteLength);
  view.setUint32(4, links[0].at, true);
  links.forEach((link, i) => view.setUint32(link.at + link.part.length - 4, links[i + 1]?.at ?? 0, true));
  return tiff;
}

describe('decodeImage', () => {
  test('decodes the first page of a TIFF alone: a second page over the pixel limit cannot ride past the check', async () => {
    // jimp decoded every page, so a second page over the limit must not reach it (docs/hardening.md).
    const tiff = multiPageTiff([{ width: 40, height: 30, grey: 200 }, { width: 30_000, height: 30_000, grey: 0, bytes: 64, samples: 3 }]);
    const original = tiff.slice();
    assert.deepEqual(readImageHeader(tiff), { format: 'tiff', width: 40, height: 30 });
    const image = await decodeImage(tiff, { maxPixels: 25_000_000 });
    assert.deepEqual([image.width, image.height], [40, 30]);
    assertColour(rgbAt(image, 5, 5), [200, 200, 200], 'first page');
    assert.deepEqual(tiff, original, 'the caller\'s bytes are left as they were');
  });

  test('refuses a small TIFF whose field claims more values than the file holds, before decoding it', async () => {
    // A 40x30 page with one more field, 20 million SHORT values at offset 8, which the decoder would read one by one.
    const bomb = multiPageTiff([{ width: 40, height: 30, grey: 1, extra: [[305, 3, 20_000_000, 8]] }]);
    assert.ok(bomb.length < 2000);
    assert.throws(() => readImageHeader(bomb), (e) => assertDecodeError(e, 'corrupt', /tag 305 claims 20000000 values \(40000000 bytes\) beyond the end of the file/));
    await assert.rejects(decodeImage(bomb), (e) => assertDecodeError(e, 'corrupt', /tag 305/));
    // The same claim one level down, in the EXIF directory the first page points to (at offset 8, inside the pixels).
    const exif = multiPageTiff([{ width: 40, height: 30, grey: 0, extra: [[34665, 4, 1, 8]] }]);
    const view = new DataView(exif.buffer, exif.byteOffset, exif.byteLength);
    view.setUint16(8, 1, true); // one entry
    view.setUint16(10, 37500, true); // MakerNote...
    view.setUint16(12, 4, true); // ...as LONGs
    view.setUint32(14, 100_000_000, true); // 100 million of them
    view.setUint32(18, 8, true);
    assert.throws(() => readImageHeader(exif), (e) => assertDecodeError(e, 'corrupt', /tag 37500 claims 100000000 values/));
    // A legitimate EXIF directory inside the file is read as before.
    view.setUint32(14, 2, true);
    assert.deepEqual(readImageHeader(exif), { format: 'tiff', width: 40, height: 30 });
  });

  test('decodes a TIFF without parsing its maker note, whose directories the decoder would read unchecked', async () => {
    // A 40x30 page whose EXIF directory (at offset 200, inside the pixels) holds a MakerNote (UNDEFINED bytes at 8).
    const withMakerNote = (note: number[], pointerType: 3 | 4): Uint8Array => {
      const tiff = multiPageTiff([{ width: 40, height: 30, grey: 120, extra: [[34665, pointerType, 1, 200]] }]);
      const view = new DataView(tiff.buffer, tiff.byteOffset, tiff.byteLength);
      tiff.set(note, 8);
      view.setUint16(200, 1, true); // one entry: MakerNote, UNDEFINED, its length, at offset 8
      [37500, 7].forEach((value, i) => view.setUint16(202 + 2 * i, value, true));
      view.setUint32(206, note.length, true);
      view.setUint32(210, 8, true);
      return tiff;
    };
    const le16 = (value: number) => [value & 0xff, value >> 8];
    const le32 = (value: number) => [...le16(value & 0xffff), ...le16(value >>> 16)];
    // Nikon's: a TIFF of its own after 10 bytes, whose one directory (at its offset 8) links to itself. The decoder
    // would follow the link for ever.
    const nikon = [...'Nikon'].map((c) => c.charCodeAt(0)).concat([0, 2, 0x10, 0, 0], [0x49, 0x49, 42, 0], le32(8), le16(1), le16(1), le16(3), le32(1), le32(0), le32(8));
    // Any other maker: a directory at the field's offset, whose one field claims 2^31 SHORTs.
    const generic = [...le16(1), ...le16(1), ...le16(3), ...le32(2 ** 31), ...le32(0), ...le32(0)];
    // The EXIF pointer as a LONG, and as a SHORT (which the decoder follows too).
    for (const [maker, note, pointerType] of [['Nikon', nikon, 4], ['generic', generic, 4], ['Nikon', nikon, 3]] as const) {
      const tiff = withMakerNote(note, pointerType);
      const original = tiff.slice();
      const image = await decodeImage(tiff);
      assert.deepEqual([image.width, image.height], [40, 30], maker);
      assertColour(rgbAt(image, 20, 20), [120, 120, 120], maker);
      assert.deepEqual(tiff, original, 'the caller\'s bytes are left as they were');
    }
  });

  test('refuses a TIFF whose directories point to more directories than a page has, or to each other in a loop', async () => {
    // The first page points to eight directories in its pixels (at 8, 40, ...), each with SubIFDs pointing twice to
    // the next: 256 reads of 9 directories (at 60 levels, the decoder would read 2^60).
    const fanOut = multiPageTiff([{ width: 40, height: 30, grey: 7, extra: [[330, 4, 1, 8]] }]);
    const view = new DataView(fanOut.buffer, fanOut.byteOffset, fanOut.byteLength);
    for (let level = 0; level < 8; level++) {
      const at = 8 + 32 * level;
      view.setUint16(at, 1, true);
      [330, 4].forEach((value, i) => view.setUint16(at + 2 + 2 * i, value, true));
      view.setUint32(at + 6, level < 7 ? 2 : 0, true); // two LONGs, at the directory's end
      view.setUint32(at + 10, at + 18, true);
      view.setUint32(at + 18, at + 32, true);
      view.setUint32(at + 22, at + 32, true);
    }
    assert.throws(() => readImageHeader(fanOut), (e) => assertDecodeError(e, 'corrupt', /point to more than 64 others \(or to each other in a loop\)/));
    await assert.rejects(decodeImage(fanOut), (e) => assertDecodeError(e, 'corrupt', /more than 64/));
    // An EXIF pointer back to the first directory.
    const loop = multiPageTiff([{ width: 40, height: 30, grey: 7, extra: [[34665, 4, 1, 0]] }]);
    const loopView = new DataView(loop.buffer, loop.byteOffset, loop.byteLength);
    const first = loopView.getUint32(4, true);
    loopView.setUint32(first + 2 + 9 * 12 + 8, first, true);
    assert.throws(() => readImageHeader(loop), (e) => assertDecodeError(e, 'corrupt', /in a loop/));
    // SubIFDs as BYTEs: the decoder would read a directory at each byte's value.
    const bytePointers = multiPageTiff([{ width: 40, height: 30, grey: 7, extra: [[330, 1, 4, 0x08080808]] }]);
    assert.throws(() => readImageHeader(bytePointers), (e) => assertDecodeError(e, 'corrupt', /tag 330 points to directories with values of type 1; expected SHORT, LONG or IFD/));
  });

  test('reads a TIFF\'s size where the decoder reads it: values stored at an offset, the last of repeated fields', async () => {
    // ImageWidth and ImageLength again, as two LONGs each, so stored at offsets 8 and 16 (in the pixels): the header
    // read the offsets as the size (8x16), the decoder the values there (a 232-byte file decoded at 20000x20000).
    const tiff = multiPageTiff([{ width: 40, height: 30, grey: 0, extra: [[256, 4, 2, 8], [257, 4, 2, 16]] }]);
    const view = new DataView(tiff.buffer, tiff.byteOffset, tiff.byteLength);
    view.setUint32(8, 20_000, true);
    view.setUint32(16, 20_000, true);
    assert.deepEqual(readImageHeader(tiff), { format: 'tiff', width: 20_000, height: 20_000 });
    await assert.rejects(decodeImage(tiff, { maxPixels: 25_000_000 }), (e) => assertDecodeError(e, 'too-large', /20000x20000/));
  });

  test('refuses a TIFF whose tiles or pixels would take more memory than its size allows', async () => {
    // One 46340x46340 tile for a 64x64 image: the decoder would allocate the whole tile.
    const tiled = (tile: number) => multiPageTiff([{ width: 64, height: 64, grey: 9, extra: [[322, 4, 1, tile], [323, 4, 1, tile], [324, 4, 1, 8], [325, 4, 1, 64 * 64]] }]);
    assert.throws(() => readImageHeader(tiled(46_340)), (e) => assertDecodeError(e, 'corrupt', /its tiles are 46340x46340 for a 64x64 image/));
    // 1x1 tiles, one decoder call each, millions for a large image. Tiles are multiples of 16.
    assert.throws(() => readImageHeader(tiled(1)), (e) => assertDecodeError(e, 'corrupt', /its tiles are 1x1 for a 64x64 image; a tile side is at least 16/));
    // 2^30 bits a pixel (BitsPerSample and SamplesPerPixel 32768): 1x1 tiles of it would be zero-filled for minutes.
    const wide = multiPageTiff([{ width: 40, height: 30, grey: 9, extra: [[258, 3, 1, 32768], [277, 3, 1, 32768]] }]);
    assert.throws(() => readImageHeader(wide), (e) => assertDecodeError(e, 'corrupt', /pixels would take 1073741824 bits each \(BitsPerSample 32768, SamplesPerPixel 32768\); a page takes 1 to 128/));
    // Canon sRAW's bits a pixel (BitsPerSample x 3) passed, but utif2 works on each strip's rows at BitsPerSample
    // (up to 32) x SamplesPerPixel: 65535 samples kept a 512x512 page decoding past a minute.
    const samples = multiPageTiff([{ width: 40, height: 30, grey: 9, extra: [[258, 3, 1, 16], [277, 3, 1, 65_535], [50885, 3, 1, 4]] }]);
    assert.throws(() => readImageHeader(samples), (e) => assertDecodeError(e, 'corrupt', /pixels would take 1048560 bits each \(BitsPerSample 16, SamplesPerPixel 65535\); a page takes 1 to 128/));
    // Tiles of 1024x1024 down a narrow image, each cleared, decoded and copied whole: tiles may cover 4x its pixels.
    const narrow = multiPageTiff([{ width: 16, height: 65_536, grey: 9, bytes: 64, extra: [[322, 4, 1, 1024], [323, 4, 1, 1024], [324, 4, 1, 8], [325, 4, 1, 64]] }]);
    assert.throws(() => readImageHeader(narrow), (e) => assertDecodeError(e, 'corrupt', /its 64 tiles of 1024x1024 cover 67108864 pixels for a 16x65536 image; its tiles may cover 16777216 \(4 times the image's pixels, and at least 16777216\)/));
    // libtiff's 256x256 tiles down a 50x5000 image cover 26 times its pixels, and cost nothing.
    const thin = multiPageTiff([{ width: 50, height: 5000, grey: 9, bytes: 64, extra: [[322, 4, 1, 256], [323, 4, 1, 256], [324, 4, 1, 8], [325, 4, 1, 64]] }]);
    assert.deepEqual(readImageHeader(thin), { format: 'tiff', width: 50, height: 5000 });
    // RowsPerStrip 0: a YCbCr page's colour conversion would step through the rows 0 at a time, for ever.
    const rows = multiPageTiff([{ width: 40, height: 30, grey: 9, extra: [[278, 4, 1, 0]] }]);
    assert.throws(() => readImageHeader(rows), (e) => assertDecodeError(e, 'corrupt', /its RowsPerStrip is 0; a strip holds at least one row/));
    // One 64x64 tile, as an encoder writes it, decodes.
    const image = await decodeImage(tiled(64));
    assert.deepEqual([image.width, image.height], [64, 64]);
    assertColour(rgbAt(image, 30, 30), [9, 9, 9], 'tiled page');
  });

  test('decodes a two-page TIFF whose pages are both small as its first page', async () => {
    const image = await decodeImage(multiPageTiff([{ width: 33, height: 34, grey: 90 }, { width: 50, height: 50, grey: 10 }]));
    assert.deepEqual([image.width, image.height], [33, 34]);
    assertColour(rgbAt(image, 1, 1), [90, 90, 90], 'first page');
  });

  test('decodes a PNG to RGBA with exact pixels', async () => {
    const image = await decodeImage(await encode(halves(10, 4), 'image/png'));
    assert.equal(image.channels, 4);
    assert.deepEqual([image.width, image.height, image.data.length], [10, 4, 10 * 4 * 4]);
    assert.deepEqual(Array.from(image.data.subarray(0, 4)), [255, 0, 0, 255]);
    assert.deepEqual(rgbAt(image, 9, 3), BLUE);
  });

  test('decodes a JPEG given as a plain Uint8Array (not a Buffer)', async () => {
    const jpeg = await encode(halves(32, 16), 'image/jpeg');
    const image = await decodeImage(new Uint8Array(jpeg));
    assert.deepEqual([image.width, image.height], [32, 16]);
    assertColour(rgbAt(image, 2, 2), RED, 'left');
    assertColour(rgbAt(image, 29, 13), BLUE, 'right');
  });

  // Stored 32x16, red on the left, blue on the right; where each colour ends up after the EXIF rotation.
  const orientations: { orientation: number; size: [number, number]; topLeft: number[]; bottomRight: number[] }[] = [
    { orientation: 1, size: [32, 16], topLeft: RED, bottomRight: BLUE },
    { orientation: 3, size: [32, 16], topLeft: BLUE, bottomRight: RED }, // rotated 180
    { orientation: 6, size: [16, 32], topLeft: RED, bottomRight: BLUE }, // rotated 90 clockwise: left becomes top
    { orientation: 8, size: [16, 32], topLeft: BLUE, bottomRight: RED }, // rotated 90 anticlockwise: left becomes bottom
  ];
  for (const { orientation, size, topLeft, bottomRight } of orientations) {
    test(`applies EXIF orientation ${orientation}: ${size[0]}x${size[1]}, upright`, async () => {
      const jpeg = withExifOrientation(await encode(halves(32, 16), 'image/jpeg'), orientation);
      assert.deepEqual(readImageHeader(jpeg), { format: 'jpeg', width: 32, height: 16 }, 'the header reports the stored size');
      const image = await decodeImage(jpeg);
      assert.deepEqual([image.width, image.height], size);
      assertColour(rgbAt(image, 2, 2), topLeft, 'top left');
      assertColour(rgbAt(image, image.width - 3, image.height - 3), bottomRight, 'bottom right');
    });
  }

  test('refuses an image over maxPixels from its header, before decoding it', async () => {
    const png = await encode(halves(100, 100), 'image/png');
    await assert.rejects(decodeImage(png, { maxPixels: 9999 }), (e) => assertDecodeError(e, 'too-large', /100x100 \(10000 pixels\).*9999/));
    assert.equal((await decodeImage(png, { maxPixels: 10000 })).width, 100);
  });

  test('gives the JPEG decoder the memory the image its header gives needs (its 512 MB default refuses colour JPEGs under 25 MP), and holds its frames to that size', () => {
    // A 4:4:4 colour JPEG needs about 21 bytes a pixel, a CMYK 4:4:4 one (the worst case) about 28 (docs/hardening.md).
    for (const pixels of [25_000_000, 60_000_000, 150_000_000, 12_345_679]) {
      const limits = jpegLimits(pixels);
      assert.ok(limits.maxMemoryUsageInMB * 2 ** 20 >= pixels * 28, `${pixels} pixels: ${limits.maxMemoryUsageInMB} MB`);
      // jpeg-js refuses a frame of more than maxResolutionInMP * 1000 * 1000 pixels.
      const frameLimit = limits.maxResolutionInMP * 1000 * 1000;
      assert.ok(pixels <= frameLimit && pixels + 1 > frameLimit, `${pixels} pixels: the decoder's frame limit is ${frameLimit}, not the image's size`);
    }
    assert.ok(jpegLimits(1_000_000).maxMemoryUsageInMB <= 48, 'no more memory than a megapixel needs (jpeg-js\'s default is 512 MB)');
  });

  test('rejects text, and a JPEG cut in half, with a clear ImageDecodeError', async () => {
    await assert.rejects(decodeImage(new TextEncoder().encode('not an image at all')), (e) => assertDecodeError(e, 'unsupported-format', /Not a supported image/));
    const jpeg = await encode(halves(64, 64), 'image/jpeg');
    await assert.rejects(decodeImage(jpeg.subarray(0, Math.floor(jpeg.length / 2))), (e) => assertDecodeError(e, 'truncated', /Could not decode the JPEG image \(it is truncated/));
  });

  test('rejects a JPEG with a valid header and garbage image data as corrupt', async () => {
    const jpeg = await encode(halves(64, 64), 'image/jpeg');
    const scan = jpeg.findIndex((v, i) => v === 0xff && jpeg[i + 1] === 0xda); // the image data follows its header
    const scanData = scan + 2 + ((jpeg[scan + 2] << 8) | jpeg[scan + 3]);
    const garbage = concatBytes(jpeg.subarray(0, scanData), new Uint8Array(400).fill(0x5a), [0xff, 0xd9]);
    await assert.rejects(decodeImage(garbage), (e) => assertDecodeError(e, 'corrupt', /Could not decode the JPEG image/));
  });
});
