/**
 * Checks on the bytes jimp's pure-JS decoders are about to read, for the ways a small file made one of them loop
 * for ever or spend seconds and gigabytes however small the image its header claims. Each was found with a crafted
 * file and measured; `test/decoder-guards.test.ts` holds small versions of those files. Node only: the browser
 * decodes with its own decoders.
 *
 * The header (`image-header.ts`) already bounds what the image's size and a TIFF's directories allow; what is here
 * reads further into the file, where a decoder's own accounting fails.
 */
import { inflateSync } from 'node:zlib';
import { ImageDecodeError, tiffForDecoding, type ImageHeader } from './image-header.ts';

/** What jimp should decode, and the EXIF orientation (1-8) to apply to its pixels afterwards. */
export interface DecoderInput {
  bytes: Uint8Array;
  orientation: number;
}

/**
 * The bytes for jimp: checked, and where needed a copy with the parts it must not read hidden (a TIFF's later
 * pages and maker notes, a JPEG's EXIF). Throws `ImageDecodeError` where decoding would hang or blow up a
 * decoder ('corrupt'), or decode wrongly ('unsupported-format'). The caller's bytes are never changed.
 */
export function prepareForDecoder(bytes: Uint8Array, header: ImageHeader): DecoderInput {
  switch (header.format) {
    case 'tiff':
      return { bytes: tiffForDecoding(bytes), orientation: 1 };
    case 'gif':
      checkGifCodes(bytes);
      return { bytes, orientation: 1 };
    case 'jpeg':
      checkJpegSegments(bytes);
      return jpegWithoutExif(bytes);
    case 'png':
      checkInterlacedPng(bytes);
      return { bytes, orientation: 1 };
    case 'bmp':
      checkBmpCompression(bytes);
      return { bytes, orientation: 1 };
    default:
      return { bytes, orientation: 1 };
  }
}

/**
 * The JPEG with its EXIF segments renamed (so that jimp's EXIF parser skips them) and the orientation they give.
 * exif-parser reads every value that each field of each EXIF segment claims, one at a time, from anywhere in the
 * file: a 66 KB JPEG of 5,459 fields each claiming the whole file took 27 s. Only the orientation is needed,
 * and it is read here as exif-parser finds it: the first Orientation field of the first two directories of the
 * first EXIF segment that has one, before the image data.
 */
function jpegWithoutExif(b: Uint8Array): DecoderInput {
  const exif: JpegSegment[] = [];
  for (const segment of jpegSegments(b)) {
    if (segment.marker === 0xda) break; // exif-parser reads no further
    const { marker, dataAt, end } = segment;
    if (marker === 0xe1 && end - dataAt >= 6 && EXIF_ID.every((v, i) => b[dataAt + i] === v)) exif.push(segment);
  }
  if (exif.length === 0) return { bytes: b, orientation: 1 };
  const orientation = exif.map(({ dataAt, end }) => exifOrientation(b, dataAt + 6, Math.min(end, b.length))).find((value) => value !== undefined) ?? 1;
  const copy = new Uint8Array(b); // a copy (Buffer.slice would be a view of the caller's bytes)
  for (const { dataAt } of exif) copy[dataAt + 3] = 0x78; // "Exif" -> "Exix"
  return { bytes: copy, orientation };
}

/** "Exif\0\0", which starts an EXIF segment's data. */
const EXIF_ID = [0x45, 0x78, 0x69, 0x66, 0, 0];
/** The EXIF tag of the orientation. */
const ORIENTATION_TAG = 0x0112;

/**
 * The Orientation value in the first two directories (the image's and its thumbnail's) of the TIFF structure at
 * `tiff` inside an EXIF segment ending at `end`, read as exif-parser reads it; undefined where there is none.
 */
