/** PNG checks for pngjs, jimp's PNG decoder: its chunks as pngjs reads them, and an interlaced image's data inflated once. Node only. */
import { inflateSync } from 'node:zlib';
import { ImageDecodeError } from '../contract/image-header.ts';

/** Samples a pixel for each PNG colour type: grey, RGB, palette index, grey and alpha, RGBA. */
const PNG_CHANNELS: Readonly<Record<number, number>> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };
/** The seven passes of Adam7 interlacing: first column and row, and the steps between them. */
const ADAM7 = [[0, 0, 8, 8], [4, 0, 8, 8], [0, 4, 4, 8], [2, 0, 4, 4], [0, 2, 2, 4], [1, 0, 2, 2], [0, 1, 1, 2]] as const;

/**
 * Checks a PNG's chunks, up to IEND, as pngjs reads them. One IHDR: pngjs takes a second one's size for the
 * image, which the header check (reading the first) never saw, so an image over the pixel limit could pass.
 * One palette of at most 256 colours: pngjs makes an array of each colour of each PLTE, whatever the
 * image's size. And an interlaced image's data must inflate to no more than its passes hold: pngjs inflates a plain
 * PNG's data to its size at most, but an interlaced one's whole, without bound. That data is
 * inflated here once, stopping at the size the image holds.
 */
export function checkPng(b: Uint8Array): void {
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
