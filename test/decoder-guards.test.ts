/**
 * decodeImage on files crafted to hang or blow up jimp's decoders (omggif, jpeg-js, exif-parser, pngjs, bmp-ts),
 * next to well-formed files of the same kinds, which must decode as before. Each crafted file is the small
 * version of one measured against the server; the figures are in `models/spec/decoder-guards.ts`.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { deflateSync } from 'node:zlib';
import { Jimp } from 'jimp';
import { decodeImage, ImageDecodeError } from '../models/spec/decode.ts';
import { concatBytes as concat } from '../models/spec/onnx-wire.ts';

function bytes(...parts: (Uint8Array | number[] | string)[]): Uint8Array {
  return concat(parts.map((part) => (part instanceof Uint8Array ? part : typeof part === 'string' ? new TextEncoder().encode(part) : Uint8Array.from(part))));
}

const be16 = (value: number) => [value >> 8, value & 0xff];
const le16 = (value: number) => [value & 0xff, value >> 8];
const le32 = (value: number) => [...le16(value & 0xffff), ...le16(value >>> 16)];
const be32 = (value: number) => [...be16(value >>> 16), ...be16(value & 0xffff)];

function assertCorrupt(error: unknown, pattern: RegExp): true {
  assert.ok(error instanceof ImageDecodeError, `expected an ImageDecodeError, got ${String(error)}`);
  assert.equal(error.reason, 'corrupt');
  assert.match(error.message, pattern);
  return true;
}

/** jimp's own decoding of the same bytes, as RGBA. */
async function jimpPixels(file: Uint8Array): Promise<{ width: number; height: number; data: Uint8Array }> {
  const { width, height, data } = (await Jimp.fromBuffer(Buffer.from(file))).bitmap;
  return { width, height, data: new Uint8Array(data) };
}

/** A width x height RGBA image of noise (every pixel opaque). */
function noise(width: number, height: number, seed: number): InstanceType<typeof Jimp> {
  const image = new Jimp({ width, height });
  let state = seed;
  for (let i = 0; i < image.bitmap.data.length; i++) {
    state = (state * 1103515245 + 12345) >>> 0;
    image.bitmap.data[i] = i % 4 === 3 ? 255 : state >>> 24;
  }
  return image;
}

describe('GIF', () => {
  test('refuses a GIF whose LZW data names a table entry not yet made (omggif chased it for ever)', { timeout: 20_000 }, async () => {
    // 64x64, 2 colours: literal 0, then code 7 while the next entry is 6. omggif took it as entry 6, made 7 its own
    // prefix, and looped at the next code: a 37-byte file held a decode thread until it was killed.
    const codes = [[0, 3], [7, 3], [0, 3], [7, 4]];
    let bits = 0n;
    let shift = 0n;
    for (const [value, size] of codes) {
      bits |= BigInt(value) << shift;
      shift += BigInt(size);
    }
    const lzw = [Number(bits & 0xffn), Number(bits >> 8n), 0, 0];
    const gif = bytes('GIF89a', le16(64), le16(64), [0x80, 0, 0], [0, 0, 0, 255, 255, 255], [0x2c], le16(0), le16(0), le16(64), le16(64), [0, 2, lzw.length], lzw, [0, 0x3b]);
    assert.equal(gif.length, 37);
    await assert.rejects(decodeImage(gif), (e) => assertCorrupt(e, /GIF image data is corrupt: code 7 .* names a table entry not yet made \(the next is 6\)/));
  });

  test('decodes GIFs of noise (full code tables, clear codes) as jimp does', async () => {
    for (const [width, height] of [[64, 64], [300, 200]]) {
      const gif = new Uint8Array(await noise(width, height, width).getBuffer('image/gif'));
      const image = await decodeImage(gif);
      assert.deepEqual(image, { ...(await jimpPixels(gif)), channels: 4 });
    }
  });
});

/** A JPEG segment: marker, length, contents. */
const segment = (marker: number, contents: number[]) => [0xff, marker, ...be16(contents.length + 2), ...contents];
/** A 8-bit greyscale SOF (`marker` 0xc0 baseline, 0xc2 progressive) for width x height. */
const greySof = (marker: number, width: number, height: number) => segment(marker, [8, ...be16(height), ...be16(width), 1, 1, 0x11, 0]);

