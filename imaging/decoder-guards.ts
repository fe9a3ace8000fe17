/**
 * Checks on the bytes jimp's pure-JS decoders are about to read, for the ways a small file made one of them loop
 * for ever or spend seconds and gigabytes however small the image its header claims, or read another image than
 * the header check did (where a decoder walks the file differently from the format). Each was found with a crafted
 * file and measured; `test/decoder-guards.test.ts` holds small versions of those files. Node only: the browser
 * decodes with its own decoders.
 *
 * The header (`image-header.ts`) already bounds what the image's size and a TIFF's directories allow; what is here
 * reads further into the file, where a decoder's own accounting fails.
 */
import { inflateSync } from 'node:zlib';
import { GifReader } from 'omggif';
import { inflateRawSync } from 'node:zlib';
import { ImageDecodeError, tiffBitsPerPixel, tiffFirstIfdValues, tiffForDecoding, tiffTileCount, type ImageHeader } from '../contract/image-header.ts';

/** What to decode, and the EXIF orientation (1-8) to apply to the pixels afterwards. */
export interface DecoderInput {
  bytes: Uint8Array;
  orientation: number;
}

/**
 * The bytes to decode: checked, and for a TIFF a copy with the parts the decoder must not read hidden (its later
 * pages and maker notes). Throws `ImageDecodeError` where decoding would hang or blow up a
 * decoder ('corrupt'), or decode wrongly ('unsupported-format'). The caller's bytes are never changed.
 */
export function prepareForDecoder(bytes: Uint8Array, header: ImageHeader): DecoderInput {
  switch (header.format) {
    case 'tiff': {
      const decoded = tiffForDecoding(bytes);
      checkTiffData(decoded);
      return { bytes: decoded, orientation: 1 };
    }
    case 'gif':
      checkGif(bytes, header);
      return { bytes, orientation: 1 };
    case 'jpeg':
      checkJpegSegments(bytes, header);
      return { bytes, orientation: jpegOrientation(bytes) };
    case 'png':
      checkPng(bytes);
      return { bytes, orientation: 1 };
    case 'bmp':
      checkBmpCompression(bytes);
      return { bytes, orientation: 1 };
    default:
      return { bytes, orientation: 1 };
  }
}

/**
 * The orientation a JPEG's EXIF gives (1 where it gives none): the first Orientation field in the first two
 * directories (the image's, then its thumbnail's) of the first EXIF segment that has one, before the image data.
 * Read here because the JPEG is decoded by jpeg-js alone (`decode.ts`): jimp would run exif-parser, which reads
 * every value each field of each EXIF segment claims, from anywhere in the file (a 66 KB JPEG of 5,459 fields
 * each claiming the whole file took 27 s), and which reads segments the decoder does not (after the end of the
 * image, or hidden in another segment).
 */
function jpegOrientation(b: Uint8Array): number {
  for (const { marker, dataAt, end } of jpegSegments(b)) {
    if (marker === 0xda) break; // the image data: EXIF comes before it
    if (marker !== 0xe1 || end - dataAt < 6 || !EXIF_ID.every((v, i) => b[dataAt + i] === v)) continue;
    const orientation = exifOrientation(b, dataAt + 6, Math.min(end, b.length));
    if (orientation !== undefined) return orientation;
  }
  return 1;
}

/** "Exif\0\0", which starts an EXIF segment's data. */
const EXIF_ID = [0x45, 0x78, 0x69, 0x66, 0, 0];
/** The EXIF tag of the orientation. */
const ORIENTATION_TAG = 0x0112;

/**
 * The Orientation value in the first two directories (the image's and its thumbnail's) of the TIFF structure at
 * `tiff` inside an EXIF segment ending at `end`; undefined where there is none.
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
      if (u32(entry + 4) !== 1) return undefined; // a list of values (exif-parser gives an array, which jimp ignored)
      const type = u16(entry + 2);
      if (type === 3 || type === 8) return u16(entry + 8);
      if (type === 4 || type === 9) return u32(entry + 8);
      return type === 1 ? b[entry + 8] : undefined;
    }
    ifd = u32(at + 2 + entries * 12);
  }
  return undefined;
}

/**
 * The most start-of-scan markers a JPEG may hold, and the most scans times megapixels: each scan costs jpeg-js a
 * pass over the image (a refinement scan over 5000x5000, 0.2 s), and libjpeg's progressive JPEGs have 10 (a photo
 * with a progressive preview and a thumbnail inside, about 21). 600 lets a 25-megapixel photo have 24.
 */
