/** GIF checks for omggif, jimp's GIF decoder: the first frame found as omggif finds it, and its LZW codes. Node only. */
import { GifReader } from 'omggif';
import { ImageDecodeError, type ImageHeader } from '../contract/image-header.ts';

/**
 * Checks a GIF's first frame (the one jimp decodes), found by omggif's own reader: it must lie within the size the
 * header check read, and its LZW codes must name table entries already made.
 *
 * The frame's place: omggif skips some blocks differently from the GIF format (an application extension whose
 * block size is not 11 is taken for a fixed-size NETSCAPE one), so a frame can hide from the header check, and
 * a frame far larger than the header's can be decoded. The codes: omggif takes a code past the table as the one entry
 * that may be (the next), and records the previous code as its own prefix: its next chase through that entry
 * never ends.
 */
export function checkGif(b: Uint8Array, header: ImageHeader): void {
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