describe('JPEG', () => {
  test('refuses a JPEG whose quantisation table holds more than its length says, hiding a frame from the header', async () => {
    // The DQT declares 1 byte; jpeg-js reads a whole table (65) and so skips the 64x64 SOF the header reads, and
    // finds a second one, 8000x8000, behind it (8700x8700 took jpeg-js 1.2 GB from an 86-byte file).
    const table = [0, ...greySof(0xc0, 64, 64), ...new Array(64 - 13).fill(1)];
    const jpeg = bytes([0xff, 0xd8, 0xff, 0xdb, 0, 3], table, greySof(0xc0, 8000, 8000), [0xff, 0xd9]);
    await assert.rejects(decodeImage(jpeg, { maxPixels: 25_000_000 }), (e) => assertCorrupt(e, /segment 0xdb at byte 2 declares 1 bytes but holds 65/));
  });

  /** A progressive 64x64 grey JPEG of `scans` AC scans, each an end-of-band run over every block. */
  function progressiveJpeg(scans: number): Uint8Array {
    const huffman = segment(0xc4, [0x10, 1, ...new Array(15).fill(0), 0xe0]); // AC table 0: code "0" is EOBRUN 14
    const scan = [...segment(0xda, [1, 1, 0x00, 1, 63, 0]), 0b01111111, 0xff, 0]; // one run of 2^14+ blocks; 0xff is stuffed
    return bytes([0xff, 0xd8], segment(0xdb, [0, ...new Array(64).fill(1)]), greySof(0xc2, 64, 64), huffman, ...new Array(scans).fill(scan), [0xff, 0xd9]);
  }

  test('refuses a progressive JPEG of more than 100 scans, and decodes one of 100', async () => {
    // Each scan costs a pass over the whole image: 2,200 near-empty ones at 5000x5000 (97 KB) took 15 s.
    await assert.rejects(decodeImage(progressiveJpeg(101)), (e) => assertCorrupt(e, /more than 100 scans/));
    const image = await decodeImage(progressiveJpeg(100));
    assert.deepEqual([image.width, image.height], [64, 64]);
  });

  /** An EXIF segment: a big-endian TIFF structure whose first directory holds `entries` and links to `next`. */
  function exifSegment(entries: number[][], next: number, after: number[] = []): number[] {
    const directory = [...be16(entries.length), ...entries.flat(), ...be32(next)];
    return segment(0xe1, [...'Exif'].map((c) => c.charCodeAt(0)).concat([0, 0, 0x4d, 0x4d, 0, 42], be32(8), directory, after));
  }
  /** A directory entry: tag, type, count, value (or offset). */
  const entry = (tag: number, type: number, count: number, value: number) => [...be16(tag), ...be16(type), ...be32(count), ...(type === 3 && count === 1 ? [...be16(value), 0, 0] : be32(value))];

  async function leftRedRightBlue(): Promise<Uint8Array> {
    const image = new Jimp({ width: 32, height: 16, color: 0xff0000ff });
    for (let y = 0; y < 16; y++) for (let x = 16; x < 32; x++) image.setPixelColor(0x0000ffff, x, y);
    return new Uint8Array(await image.getBuffer('image/jpeg'));
  }
  const red = (data: ArrayLike<number>, at: number) => data[at * 4] > 200 && data[at * 4 + 2] < 60;

  test('applies the EXIF orientation of the first directory even where a later one is broken', async () => {
    // Orientation 6 (rotated 90 clockwise), then a link to a thumbnail directory beyond the file: exif-parser
    // threw on it, and jimp applied no orientation at all.
    const plain = await leftRedRightBlue();
    const jpeg = bytes(plain.subarray(0, 2), exifSegment([entry(0x0112, 3, 1, 6)], 0xfffff000), plain.subarray(2));
    const image = await decodeImage(jpeg);
    assert.deepEqual([image.width, image.height], [16, 32]);
    assert.ok(red(image.data, 2 * 16 + 8) && !red(image.data, 29 * 16 + 8), 'the red left half is now the top');
  });

  test('decodes a JPEG whose EXIF fields each claim the whole file, without reading them', async () => {
    // 1,300 fields of BYTEs, each claiming every byte to the end of the file: exif-parser read them all, one by one
    // (5,459 such fields in 66 KB took 27 s). The orientation, first, still applies.
    const plain = await leftRedRightBlue();
    const fields = 1300;
    const total = 2 + (2 + 2 + 6 + 8 + 2 + (fields + 1) * 12 + 4) + (plain.length - 2);
    const claim = total - 12 - 64; // values from offset 0 of the TIFF structure, within the file
    const jpeg = bytes(plain.subarray(0, 2), exifSegment([entry(0x0112, 3, 1, 8), ...new Array(fields).fill(entry(0x9000, 1, claim, 0))], 0), plain.subarray(2));
    assert.equal(jpeg.length, total);
    const image = await decodeImage(jpeg);
    assert.deepEqual([image.width, image.height], [16, 32]);
    assert.ok(!red(image.data, 2 * 16 + 8) && red(image.data, 29 * 16 + 8), 'orientation 8: the red left half is now the bottom');
  });
});

