/**
 * TIFF checks for utif2, jimp's TIFF decoder: the copy it reads (first page alone, maker notes hidden), and the first
 * page's strips or tiles checked as utif2 decodes them. The header check (`contract/image-header.ts`) has already
 * bounded the size, directories and layout. Node only.
 */
import { inflateRawSync } from 'node:zlib';
import { firstTiffIfd, ImageDecodeError, requireHeaderBytes, TIFF_TYPE_BYTES, tiffBitsPerPixel, tiffIfds, tiffTileCount } from '../contract/image-header.ts';

/**
 * The TIFF as the decoder should read it: a copy (the same bytes where nothing needs changing) whose first IFD
 * no longer links to a next page and whose maker notes and DNG private data are renamed to a tag no decoder reads.
 * Only the first page's size is checked against the pixel limit, but jimp decodes every page of the chain: a small
 * first page could carry a huge second one past the limit. And the decoder parses a maker note, and the IFD that
 * DNG private data points to, as further directories with neither the checks of `tiffIfds` nor any bound (a loop
 * there never ends). Neither is needed for the pixels.
 */
export function tiffForDecoding(b: Uint8Array): Uint8Array {
  const { ifd, entries, little, u16, u32 } = firstTiffIfd(b);
  const next = ifd + 2 + entries * 12;
  requireHeaderBytes(b, next + 4, 'tiff');
  const unread: number[] = []; // where the tags of the fields to hide from the decoder are
  for (const at of new Set(tiffIfds(b, u16, u32))) {
    for (let e = 0; e < u16(at); e++) {
      if (UNPARSED_TAGS.has(u16(at + 2 + e * 12))) unread.push(at + 2 + e * 12);
    }
  }
  if (u32(next) === 0 && unread.length === 0) return b;
  const copy = new Uint8Array(b);
  const view = new DataView(copy.buffer);
  view.setUint32(next, 0, little);
  for (const at of unread) view.setUint16(at, RENAMED_TAG, little);
  return copy;
}

/**
 * The values of the first IFD's fields, by tag, read as the decoder (utif2) reads them, for a TIFF `readImageHeader`
 * has accepted (its fields lie inside the file). Every field is listed, a later one with the same tag replacing an
 * earlier one, as in the decoder; the values of the integer types (SHORT, LONG, their signed forms, IFD) are given,
 * of BYTE and UNDEFINED fields the first alone (they hold blobs such as ICC profiles, too long to list per decode),
 * of others (text, fractions, floats) none.
 */
function tiffFirstIfdValues(b: Uint8Array): Map<number, number[]> {
  const { ifd, entries, little, u16, u32 } = firstTiffIfd(b);
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const readers: Readonly<Record<number, (at: number) => number>> = {
    1: (at) => b[at], 7: (at) => b[at], 3: u16, 4: u32, 13: u32, 8: (at) => view.getInt16(at, little), 9: (at) => view.getInt32(at, little),
  };
  const values = new Map<number, number[]>();
  for (let e = 0; e < entries; e++) {
    const at = ifd + 2 + e * 12;
    const type = u16(at + 2);
    const read = readers[type];
    if (read === undefined) {
      values.set(u16(at), []);
      continue;
    }
    const count = u32(at + 4);
    const size = TIFF_TYPE_BYTES[type];
    const valuesAt = count * size <= 4 ? at + 8 : u32(at + 8);
    const listed = type === 1 || type === 7 ? Math.min(count, 1) : count;
    values.set(u16(at), Array.from({ length: listed }, (_, i) => read(valuesAt + size * i)));
  }
  return values;
}

/** MakerNote and DNGPrivateData: the decoder parses their contents as IFDs, unchecked; `tiffForDecoding` hides them. */
const UNPARSED_TAGS: ReadonlySet<number> = new Set([37500, 50740]);
/** The tag they get instead: one no decoder knows, so the field stays in place, unread. */
const RENAMED_TAG = 0xffff;
/** The TIFF compressions decoded here, whose data is checked: the others' decoders in utif2 run unbounded. */
const TIFF_COMPRESSIONS: Readonly<Record<number, string>> = { 1: 'none', 5: 'LZW', 8: 'Deflate', 32946: 'Deflate', 32773: 'PackBits' };

/**
 * Checks a TIFF's first page's strips (or tiles) as utif2 decodes them: a compression and layout it decodes within
 * bounds, no more strips than the image has rows for, each strip inside the file and none sharing bytes, and each
 * strip's data decoding to no more than the strip holds. utif2 copies or decodes each strip for as many bytes as it
 * claims, and decodes every strip listed, so a small file can cost it minutes and gigabytes; JPEG-compressed strips
 * decode with no limit at all.
 */
export function checkTiffData(b: Uint8Array): void {
  const fields = tiffFirstIfdValues(b);
  const first = new Map([...fields].map(([tag, values]) => [tag, values[0]]));
  const compression = first.get(259) ?? 1;
  const samples = first.get(277) ?? 1;
  const unsupported = (what: string, note = '') => new ImageDecodeError('unsupported-format', `${what} is not supported${note}: save the image as PNG or JPEG`);
  // Panasonic's raw data (tag 45, read in any type) is decoded whatever the compression says, without bound; YCbCr pages are converted by a loop stepping RowsPerStrip rows, for one camera's
  // layout only; and separate colour planes are decoded as if interleaved (garbage), a strip for each sample of each
  // row.
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
