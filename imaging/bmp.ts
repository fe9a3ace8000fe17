/** BMP checks for bmp-ts, jimp's BMP decoder. Node only. */
import { ImageDecodeError } from '../contract/image-header.ts';

/**
 * Refuses a run-length-encoded BMP (compression 1, RLE8, or 2, RLE4). bmp-ts decodes them wrongly (a 4x2 test
 * image came out green-only, its bottom line lost), and without bound: end-of-line codes past the last line move it
 * backwards for ever, so each 2-byte run of 255 pixels costs 255 writes however small the image. Cameras and
 * browsers never write them.
 */
export function checkBmpCompression(b: Uint8Array): void {
  if (b.length < 34 || (b[14] | (b[15] << 8)) < 40) return; // no compression field in a 12-byte core header
  const compression = new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(30, true);
  if (compression === 1 || compression === 2) {
    throw new ImageDecodeError('unsupported-format', `Run-length-encoded BMPs (compression ${compression}, RLE${compression === 1 ? 8 : 4}) are not supported: the BMP decoder gets them wrong. Save the image as PNG, JPEG or an uncompressed BMP`);
  }
}