function exifOrientation(b: Uint8Array, tiff: number, end: number): number | undefined {
  if (tiff + 8 > end) return undefined;
  const little = b[tiff] === 0x49 && b[tiff + 1] === 0x49;
  if (!little && !(b[tiff] === 0x4d && b[tiff + 1] === 0x4d)) return undefined;
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const u16 = (at: number) => view.getUint16(at, little);
  const u32 = (at: number) => view.getUint32(at, little);
  if (u16(tiff + 2) !== 42) return undefined;
  let ifd = u32(tiff + 4);
  for (let directory = 0; directory < 2 && ifd !== 0; directory++) {
    const at = tiff + ifd;
    if (at + 2 > end || at + 2 + u16(at) * 12 + 4 > end) return undefined;
    const entries = u16(at);
    for (let e = 0; e < entries; e++) {
      const entry = at + 2 + e * 12;
      if (u16(entry) !== ORIENTATION_TAG) continue;
      if (u32(entry + 4) !== 1) return undefined; // exif-parser gives an array, which jimp ignores
      const type = u16(entry + 2);
      if (type === 3 || type === 8) return u16(entry + 8);
      if (type === 4 || type === 9) return u32(entry + 8);
      return type === 1 ? b[entry + 8] : undefined;
    }
    ifd = u32(at + 2 + entries * 12);
  }
  return undefined;
}

/** More scans than any encoder writes (libjpeg's progressive JPEGs have 10): each costs a pass over the image. */
const MAX_JPEG_SCANS = 100;

/** A JPEG segment: its marker, where the marker is, and where its data (after the length) starts and ends. */
interface JpegSegment {
  marker: number;
  at: number;
  dataAt: number;
  end: number;
}

/**
 * Checks that every segment holds what its length says, as jpeg-js reads it, and that there are at most
 * `MAX_JPEG_SCANS` scans. jpeg-js reads the tables of a DQT or DHT, and the fields of a SOF, SOS or DRI, by
 * their contents and not their length: a DQT that declared 1 byte and held 65 hid a SOF for 8700x8700 from the
 * header (which skips by length and found a 64x64 one), and jpeg-js decoded it, 1.2 GB for an 86-byte file. A
 * progressive JPEG of 2,200 near-empty scans, 97 KB at 5000x5000, took 15 s.
 */
function checkJpegSegments(b: Uint8Array): void {
  let scans = 0;
  for (const segment of jpegSegments(b)) {
    const held = segment.end <= b.length ? jpegSegmentContents(b, segment) : undefined; // cut short: the decoder says so
    const declared = segment.end - segment.dataAt;
    if (held !== undefined && held !== declared) {
      throw new ImageDecodeError(
        'corrupt',
        `The JPEG is corrupt: its segment 0x${segment.marker.toString(16)} at byte ${segment.at} declares ${declared} bytes but holds ${held} (decoders would read the rest of the file differently)`,
      );
    }
    if (segment.marker === 0xda && ++scans > MAX_JPEG_SCANS) {
      throw new ImageDecodeError('corrupt', `The JPEG has more than ${MAX_JPEG_SCANS} scans; each costs a pass over the whole image, and no encoder writes that many`);
    }
  }
}

/** How many bytes jpeg-js reads for the segments it reads field by field; undefined for the others. */
function jpegSegmentContents(b: Uint8Array, { marker, dataAt, end }: JpegSegment): number | undefined {
  let p = dataAt;
  switch (marker) {
    case 0xdb: // DQT: tables of 64 values, of 8 or 16 bits, each after a byte naming it
      while (p < end) p += 1 + 64 * (b[p] >> 4 === 0 ? 1 : 2);
      return p - dataAt;
    case 0xc4: // DHT: tables of 16 code counts, then the codes' values, each after a byte naming it
      while (p < end) p += 17 + b.subarray(p + 1, p + 17).reduce((sum, count) => sum + count, 0);
      return p - dataAt;
    case 0xc0: // SOF0-2 (the frames jpeg-js decodes): precision, height, width, then 3 bytes a component
    case 0xc1:
    case 0xc2:
      return 6 + 3 * (b[dataAt + 5] ?? 0);
    case 0xda: // SOS: 2 bytes a component, then spectral selection and approximation
      return 1 + 2 * (b[dataAt] ?? 0) + 3;
    case 0xdd: // DRI
    case 0xdc: // DNL
      return 2;
    default:
      return undefined;
  }
}

/**
 * The segments of a JPEG after SOI, as lengths chain them; entropy-coded data after each SOS is skipped to the
 * next marker. Stops at EOI, at the end of the bytes, or where a marker is missing (the decoder reports that).
 */
