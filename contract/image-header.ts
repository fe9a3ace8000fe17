/**
 * An image's format and stored size from its first bytes, without decoding any pixels: no dependency, so the
 * browser bundle takes it as well as the server (`imaging/decode.ts` re-exports it). A TIFF's size is read after a
 * walk of the directories its first page uses, exported for the Node decoder's TIFF checks (`imaging/tiff.ts`).
 */

export type ImageFormat = 'jpeg' | 'png' | 'bmp' | 'gif' | 'tiff' | 'webp';

/** The formats `decodeImage` can decode; `readImageHeader` also recognises WebP, to name it in the refusal. */
export const DECODABLE_FORMATS: readonly ImageFormat[] = ['jpeg', 'png', 'bmp', 'gif', 'tiff'];

export interface ImageHeader {
  format: ImageFormat;
  /** stored width in pixels (before any EXIF rotation) */
  width: number;
  /** stored height in pixels (before any EXIF rotation) */
  height: number;
}

/** Why bytes could not be decoded: all are the caller's doing (a 4xx in the server). */
export type ImageDecodeFailure = 'empty' | 'unsupported-format' | 'truncated' | 'corrupt' | 'too-large';

export class ImageDecodeError extends Error {
  override name = 'ImageDecodeError';
  constructor(
    readonly reason: ImageDecodeFailure,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * The format and stored size of an image from its first bytes (JPEG SOF, PNG IHDR, GIF screen descriptor,
 * BMP info header, TIFF first IFD, WebP VP8/VP8L/VP8X), without decoding any pixels.
 * Throws `ImageDecodeError` for empty, unrecognised, truncated or inconsistent headers.
 */
export function readImageHeader(bytes: Uint8Array | Buffer): ImageHeader {
  const format = readImageFormat(bytes);
  const b = plainBytes(bytes);
  const [width, height] = SIZE_READERS[format](b);
  if (width < 1 || height < 1) throw corrupt(format, `it claims a size of ${width}x${height}`);
  return { format, width, height };
}

/** The format alone, from the first bytes (what `readImageHeader` reads first); throws as it does. */
export function readImageFormat(bytes: Uint8Array | Buffer): ImageFormat {
  if (bytes.length === 0) throw new ImageDecodeError('empty', 'The image is empty (0 bytes)');
  return sniffFormat(plainBytes(bytes));
}

/** A plain Uint8Array view of the same memory (Buffer's typings do not fit Uint8Array parameters). */
function plainBytes(bytes: Uint8Array | Buffer): Uint8Array {
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** The format from the magic bytes at the start of the file. */
function sniffFormat(b: Uint8Array): ImageFormat {
  if (startsWith(b, [0xff, 0xd8, 0xff])) return 'jpeg';
  if (startsWith(b, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return 'png';
  if (ascii(b, 0, 6) === 'GIF87a' || ascii(b, 0, 6) === 'GIF89a') return 'gif';
  if (ascii(b, 0, 2) === 'BM' && b.length >= 14) return 'bmp';
  if (startsWith(b, [0x49, 0x49, 0x2a, 0x00]) || startsWith(b, [0x4d, 0x4d, 0x00, 0x2a])) return 'tiff';
  if (ascii(b, 0, 4) === 'RIFF' && ascii(b, 8, 4) === 'WEBP') return 'webp';
  throw new ImageDecodeError(
    'unsupported-format',
    `Not a supported image: the first bytes (${hex(b, 8)}) match none of: ${DECODABLE_FORMATS.join(', ')}`,
  );
}

/** Width and height from each format's header. */
const SIZE_READERS: Record<ImageFormat, (b: Uint8Array) => [number, number]> = {
  jpeg: jpegSize,
  png: (b) => {
    requireHeaderBytes(b, 24, 'png');
    if (ascii(b, 12, 4) !== 'IHDR') throw corrupt('png', 'the first chunk is not IHDR');
    return [u32be(b, 16), u32be(b, 20)];
  },
  gif: gifSize,
  bmp: bmpSize,
  tiff: tiffSize,
  webp: webpSize,
};

/**
 * The logical screen, grown to cover every frame: a frame may claim more than the screen, and decoders
 * allocate what the frame claims, so a bomb can hide there.
 */
function gifSize(b: Uint8Array): [number, number] {
  requireHeaderBytes(b, 13, 'gif');
  let width = u16le(b, 6);
  let height = u16le(b, 8);
  const colorTable = (flags: number): number => (flags & 0x80 ? 3 * 2 ** ((flags & 0x07) + 1) : 0);
  const skipSubBlocks = (at: number): number => {
    while (at < b.length && b[at] !== 0) at += b[at] + 1;
    return at + 1;
  };
  let i = 13 + colorTable(b[10]);
  while (i < b.length) {
    const block = b[i];
    if (block === 0x3b) break; // trailer
    if (block === 0x21) {
      i = skipSubBlocks(i + 2); // extension: introducer, label, data sub-blocks
    } else if (block === 0x2c) {
      if (i + 10 > b.length) break; // truncated: decoding will say so
      width = Math.max(width, u16le(b, i + 1) + u16le(b, i + 5));
      height = Math.max(height, u16le(b, i + 3) + u16le(b, i + 7));
      i = skipSubBlocks(i + 10 + colorTable(b[i + 9]) + 1); // descriptor, local colour table, LZW code size
    } else {
      throw corrupt('gif', `unknown block 0x${block.toString(16)} at byte ${i}`);
    }
  }
  return [width, height];
}

function jpegSize(b: Uint8Array): [number, number] {
  let i = 2;
  for (;;) {
    requireHeaderBytes(b, i + 2, 'jpeg');
    if (b[i] !== 0xff) throw corrupt('jpeg', `expected a marker at byte ${i}, found 0x${b[i].toString(16)}`);
    while (i < b.length && b[i] === 0xff) i++; // fill bytes
    requireHeaderBytes(b, i + 1, 'jpeg');
    const marker = b[i++];
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd8)) continue; // markers without a length
    if (marker === 0xda || marker === 0xd9) throw corrupt('jpeg', 'no frame header (SOF) before the image data');
    requireHeaderBytes(b, i + 2, 'jpeg');
    const length = u16be(b, i);
    if (length < 2) throw corrupt('jpeg', `segment 0x${marker.toString(16)} has length ${length}`);
    // SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC): precision, height, width.
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      requireHeaderBytes(b, i + 7, 'jpeg');
      return [u16be(b, i + 5), u16be(b, i + 3)];
    }
    i += length;
  }
}

function bmpSize(b: Uint8Array): [number, number] {
  requireHeaderBytes(b, 18, 'bmp');
  const infoSize = u32le(b, 14);
  if (infoSize === 12) {
    requireHeaderBytes(b, 22, 'bmp');
    return [u16le(b, 18), u16le(b, 20)];
  }
  if (infoSize < 40) throw corrupt('bmp', `unknown info header size ${infoSize}`);
  requireHeaderBytes(b, 26, 'bmp');
  const view = dataView(b);
  // A negative height means the rows are stored top-down.
  return [view.getInt32(18, true), Math.abs(view.getInt32(22, true))];
}

/** A TIFF's first IFD (image file directory), and readers of the file's integers in its byte order. */
export interface TiffIfd {
  /** where the IFD starts */
  ifd: number;
  /** how many 12-byte entries it has */
  entries: number;
  little: boolean;
  u16: (at: number) => number;
  u32: (at: number) => number;
}

/** Where the first IFD of a TIFF starts, and how many entries it has. */
export function firstTiffIfd(b: Uint8Array): TiffIfd {
  const little = b[0] === 0x49;
  const u16 = (at: number) => (little ? u16le(b, at) : u16be(b, at));
  const u32 = (at: number) => (little ? u32le(b, at) : u32be(b, at));
  requireHeaderBytes(b, 8, 'tiff');
  const ifd = u32(4);
  requireHeaderBytes(b, ifd + 2, 'tiff');
  return { ifd, entries: u16(ifd), little, u16, u32 };
}

/** Bytes of one value of each TIFF field type (the decoder skips others). */
export const TIFF_TYPE_BYTES: Readonly<Record<number, number>> = { 1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4 };
/** Tags whose values point at further IFDs, which the decoder reads as well: SubIFDs, EXIF, GPS, Fuji's. */
const TIFF_IFD_POINTERS: ReadonlySet<number> = new Set([330, 34665, 34853, 61440]);
/** More IFD reads than a camera's file needs for one page: a file with more is refused. */
const MAX_TIFF_IFDS = 64;

/**
 * The IFDs the decoder reads for the first page, in its order, once for each time a field points to one (it reads
 * a directory again each time, so a loop, or two pointers to the next directory at each of 60 levels, would keep
 * it reading for ever). Checks on the way that every field lies inside the file: the decoder reads every value a
 * field claims, one by one, before it reads a pixel, so a tiny file could claim 2^32 values.
 */
export function tiffIfds(b: Uint8Array, u16: (at: number) => number, u32: (at: number) => number): number[] {
  const reads: number[] = [];
  const read = (at: number): void => {
    reads.push(at);
    if (reads.length > MAX_TIFF_IFDS) throw corrupt('tiff', `its image file directories point to more than ${MAX_TIFF_IFDS} others (or to each other in a loop)`);
    requireHeaderBytes(b, at + 2, 'tiff');
    const entries = u16(at);
    requireHeaderBytes(b, at + 2 + entries * 12, 'tiff');
    for (let e = 0; e < entries; e++) {
      const entry = at + 2 + e * 12;
      const tag = u16(entry);
      const count = u32(entry + 4);
      const bytes = (TIFF_TYPE_BYTES[u16(entry + 2)] ?? 0) * count;
      // Values of 4 bytes or fewer are stored in the entry itself; longer ones at an offset in the file.
      const valuesAt = bytes <= 4 ? entry + 8 : u32(entry + 8);
      if (valuesAt + bytes > b.length) throw corrupt('tiff', `tag ${tag} claims ${count} values (${bytes} bytes) beyond the end of the file (${b.length} bytes)`);
      if (TIFF_IFD_POINTERS.has(tag) && bytes > 0) {
        // The decoder follows each value as an offset, whatever the type: one that is not an offset is refused.
        const type = u16(entry + 2);
        if (type !== 3 && type !== 4 && type !== 13) throw corrupt('tiff', `tag ${tag} points to directories with values of type ${type}; expected SHORT, LONG or IFD`);
        for (let i = 0; i < count; i++) read(type === 3 ? u16(valuesAt + 2 * i) : u32(valuesAt + 4 * i));
      }
    }
  };
  read(firstTiffIfd(b).ifd);
  return reads;
}

/** The first-IFD fields that size the decoder's buffers, by tag. */
const TIFF_LAYOUT_TAGS: Readonly<Record<number, string>> = {
  256: 'ImageWidth', 257: 'ImageLength', 258: 'BitsPerSample', 259: 'Compression', 262: 'PhotometricInterpretation',
  273: 'StripOffsets', 277: 'SamplesPerPixel', 278: 'RowsPerStrip', 279: 'StripByteCounts', 322: 'TileWidth', 323: 'TileLength',
  324: 'TileOffsets', 325: 'TileByteCounts', 50885: 'SRawType',
};
/** A pixel of four 32-bit samples: RGBA in floats, the most a photo's page needs. */
const MAX_TIFF_BITS_PER_PIXEL = 128;
/**
 * The smallest tile side, which the TIFF format requires tiles to be multiples of, and the largest the decoder is
 * let allocate beyond the image's own.
 */
const [MIN_TIFF_TILE_SIDE, MAX_TIFF_TILE_SIDE] = [16, 1024];
/**
 * How many times the image's pixels its tiles may cover (a tile side up to twice the image's, where tiles are
 * large), and how many pixels they may cover whatever the image's shape: libtiff's 256x256 tiles cover 26 times the
 * pixels of a 50x5000 image, and decode in a blink.
 */
const [MAX_TIFF_TILE_COVER, MIN_TIFF_TILE_ALLOWANCE] = [4, 4096 * 4096];

/**
 * The first page's size, after checks on what the decoder allocates from the first IFD: the image buffer holds
 * width x height x bits per pixel, and each tile's buffer tile width x tile length x bits per pixel, whatever the
 * image size, so a few hundred bytes can claim gigabytes or millions of tile decodes (docs/hardening.md).
 */
function tiffSize(b: Uint8Array): [number, number] {
  const { ifd, entries, u16, u32 } = firstTiffIfd(b);
  tiffIfds(b, u16, u32);
  // The decoder reads each field's values wherever they are (in the entry, or at its offset), and a later field
  // with the same tag replaces an earlier one; only the first value of each is used here, as it uses it.
  const fields = new Map<number, number>();
  for (let e = 0; e < entries; e++) {
    const at = ifd + 2 + e * 12;
    const tag = u16(at);
    if (!(tag in TIFF_LAYOUT_TAGS)) continue;
    const type = u16(at + 2);
    const count = u32(at + 4);
    if (type !== 3 && type !== 4) throw corrupt('tiff', `tag ${tag} (${TIFF_LAYOUT_TAGS[tag]}) has type ${type}; expected SHORT or LONG`);
    if (count === 0) throw corrupt('tiff', `tag ${tag} (${TIFF_LAYOUT_TAGS[tag]}) has no value`);
    const valuesAt = count * TIFF_TYPE_BYTES[type] <= 4 ? at + 8 : u32(at + 8); // inside the file: tiffIfds checked
    fields.set(tag, type === 3 ? u16(valuesAt) : u32(valuesAt));
  }
  const width = fields.get(256);
  const height = fields.get(257);
  if (width === undefined || height === undefined) throw corrupt('tiff', 'the first IFD has no ImageWidth/ImageLength');
  if (fields.get(278) === 0) throw corrupt('tiff', 'its RowsPerStrip is 0; a strip holds at least one row');
  // The decoder sizes the image by the bits of `tiffBitsPerPixel`, but works on each strip's or tile's rows at
  // BitsPerSample (up to 32) times SamplesPerPixel: both must fit (SamplesPerPixel 65535 in a Canon sRAW page
  // would pass the first alone).
  const bitsPerPixel = Math.max(tiffBitsPerPixel(fields, width), Math.min(32, fields.get(258) ?? 1) * (fields.get(277) ?? 1));
  if (!(bitsPerPixel >= 1 && bitsPerPixel <= MAX_TIFF_BITS_PER_PIXEL)) {
    throw corrupt('tiff', `its pixels would take ${bitsPerPixel} bits each (BitsPerSample ${fields.get(258) ?? 1}, SamplesPerPixel ${fields.get(277) ?? 1}); a page takes 1 to ${MAX_TIFF_BITS_PER_PIXEL}`);
  }
  const tileWidth = fields.get(322);
  const tileLength = fields.get(323);
  if (tileWidth !== undefined || tileLength !== undefined) {
    const fits = (tile: number | undefined, side: number): tile is number => tile !== undefined && tile >= MIN_TIFF_TILE_SIDE && tile <= Math.max(side + 15, MAX_TIFF_TILE_SIDE);
    if (!fits(tileWidth, width) || !fits(tileLength, height)) {
      throw corrupt('tiff', `its tiles are ${tileWidth ?? 'missing'}x${tileLength ?? 'missing'} for a ${width}x${height} image; a tile side is at least ${MIN_TIFF_TILE_SIDE} and at most the image's rounded up to 16 pixels, or ${MAX_TIFF_TILE_SIDE}`);
    }
    // Each tile is cleared, decoded and copied whole, however little of it the image covers: 1024x1024 tiles down
    // a 16-pixel-wide image cover 64 times its pixels.
    const tiles = tiffTileCount(width, height, tileWidth, tileLength);
    const covered = tiles * tileWidth * tileLength;
    const allowed = Math.max(MAX_TIFF_TILE_COVER * width * height, MIN_TIFF_TILE_ALLOWANCE);
    if (covered > allowed) {
      throw corrupt('tiff', `its ${tiles} tiles of ${tileWidth}x${tileLength} cover ${covered} pixels for a ${width}x${height} image; its tiles may cover ${allowed} (${MAX_TIFF_TILE_COVER} times the image's pixels, and at least ${MIN_TIFF_TILE_ALLOWANCE})`);
    }
  }
  return [width, height];
}

/** How many tiles utif2 decodes for a page: every one the image's width and length reach into. */
export function tiffTileCount(width: number, height: number, tileWidth: number, tileLength: number): number {
  return Math.ceil(width / tileWidth) * Math.ceil(height / tileLength);
}

/** Bits per pixel as the decoder works them out (utif2's decodeImage, including its two camera-raw exceptions). */
export function tiffBitsPerPixel(fields: ReadonlyMap<number, number>, width: number): number {
  const bitsPerSample = fields.get(258) ?? 1;
  // Some Nikon raw files (uncompressed colour-filter-array pages) are read at the bits their first strip holds.
  const stripBytes = fields.get(279);
  const rowsPerStrip = fields.get(278);
  if ((fields.get(259) ?? 1) === 1 && fields.get(262) === 32803 && stripBytes !== undefined && rowsPerStrip !== undefined) {
    return Math.round((stripBytes * 8) / (width * rowsPerStrip));
  }
  if (fields.get(50885) === 4) return bitsPerSample * 3; // Canon's sRAW
  return bitsPerSample * (fields.get(277) ?? 1);
}

function webpSize(b: Uint8Array): [number, number] {
  requireHeaderBytes(b, 30, 'webp');
  const chunk = ascii(b, 12, 4);
  if (chunk === 'VP8 ') {
    if (b[23] !== 0x9d || b[24] !== 0x01 || b[25] !== 0x2a) throw corrupt('webp', 'bad VP8 start code');
    return [u16le(b, 26) & 0x3fff, u16le(b, 28) & 0x3fff];
  }
  if (chunk === 'VP8L') {
    if (b[20] !== 0x2f) throw corrupt('webp', 'bad VP8L signature');
    const bits = u32le(b, 21);
    return [(bits & 0x3fff) + 1, ((bits >>> 14) & 0x3fff) + 1];
  }
  if (chunk === 'VP8X') {
    return [(b[24] | (b[25] << 8) | (b[26] << 16)) + 1, (b[27] | (b[28] << 8) | (b[29] << 16)) + 1];
  }
  throw corrupt('webp', `unknown first chunk "${chunk}"`);
}

/** Throws a 'truncated' `ImageDecodeError` where the header needs more bytes than the file has. */
export function requireHeaderBytes(b: Uint8Array, length: number, format: ImageFormat): void {
  if (b.length < length) {
    throw new ImageDecodeError('truncated', `The ${format.toUpperCase()} header is truncated: ${b.length} bytes, the header needs at least ${length}`);
  }
}

function corrupt(format: ImageFormat, why: string): ImageDecodeError {
  return new ImageDecodeError('corrupt', `The ${format.toUpperCase()} header is corrupt: ${why}`);
}

function startsWith(b: Uint8Array, prefix: number[]): boolean {
  return b.length >= prefix.length && prefix.every((v, i) => b[i] === v);
}

function ascii(b: Uint8Array, at: number, length: number): string {
  if (b.length < at + length) return '';
  return String.fromCharCode(...b.subarray(at, at + length));
}

function hex(b: Uint8Array, length: number): string {
  return Array.from(b.subarray(0, length), (v) => v.toString(16).padStart(2, '0')).join(' ');
}

function dataView(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

const u16be = (b: Uint8Array, at: number): number => (b[at] << 8) | b[at + 1];
const u16le = (b: Uint8Array, at: number): number => b[at] | (b[at + 1] << 8);
const u32be = (b: Uint8Array, at: number): number => dataView(b).getUint32(at, false);
const u32le = (b: Uint8Array, at: number): number => dataView(b).getUint32(at, true);