const [MAX_JPEG_SCANS, MAX_JPEG_SCAN_MEGAPIXELS] = [100, 600];

/** A JPEG segment: its marker, where the marker is, and where its data (after the length) starts and ends. */
interface JpegSegment {
  marker: number;
  at: number;
  dataAt: number;
  end: number;
}

/**
 * Checks a JPEG's segments as jpeg-js reads them. Every segment must hold what its length says: jpeg-js reads
 * the tables of a DQT or DHT, and the fields of a SOF, SOS or DRI, by their contents and not their length, and a
 * DQT that declared 1 byte and held 65 hid a frame from the header check. One frame (jpeg-js decodes no more,
 * but allocates each before it says so: a second frame hidden in 105 bytes took 815 MB). And at most
 * `MAX_JPEG_SCANS` start-of-scan markers (FF DA), fewer for large images, anywhere in the file: counted in the
 * bytes rather than along the segments, so that no walk the decoder takes can find more. A progressive JPEG of
 * 2,200 near-empty scans, 97 KB at 5000x5000, took 15 s; one of 100 refinement scans, 4.5 KB, 20 s. (jpeg-js
 * holds every frame it finds to the header's size: `jpegLimits` in `decode.ts`.)
 */
function checkJpegSegments(b: Uint8Array, { width, height }: ImageHeader): void {
  let scans = 0;
  for (let i = b.indexOf(0xda, 1); i !== -1; i = b.indexOf(0xda, i + 1)) if (b[i - 1] === 0xff) scans++;
  const allowed = Math.min(MAX_JPEG_SCANS, Math.floor(MAX_JPEG_SCAN_MEGAPIXELS / ((width * height) / 1e6)));
  if (scans > allowed) {
    throw new ImageDecodeError('corrupt', `The JPEG has ${scans} start-of-scan markers; a ${width}x${height} image may have ${allowed}: each scan costs a pass over the whole image, and no encoder writes that many`);
  }
  let components: number[] | undefined; // the frame's component ids, once its header is read
  for (const segment of jpegSegments(b)) {
    const { marker, at, dataAt, end } = segment;
    if (end > b.length) return; // cut short: the decoder says so
    const held = jpegSegmentContents(b, segment);
    if (held !== undefined && held !== end - dataAt) {
      throw new ImageDecodeError(
        'corrupt',
        `The JPEG is corrupt: its segment 0x${marker.toString(16)} at byte ${at} declares ${end - dataAt} bytes but holds ${held} (decoders would read the rest of the file differently)`,
      );
    }
    const corrupt = (fault: string) => new ImageDecodeError('corrupt', `The JPEG is corrupt: ${fault}`);
    if (marker >= 0xc0 && marker <= 0xc2) {
      if (components !== undefined) throw corrupt(`a second frame header (SOF) at byte ${at}; a JPEG image has one`);
      components = Array.from({ length: b[dataAt + 5] }, (_, k) => b[dataAt + 6 + 3 * k]);
      const sampling = Array.from(components, (_, k) => b[dataAt + 7 + 3 * k]);
      checkJpegComponents(components, `its frame header at byte ${at}`, corrupt);
      if (sampling.some((hv) => hv >> 4 < 1 || hv >> 4 > 4 || (hv & 15) < 1 || (hv & 15) > 4)) {
        throw corrupt(`its frame header at byte ${at} has a sampling factor outside 1-4`);
      }
    } else if (marker === 0xda) {
      if (components === undefined) throw corrupt(`a scan at byte ${at} comes before the frame header`);
      const selected = Array.from({ length: b[dataAt] }, (_, k) => b[dataAt + 1 + 2 * k]);
      checkJpegComponents(selected, `its scan at byte ${at}`, corrupt);
      const missing = selected.find((id) => !components?.includes(id));
      if (missing !== undefined) throw corrupt(`its scan at byte ${at} names component ${missing}, which the frame does not have`);
      const [start, stop] = [b[dataAt + 1 + 2 * selected.length], b[dataAt + 2 + 2 * selected.length]];
      if (start > stop || stop > 63) throw corrupt(`its scan at byte ${at} covers coefficients ${start} to ${stop}; a scan covers some of 0 to 63`);
    }
  }
}