describe('PNG', () => {
  /** A PNG chunk: length, type, data, CRC (pngjs checks it). */
  function chunk(type: string, data: Uint8Array): Uint8Array {
    const body = bytes(type, data);
    let crc = 0xffffffff;
    for (const byte of body) {
      crc ^= byte;
      for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
    }
    return bytes(be32(data.length), body, be32((crc ^ 0xffffffff) >>> 0));
  }
  /** An 8-bit RGB PNG, Adam7-interlaced, of the image data `raw` (its passes' filtered rows, deflated here). */
  const interlacedPng = (width: number, height: number, raw: Uint8Array) =>
    bytes([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], chunk('IHDR', bytes(be32(width), be32(height), [8, 2, 0, 0, 1])), chunk('IDAT', deflateSync(raw)), chunk('IEND', new Uint8Array(0)));

  test('decodes an interlaced PNG, and refuses one whose data inflates to more than its passes hold', async () => {
    // 5x3 RGB: the seven passes' rows (filter 0), pixel (x, y) coloured (10x, 20y, 7).
    const passes = [[0, 0, 8, 8], [4, 0, 8, 8], [0, 4, 4, 8], [2, 0, 4, 4], [0, 2, 2, 4], [1, 0, 2, 2], [0, 1, 1, 2]];
    const rows: number[] = [];
    for (const [x0, y0, dx, dy] of passes) {
      for (let y = y0; y < 3 && x0 < 5; y += dy) {
        rows.push(0);
        for (let x = x0; x < 5; x += dx) rows.push(10 * x, 20 * y, 7);
      }
    }
    const image = await decodeImage(interlacedPng(5, 3, Uint8Array.from(rows)));
    assert.deepEqual([image.width, image.height], [5, 3]);
    for (const [x, y] of [[0, 0], [4, 2], [3, 1]]) assert.deepEqual(Array.from(image.data.subarray((y * 5 + x) * 4, (y * 5 + x) * 4 + 4)), [10 * x, 20 * y, 7, 255]);
    // 64x64 whose data is 4 MB of zeros (4 KB deflated): pngjs inflated it whole (1 MB of file took 2.2 GB).
    await assert.rejects(decodeImage(interlacedPng(64, 64, new Uint8Array(4 * 2 ** 20))), (e) => assertCorrupt(e, /inflates to more than the 12408 bytes a 64x64 interlaced image holds/));
  });
});

describe('BMP', () => {
  /** An 8-bit run-length-encoded BMP (stored bottom-up), palette entry i = grey 10i, of the RLE data `runs`. */
  function rle8Bmp(width: number, height: number, runs: number[]): Uint8Array {
    const palette = Array.from({ length: 256 }, (_, i) => [Math.min(255, 10 * i), Math.min(255, 10 * i), Math.min(255, 10 * i), 0]).flat();
    const offset = 14 + 40 + palette.length;
    const info = [...le32(40), ...le32(width), ...le32(height), ...le16(1), ...le16(8), ...le32(1), ...le32(runs.length), ...le32(2835), ...le32(2835), ...le32(256), ...le32(0)];
    return bytes('BM', le32(offset + runs.length), [0, 0, 0, 0], le32(offset), info, palette, runs);
  }

  test('refuses a run-length-encoded BMP, which the decoder gets wrong and can be made to work without bound', async () => {
    // 4x2: bottom line 2, 2, 3, 3 (two runs); top line 5, 6, 7, 8 (absolute); end of line, end of bitmap. jimp
    // decoded it as green alone, and lost the bottom line.
    await assert.rejects(decodeImage(rle8Bmp(4, 2, [2, 2, 2, 3, 0, 0, 0, 4, 5, 6, 7, 8, 0, 0, 0, 1])), (e) => {
      assert.ok(e instanceof ImageDecodeError && e.reason === 'unsupported-format', String(e));
      return /Run-length-encoded BMPs \(compression 1, RLE8\) are not supported.*Save the image as PNG, JPEG or an uncompressed BMP/.test(e.message);
    });
  });
});
