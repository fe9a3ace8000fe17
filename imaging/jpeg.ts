/**
 * JPEG checks for jpeg-js, the decoder `decode.ts` calls directly: the segments walked as jpeg-js walks them, the
 * EXIF orientation read here (so that exif-parser never runs), and jpeg-js's own limits set from the header's size.
 * Node only: the browser decodes with its own decoders.
 */
import { ImageDecodeError, type ImageHeader } from '../contract/image-header.ts';

/**
 * The orientation a JPEG's EXIF gives (1 where it gives none): the first Orientation field in the first two
 * directories (the image's, then its thumbnail's) of the first EXIF segment that has one, before the image data.
 * Read here because the JPEG is decoded by jpeg-js alone (`decode.ts`): jimp would run exif-parser, which reads
 * every value each field of each EXIF segment claims, from anywhere in the file (quadratic in a crafted file),
 * and which reads segments the decoder does not (after the end of the
 * image, or hidden in another segment).
 */
export function jpegOrientation(b: Uint8Array): number {
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
 * pass over the image, and libjpeg's progressive JPEGs have 10 (a photo
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
 * but allocates each before it says so). And at most
 * `MAX_JPEG_SCANS` start-of-scan markers (FF DA), fewer for large images, anywhere in the file: counted in the
 * bytes rather than along the segments, so that no walk the decoder takes can find more. (jpeg-js
 * holds every frame it finds to the header's size: `jpegLimits` in `decode.ts`.)
 */
export function checkJpegSegments(b: Uint8Array, { width, height }: ImageHeader): void {
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
 * image for each component a scan names, repeats and all, and allocates a plane for each of a frame's.
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
 * What jpeg-js allocates per pixel at most, with room to spare: about 21 bytes for a 4:4:4 colour JPEG (what jimp
 * writes; docs/hardening.md); by its own accounting a 4-component (CMYK) 4:4:4 JPEG, the worst case, needs about 28.
 */
const JPEG_BYTES_PER_PIXEL = 32;
/** Room for the tables beside the image, in MB. */
const JPEG_TABLES_MB = 16;

/**
 * jpeg-js's limits for a JPEG whose header gives `pixels` (width x height, already within the caller's limit):
 * its resolution limit is that size, so a frame the header check did not see (jpeg-js reads frames itself) can be
 * no larger, and its memory limit what such an image needs. Its defaults (100 megapixels, 512 MB) are too loose
 * for a small image and too tight for 4:4:4 colour JPEGs above about 24 megapixels.
 */
export function jpegLimits(pixels: number): { maxResolutionInMP: number; maxMemoryUsageInMB: number } {
  return {
    maxResolutionInMP: (pixels + 0.5) / 1e6, // jpeg-js multiplies back by 1e6: half a pixel's room for rounding
    maxMemoryUsageInMB: Math.ceil((pixels * JPEG_BYTES_PER_PIXEL) / 2 ** 20) + JPEG_TABLES_MB,
  };
}