/**
 * Refuses a frame or scan of other than 1 to 4 components, or naming one twice. jpeg-js runs a pass over the whole
 * image for each component a scan names, repeats and all: a 646-byte scan naming one component 255 times, in a
 * 1000x1000 frame, took 42 s; a frame of 120 components, 1.3 GB.
 */
function checkJpegComponents(ids: readonly number[], where: string, corrupt: (fault: string) => ImageDecodeError): void {
  if (ids.length < 1 || ids.length > 4) throw corrupt(`${where} has ${ids.length} components; a JPEG has 1 to 4`);
  const repeated = ids.find((id, k) => ids.indexOf(id) !== k);
  if (repeated !== undefined) throw corrupt(`${where} names component ${repeated} twice`);
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
 * jpeg-js ends a scan early at `at`, a stuffed FF 00 or a restart marker in its entropy-coded data, where a restart
 * interval (DRI) ends there (it ends the scan at anything but a restart marker), or where the scan's last block is
 * followed by a restart marker; it then reads on as segments, FF 00 pairs skipped. Refuses the one thing it could
 * then do that this walk does not, its recovery from a malformed APP marker (00 E0 or 00 E1 and a length landing on
 * 0xff), which would send it into bytes this walk skips (a comment's contents, say), where a frame or scan could
 * hide from the checks. Anything else there stops jpeg-js, or brings it to the marker where this walk goes on.
 */
function checkScanEnd(b: Uint8Array, at: number): void {
  let q = at + 2;
  while (b[q] === 0xff && b[q + 1] === 0) q += 2;
  if (b[q] === 0 && (b[q + 1] === 0xe0 || b[q + 1] === 0xe1) && b[q + 2 + ((b[q + 2] << 8) | b[q + 3])] === 0xff) {
    const what = b[at + 1] === 0 ? 'stuffed byte (FF 00)' : 'restart marker';
    throw new ImageDecodeError('corrupt', `The JPEG is corrupt: the ${what} at byte ${at} is followed by bytes the decoder could take for a malformed APP segment, and read the rest of the file differently`);
  }
}

/** The markers jpeg-js reads a segment for (after 0xff): APP0-15, COM, DQT, SOF0-2, DHT, DRI, DNL and SOS. */
const JPEG_SEGMENT_MARKERS = new Set([...Array.from({ length: 16 }, (_, n) => 0xe0 + n), 0xfe, 0xdb, 0xc0, 0xc1, 0xc2, 0xc4, 0xdd, 0xdc, 0xda]);
/** Frame markers of the JPEG processes jpeg-js does not decode: lossless, hierarchical, arithmetic-coded. */
const UNSUPPORTED_JPEG_FRAMES = new Set([0xc3, 0xc5, 0xc6, 0xc7, 0xc9, 0xca, 0xcb, 0xcd, 0xce, 0xcf]);

/**
 * The segments of a JPEG after SOI, read as jpeg-js's parse loop reads them, two bytes at a time: it skips
 * FF 00, treats FF FF as fill, backs up a byte where a segment's length ran one past the next marker's FF, and
 * once takes 00 E0 or 00 E1 for an APP marker (for some phones' malformed EXIF). Entropy-coded data after each
 * SOS is skipped to the next marker that is not a restart marker, where jpeg-js's scan decoding ends (except
 * where a restart interval ends at FF 00 or a restart marker, or the scan's last block is followed by one: jpeg-js
 * ends the scan there and may read on differently, which is why scans are counted in the bytes, and why
 * `checkScanEnd` runs at each). Stops at EOI or the end of the bytes; throws `ImageDecodeError`
 * where jpeg-js would stop at an unknown marker.
 */
function* jpegSegments(b: Uint8Array): Generator<JpegSegment> {
  let i = 2;
  let recovered = false;
  let restartInterval = 0; // the last DRI's, in force for the scans after it, as in jpeg-js
  while (i + 2 <= b.length) {
    const at = i;
    const marker = (b[i] << 8) | b[i + 1];
    i += 2;
    if (marker === 0xffd9) return; // EOI
    if (marker === 0xff00) continue;
    if (marker === 0xffff) {
      if (b[i] !== 0xff) i--;
      continue;
    }
    if (marker >> 8 === 0xff && JPEG_SEGMENT_MARKERS.has(marker & 0xff)) {
      if (i + 2 > b.length) return;
      const length = (b[i] << 8) | b[i + 1];
      if (length < 2) throw new ImageDecodeError('corrupt', `The JPEG is corrupt: its segment 0x${(marker & 0xff).toString(16)} at byte ${at} has length ${length}`);
      const end = i + length;
      yield { marker: marker & 0xff, at, dataAt: i + 2, end };
      if (marker === 0xffdd) restartInterval = (b[i + 2] << 8) | b[i + 3];
      i = end;
      if (marker === 0xffda) {
        // Entropy-coded data: 0xff is followed by 0 (a stuffed byte), a restart marker, or the next marker.
        // At a restart marker, or a stuffed byte where restart intervals are in force, jpeg-js may end the scan:
        // `checkScanEnd`. (Without them a scan is one interval, and only a restart marker can follow its end.)
        for (; i + 1 < b.length && !(b[i] === 0xff && b[i + 1] !== 0 && !(b[i + 1] >= 0xd0 && b[i + 1] <= 0xd7)); i++) {
          if (!recovered && b[i] === 0xff && (b[i + 1] !== 0 || restartInterval !== 0)) checkScanEnd(b, i);
        }
      }
    } else if (b[at - 1] === 0xff && b[at] >= 0xc0 && b[at] <= 0xfe) {
      i = at - 1; // the previous segment's length took the next marker's 0xff
    } else if ((marker === 0xe0 || marker === 0xe1) && !recovered && i + 2 <= b.length && b[i + ((b[i] << 8) | b[i + 1])] === 0xff) {
      recovered = true;
      const end = i + ((b[i] << 8) | b[i + 1]);
      yield { marker, at, dataAt: i + 2, end };
      i = end;
    } else if (marker >> 8 === 0xff && UNSUPPORTED_JPEG_FRAMES.has(marker & 0xff)) {
      throw new ImageDecodeError('unsupported-format', `The JPEG is lossless, hierarchical or arithmetic-coded (frame marker 0x${(marker & 0xff).toString(16)} at byte ${at}), which the decoder does not support; save it as an ordinary (baseline or progressive) JPEG or a PNG`);
    } else {
      throw new ImageDecodeError('corrupt', `The JPEG is corrupt: 0x${marker.toString(16).padStart(4, '0')} at byte ${at} is not a marker the decoder knows`);
    }
  }
}

/**
 * Checks a GIF's first frame (the one jimp decodes), found by omggif's own reader: it must lie within the size the
 * header check read, and its LZW codes must name table entries already made.
 *
 * The frame's place: omggif skips some blocks differently from the GIF format (an application extension whose
 * block size is not 11 is taken for a fixed-size NETSCAPE one), so a frame can hide from the header check, and
 * a 30000x30000 frame in a small GIF took 16 s. The codes: omggif takes a code past the table as the one entry
 * that may be (the next), and records the previous code as its own prefix: its next chase through that entry
 * never ends. A 37-byte GIF held a decode thread until it was killed, and two of them stopped the server's decoding.
 */
function checkGif(b: Uint8Array, header: ImageHeader): void {
  let frame: ReturnType<GifReader['frameInfo']>;
  try {
    frame = new GifReader(b).frameInfo(0);
  } catch {
    return; // no frame, or blocks omggif cannot read: the decoder says so
  }
  if (frame.x + frame.width > header.width || frame.y + frame.height > header.height) {
    throw new ImageDecodeError(
      'corrupt',
      `The GIF is corrupt: its first frame as the decoder reads it (${frame.width}x${frame.height} at ${frame.x},${frame.y}) lies outside its ${header.width}x${header.height} image; its blocks are not what they claim`,
    );
  }
  checkGifCodes(b, frame.data_offset, frame.width * frame.height);
}

/** Walks the LZW codes of a frame whose data starts at `dataAt` as omggif does, for `outLength` pixels. */
function checkGifCodes(b: Uint8Array, dataAt: number, outLength: number): void {
  let p = dataAt;
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

/** The TIFF compressions decoded here, whose data is checked: the others' decoders in utif2 run unbounded. */
const TIFF_COMPRESSIONS: Readonly<Record<number, string>> = { 1: 'none', 5: 'LZW', 8: 'Deflate', 32946: 'Deflate', 32773: 'PackBits' };

/**
 * Checks a TIFF's first page's strips (or tiles) as utif2 decodes them: a compression and layout it decodes within
 * bounds, no more strips than the image has rows for, each strip inside the file and none sharing bytes, and each
 * strip's data decoding to no more than the strip holds. utif2 copies or decodes each strip for as many bytes as it
 * claims, and decodes every strip listed: two strips claiming 4 GB held a decode thread for minutes (386 bytes);
 * 100 strips sharing 1 MB of PackBits runs took 32 s; 1 MB of Deflate, 8.5 s and 2.2 GB; JPEG-compressed strips
 * decode with no limit at all (a 16000x16000 JPEG in a 100x100 page, 1.6 GB).
 */
function checkTiffData(b: Uint8Array): void {
  const fields = tiffFirstIfdValues(b);
  const first = new Map([...fields].map(([tag, values]) => [tag, values[0]]));
  const compression = first.get(259) ?? 1;
  const samples = first.get(277) ?? 1;
  const unsupported = (what: string, note = '') => new ImageDecodeError('unsupported-format', `${what} is not supported${note}: save the image as PNG or JPEG`);
  // Panasonic's raw data (tag 45, read in any type) is decoded whatever the compression says, without bound (a
  // reviewer's small file: 20.9 s); YCbCr pages are converted by a loop stepping RowsPerStrip rows, for one camera's
  // layout only; and separate colour planes are decoded as if interleaved (garbage), a strip for each sample of each
  // row (128 one-bit samples at 1000x1000: 7.5 s).
  if (!(compression in TIFF_COMPRESSIONS) || fields.has(45)) {
    throw unsupported(`TIFF compression ${fields.has(45) ? 'Panasonic raw' : compression}`, ' (only none, LZW, Deflate and PackBits are)');
  }
  if (first.get(262) === 6) throw unsupported('A YCbCr TIFF (PhotometricInterpretation 6)');
  if (first.get(284) === 2 && samples > 1) throw unsupported('A TIFF of separate colour planes (PlanarConfiguration 2)');
  const corrupt = (fault: string) => new ImageDecodeError('corrupt', `The TIFF is corrupt: ${fault}`);
  const [width, height] = [first.get(256) ?? 0, first.get(257) ?? 0];
  const bitsPerPixel = tiffBitsPerPixel(first, width);
  const tiled = fields.has(322);
  // Where utif2 finds the strips (or tiles) and their byte counts: strips under the tiles' tags where the strips'
  // are missing, a whole uncompressed image for one strip, whatever its count says.
  let offsets = (tiled ? undefined : fields.get(273)) ?? fields.get(324);
  if (offsets === undefined) return; // no image data: the decoder says so
  const wholeImage = compression === 1 && offsets.length === 1 ? [height * Math.ceil((width * bitsPerPixel) / 8)] : undefined;
  const counts = (tiled ? undefined : wholeImage ?? fields.get(279)) ?? fields.get(325) ?? [];
  let unitBytes: number; // what each strip or tile decodes to
  if (tiled) {
    const [tileWidth, tileLength] = [first.get(322) ?? 0, first.get(323) ?? 0];
    // utif2 decodes every tile of the image, copying as many bytes as a tile without an offset claims.
    const tiles = tiffTileCount(width, height, tileWidth, tileLength);
    if (offsets.length < tiles) throw corrupt(`it lists ${offsets.length} tiles for a ${width}x${height} image of ${tileWidth}x${tileLength} tiles (${tiles})`);
    offsets = offsets.slice(0, tiles);
    unitBytes = Math.ceil((tileWidth * tileLength * bitsPerPixel) / 8);
  } else {
    const rowsPerStrip = Math.min(first.get(278) ?? height, height);
    const strips = Math.ceil(height / rowsPerStrip);
    if (offsets.length > strips) throw corrupt(`it lists ${offsets.length} strips for a ${width}x${height} image of ${rowsPerStrip} rows a strip (${strips} at most)`);
    unitBytes = rowsPerStrip * Math.ceil((width * bitsPerPixel) / 8);
  }
  let claimed = 0;
  offsets.forEach((offset, i) => {
    const count = counts[i] ?? 0;
    if (offset + count > b.length) throw corrupt(`its ${tiled ? 'tile' : 'strip'} ${i} claims ${count} bytes from byte ${offset}, beyond the end of the file (${b.length} bytes)`);
    claimed += count;
    const decoded = tiffDecodedLength(b, offset, count, compression, unitBytes);
    if (decoded > unitBytes) throw corrupt(`its ${tiled ? 'tile' : 'strip'} ${i} decodes to more than the ${unitBytes} bytes it holds`);
  });
  if (claimed > b.length) throw corrupt(`its ${tiled ? 'tiles' : 'strips'} claim ${claimed} bytes in a file of ${b.length}: they share bytes`);
}

/**
 * How many bytes a strip's data decodes to, read as utif2 decodes it (at most `limit` + 1 are decoded). Throws
 * `ImageDecodeError` for LZW codes that would send utif2's decoder round a loop.
 */
function tiffDecodedLength(b: Uint8Array, offset: number, count: number, compression: number, limit: number): number {
  const data = b.subarray(offset, offset + count);
  switch (compression) {
    case 8:
    case 32946: // zlib: utif2 inflates what lies between the 2-byte header and the 4-byte checksum
      try {
        return inflateRawSync(data.subarray(2, data.length - 4), { maxOutputLength: Math.max(limit, 1) }).length;
      } catch (error) {
        return (error as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE' ? limit + 1 : 0; // broken data: the decoder says so
      }
    case 32773: {
      let out = 0;
      for (let p = 0; p < data.length; ) {
        const n = (data[p++] << 24) >> 24; // a signed byte: n + 1 literal bytes, or a byte repeated 1 - n times
        if (n >= 0) [out, p] = [out + n + 1, p + n + 1];
        else if (n > -128) [out, p] = [out + 1 - n, p + 1];
      }
      return out;
    }
    case 5:
      return tiffLzwLength(b, offset, count, limit);
    default:
      return 0; // uncompressed: copied, as many bytes as the strip has
  }
}

/**
 * The length of a TIFF LZW strip's output, walked as utif2's `_decodeLZW` reads it (codes most significant bit
 * first, widening a code early), stopping past `limit`. Refuses a code beyond the next table entry, or other than
 * a literal after a clear code: utif2 would record an entry whose prefix is itself or a later one, and its next
 * walk down that chain would never end (as omggif's does for GIFs).
 */
function tiffLzwLength(b: Uint8Array, offset: number, count: number, limit: number): number {
  const [clear, end] = [256, 257];
  const lengths = new Uint32Array(4096).fill(1, 0, 258); // bytes each entry stands for; utif2 keeps them across clears
  let [next, width, bit, out, previous] = [258, 9, offset * 8, 0, 0];
  const code = (): number => {
    const at = bit >>> 3; // the last code may take bits past the strip, from the file, as utif2 reads it
    const bits = (b[at] << 16) | (b[at + 1] << 8) | b[at + 2];
    bit += width;
    return (bits >>> (24 - ((bit - width) & 7) - width)) & ((1 << width) - 1);
  };
  const add = (prefix: number): void => {
    if (next < 4096) lengths[next] = lengths[prefix] + 1;
    next++;
    if (next + 1 === 1 << width && width !== 12) width++;
  };
  const refuse = (value: number, why: string) =>
    new ImageDecodeError('corrupt', `The TIFF is corrupt: LZW code ${value} at byte ${(bit - width) >>> 3} ${why}`);
  while (bit < (offset + count) * 8 && out <= limit) {
    let value = code();
    if (value === end) break;
    if (value === clear) {
      [next, width] = [258, 9];
      value = code();
      if (value === end) break;
      if (value >= 258) throw refuse(value, 'follows a clear code; the first code after one is a single byte');
      out += lengths[value];
    } else if (value < next) {
      out += lengths[value];
      add(previous);
    } else if (value === next) {
      add(previous);
      out += lengths[next - 1];
    } else {
      throw refuse(value, `names a table entry not yet made (the next is ${next})`);
    }
    previous = value;
  }
  return out;
}

/** Samples a pixel for each PNG colour type: grey, RGB, palette index, grey and alpha, RGBA. */
const PNG_CHANNELS: Readonly<Record<number, number>> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };
/** The seven passes of Adam7 interlacing: first column and row, and the steps between them. */
const ADAM7 = [[0, 0, 8, 8], [4, 0, 8, 8], [0, 4, 4, 8], [2, 0, 4, 4], [0, 2, 2, 4], [1, 0, 2, 2], [0, 1, 1, 2]] as const;

/**
 * Checks a PNG's chunks, up to IEND, as pngjs reads them. One IHDR: pngjs takes a second one's size for the
 * image, which the header check (reading the first) never saw; a 36-megapixel image passed a 25-megapixel limit
 * that way. One palette of at most 256 colours: pngjs makes an array of each colour of each PLTE (9.9 MB of
 * them took 1.3 s and 430 MB for a 64x64 image). And an interlaced image's data must inflate to no more than its passes hold: pngjs inflates a plain
 * PNG's data to its size at most, but an interlaced one's whole, and a 1 MB file inflated to 2.2 GB (the server
 * answered, and kept the memory). That data is inflated here once, stopping at the size the image holds.
 */
function checkPng(b: Uint8Array): void {
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const data: Uint8Array[] = [];
  let palettes = 0;
  for (let at = 8; at + 8 <= b.length; ) {
    const length = view.getUint32(at);
    const type = String.fromCharCode(b[at + 4], b[at + 5], b[at + 6], b[at + 7]);
    if (type === 'IEND') break;
    if (type === 'IHDR' && at !== 8) {
      throw new ImageDecodeError('corrupt', `The PNG is corrupt: a second image header (IHDR) at byte ${at}, which decoders would read a different size from`);
    }
    if (type === 'PLTE' && ++palettes > 1) throw new ImageDecodeError('corrupt', `The PNG is corrupt: a second palette (PLTE) at byte ${at}`);
    if (type === 'PLTE' && length > 3 * 256) {
      throw new ImageDecodeError('corrupt', `The PNG is corrupt: its palette (PLTE) at byte ${at} holds ${length} bytes, more than 256 colours`);
    }
    if (type === 'IDAT') data.push(b.subarray(at + 8, at + 8 + length));
    at += 12 + length;
  }
  if (b.length < 29 || b[28] !== 1) return; // IHDR's interlace method: 1 is Adam7
  const [width, height, depth, colorType] = [view.getUint32(16), view.getUint32(20), b[24], b[25]];
  const bitsPerPixel = depth * (PNG_CHANNELS[colorType] ?? 4);
  let holds = 0; // each row of each pass: a filter byte, then its pixels
  for (const [x0, y0, dx, dy] of ADAM7) {
    const passWidth = Math.ceil((width - x0) / dx);
    const passHeight = Math.ceil((height - y0) / dy);
    if (passWidth > 0 && passHeight > 0) holds += passHeight * (1 + Math.ceil((passWidth * bitsPerPixel) / 8));
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