function* jpegSegments(b: Uint8Array): Generator<JpegSegment> {
  let i = 2;
  while (i + 1 < b.length && b[i] === 0xff) {
    const at = i;
    while (i < b.length && b[i] === 0xff) i++; // fill bytes
    const marker = b[i++];
    if (marker === 0xd9 || marker === undefined) return;
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd8)) continue; // no length
    if (i + 2 > b.length) return;
    const length = (b[i] << 8) | b[i + 1];
    if (length < 2) throw new ImageDecodeError('corrupt', `The JPEG is corrupt: its segment 0x${marker.toString(16)} at byte ${at} has length ${length}`);
    const end = i + length;
    yield { marker, at, dataAt: i + 2, end };
    i = end;
    if (marker === 0xda) {
      // Entropy-coded data: 0xff is followed by 0 (a stuffed byte), a restart marker, or the next marker.
      while (i + 1 < b.length && !(b[i] === 0xff && b[i + 1] !== 0 && !(b[i + 1] >= 0xd0 && b[i + 1] <= 0xd7))) i++;
    }
  }
}

/**
 * Walks the LZW codes of a GIF's first frame (the one jimp decodes) as omggif does, and refuses a code that
 * names a table entry not yet made. omggif takes such a code as the one entry that may be (the next), and
 * records the previous code as its own prefix: its next chase through that entry never ends. A 37-byte GIF held
 * a decode thread until it was killed, and two of them stopped the server's decoding.
 */
function checkGifCodes(b: Uint8Array): void {
  const frame = gifFirstFrame(b);
  if (frame === undefined) return; // no image data: the decoder says so
  let p = frame.dataAt;
  const minCodeSize = b[p++];
  const clearCode = 1 << minCodeSize;
  const eoiCode = clearCode + 1;
  let nextCode = eoiCode + 1;
  let codeSize = minCodeSize + 1;
  let codeMask = (1 << codeSize) - 1;
  let bits = 0;
  let bitCount = 0;
  let subBlockSize = b[p++] ?? 0;
  // How many bytes each entry stands for; literals stand for one. The table holds 4096 entries.
  const lengths = new Int32Array(4096);
  const lengthOf = (code: number) => (code < clearCode ? 1 : lengths[code]);
  let prevCode: number | null = null;
  let out = 0;
  const outLength = frame.width * frame.height;
  // The bit reading and table growth are omggif's (GifReaderLZWOutputIndexStream), without the pixels.
  for (;;) {
    while (bitCount < 16) {
      if (subBlockSize === 0) break;
      bits |= (b[p++] ?? 0) << bitCount;
      bitCount += 8;
      if (subBlockSize === 1) subBlockSize = b[p++] ?? 0;
      else subBlockSize--;
    }
    if (bitCount < codeSize) return;
    const code = bits & codeMask;
    bits >>= codeSize;
    bitCount -= codeSize;
    if (code === clearCode) {
      nextCode = eoiCode + 1;
      codeSize = minCodeSize + 1;
      codeMask = (1 << codeSize) - 1;
      prevCode = null;
      continue;
    }
    if (code === eoiCode) return;
    if (code >= nextCode && (code > nextCode || prevCode === null)) {
      throw new ImageDecodeError(
        'corrupt',
        `The GIF image data is corrupt: code ${code} at byte ${p} names a table entry not yet made (the next is ${nextCode})${prevCode === null ? ', straight after a clear code' : ''}`,
      );
    }
    const length = code < nextCode ? lengthOf(code) : lengthOf(prevCode ?? 0) + 1;
    if (out + length - 1 > outLength) return; // omggif stops writing here: the frame is full
    out += length;
    if (prevCode !== null && nextCode < 4096) {
      lengths[nextCode++] = lengthOf(prevCode) + 1;
      if (nextCode >= codeMask + 1 && codeSize < 12) {
        codeSize++;
        codeMask = (codeMask << 1) | 1;
      }
    }
    prevCode = code;
  }
}

/** Where the first frame's LZW data starts (its minimum code size byte), and the frame's size. */
function gifFirstFrame(b: Uint8Array): { dataAt: number; width: number; height: number } | undefined {
  const colorTable = (flags: number): number => (flags & 0x80 ? 3 * 2 ** ((flags & 0x07) + 1) : 0);
  let i = 13 + colorTable(b[10]);
  while (i + 10 <= b.length) {
    if (b[i] === 0x2c) {
      const u16 = (at: number) => b[at] | (b[at + 1] << 8);
      return { dataAt: i + 10 + colorTable(b[i + 9]), width: u16(i + 5), height: u16(i + 7) };
    }
    if (b[i] !== 0x21) return undefined; // the trailer, or a block the header check refused
    i += 2; // extension: introducer, label, then data sub-blocks
    while (i < b.length && b[i] !== 0) i += b[i] + 1;
    i++;
  }
  return undefined;
}

/** Samples a pixel for each PNG colour type: grey, RGB, palette index, grey and alpha, RGBA. */
const PNG_CHANNELS: Readonly<Record<number, number>> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };
/** The seven passes of Adam7 interlacing: first column and row, and the steps between them. */
const ADAM7 = [[0, 0, 8, 8], [4, 0, 8, 8], [0, 4, 4, 8], [2, 0, 4, 4], [0, 2, 2, 4], [1, 0, 2, 2], [0, 1, 1, 2]] as const;

/**
 * Refuses an interlaced PNG whose image data inflates to more than its passes hold. pngjs inflates a plain PNG's
 * data to its size at most, but an interlaced one's whole: a 1 MB file inflated to 2.2 GB (the server answered,
 * and kept the memory). The data is inflated here once, stopping at the size the image holds.
 */
function checkInterlacedPng(b: Uint8Array): void {
  if (b.length < 29 || b[28] !== 1) return; // IHDR's interlace method: 1 is Adam7
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const [width, height, depth, colorType] = [view.getUint32(16), view.getUint32(20), b[24], b[25]];
  const bitsPerPixel = depth * (PNG_CHANNELS[colorType] ?? 4);
  let holds = 0; // each row of each pass: a filter byte, then its pixels
  for (const [x0, y0, dx, dy] of ADAM7) {
    const passWidth = Math.ceil((width - x0) / dx);
    const passHeight = Math.ceil((height - y0) / dy);
    if (passWidth > 0 && passHeight > 0) holds += passHeight * (1 + Math.ceil((passWidth * bitsPerPixel) / 8));
  }
  const data: Uint8Array[] = [];
  for (let at = 8; at + 8 <= b.length; ) {
    const length = view.getUint32(at);
    if (String.fromCharCode(b[at + 4], b[at + 5], b[at + 6], b[at + 7]) === 'IDAT') data.push(b.subarray(at + 8, at + 8 + length));
    at += 12 + length;
  }
  try {
    inflateSync(Buffer.concat(data), { maxOutputLength: Math.max(holds, 1) });
  } catch (error) {
    if ((error as { code?: string }).code !== 'ERR_BUFFER_TOO_LARGE') return; // broken data: the decoder says so
    throw new ImageDecodeError('corrupt', `The PNG is corrupt: its image data inflates to more than the ${holds} bytes a ${width}x${height} interlaced image holds`);
  }
}

/**
 * Refuses a run-length-encoded BMP (compression 1, RLE8, or 2, RLE4). bmp-ts decodes them wrongly (a 4x2 test
 * image came out green-only, its bottom line lost), and without bound: end-of-line codes past the last line move it
 * backwards for ever, so each 2-byte run of 255 pixels costs 255 writes however small the image (a 1 MB file took
 * 1.8 s; 10 MB, the server's body limit, about 18 s). Cameras and browsers never write them.
 */
function checkBmpCompression(b: Uint8Array): void {
  if (b.length < 34 || (b[14] | (b[15] << 8)) < 40) return; // no compression field in a 12-byte core header
  const compression = new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(30, true);
  if (compression === 1 || compression === 2) {
    throw new ImageDecodeError('unsupported-format', `Run-length-encoded BMPs (compression ${compression}, RLE${compression === 1 ? 8 : 4}) are not supported: the BMP decoder gets them wrong. Save the image as PNG, JPEG or an uncompressed BMP`);
  }
}
