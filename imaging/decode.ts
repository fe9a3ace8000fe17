/**
 * Decoding in Node: image bytes to an RGBA pixel buffer (jpeg-js for JPEGs, jimp for the rest), after the header
 * sniff of `image-header.ts` (re-exported here) has read the image's format and size without decoding it, and
 * `decoder-guards.ts` has checked the bytes. Used by training and by the server; everything after decoding (crop,
 * greyscale, resize, scaling) is `preprocess.ts`, so nothing here converts or resizes.
 *
 * JPEGs are decoded by jpeg-js, the decoder jimp itself calls, with the same options: jimp would also run
 * exif-parser over the whole file, whose cost a crafted file makes quadratic (a 66 KB JPEG took 27 s).
 * EXIF orientation: a JPEG's Orientation tag (2-8) is read in `decoder-guards.ts` and applied after decoding
 * (`orient`), as jimp would, so a phone photo taken sideways comes out upright and with width and height swapped.
 * `readImageHeader` reports the stored size (before that rotation), which is what decoding allocates.
 */
import jpeg from 'jpeg-js';
import { Jimp } from 'jimp';
import { prepareForDecoder } from './decoder-guards.ts';
import { DECODABLE_FORMATS, ImageDecodeError, readImageFormat, readImageHeader, type ImageHeader } from '../contract/image-header.ts';
import type { PixelBuffer } from '../contract/preprocess.ts';

export { DECODABLE_FORMATS, ImageDecodeError, readImageHeader, type ImageDecodeFailure, type ImageFormat, type ImageHeader } from '../contract/image-header.ts';

export interface DecodeOptions {
  /** refuse images whose header claims more pixels than this, before allocating anything (decompression bombs) */
  maxPixels?: number;
}

/** Decodes JPEG, PNG, BMP, GIF (first frame) or TIFF (first page) bytes to RGBA, upright per the EXIF orientation. */
export async function decodeImage(bytes: Uint8Array | Buffer, options: DecodeOptions = {}): Promise<PixelBuffer> {
  const header = readDecodableHeader(bytes);
  const { maxPixels } = options;
  if (maxPixels !== undefined && header.width * header.height > maxPixels) {
    throw new ImageDecodeError(
      'too-large',
      `Image is ${header.width}x${header.height} (${header.width * header.height} pixels); the limit is ${maxPixels} pixels`,
    );
  }
  // Checked for what hangs the decoders; a TIFF's first page alone.
  const { bytes: decoded, orientation } = prepareForDecoder(bytes, header);
  const buffer = Buffer.isBuffer(decoded) ? decoded : Buffer.from(decoded.buffer, decoded.byteOffset, decoded.byteLength);
  let pixels: { width: number; height: number; data: Uint8Array };
  try {
    if (header.format === 'jpeg') {
      pixels = jpeg.decode(buffer, { useTArray: true, formatAsRGBA: true, ...jpegLimits(header.width * header.height) });
    } else {
      const { width, height, data } = (await Jimp.fromBuffer(buffer)).bitmap;
      pixels = { width, height, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
    }
  } catch (error) {
    const detail = error instanceof Error ? error.message : String(error);
    // jpeg-js's own guards (`jpegLimits`): a frame larger than the header's, or more memory than such an image needs.
    if (/maxMemoryUsageInMB|maxResolutionInMP/.test(detail)) {
      throw new ImageDecodeError('corrupt', `The JPEG is corrupt: the decoder found more image than its ${header.width}x${header.height} header gives (${detail})`, { cause: error });
    }
    // A JPEG cut short (an interrupted upload or copy) lacks the end-of-image marker.
    const truncated = header.format === 'jpeg' && !(buffer[buffer.length - 2] === 0xff && buffer[buffer.length - 1] === 0xd9);
    throw new ImageDecodeError(
      truncated ? 'truncated' : 'corrupt',
      `Could not decode the ${header.format.toUpperCase()} image${truncated ? ' (it is truncated: no end-of-image marker)' : ''}: ${detail}`,
      { cause: error },
    );
  }
  const { width, height, data } = pixels;
  return orient({ width, height, channels: 4, data }, orientation);
}

/**
 * The RGBA pixels turned upright for an EXIF orientation (2-8; others leave them as they are), as jimp would
 * turn them (http://sylvana.net/jpegcrop/exif_orientation.html): 5-8 swap width and height.
 */
export function orient(image: PixelBuffer, orientation: number): PixelBuffer {
  if (!(orientation >= 2 && orientation <= 8)) return image;
  const { width: w, height: h } = image;
  const swap = orientation > 4;
  const width = swap ? h : w;
  const height = swap ? w : h;
  const data = image.data.byteOffset % 4 === 0 ? image.data : new Uint8Array(image.data); // a Uint32Array view needs alignment
  const source = new Uint32Array(data.buffer, data.byteOffset, w * h);
  const target = new Uint32Array(w * h);
  // For each pixel (x, y) of the upright image, the stored pixel it shows.
  const from: (x: number, y: number) => number = {
    2: (x: number, y: number) => y * w + (w - 1 - x), // mirrored
    3: (x: number, y: number) => (h - 1 - y) * w + (w - 1 - x), // rotated 180
    4: (x: number, y: number) => (h - 1 - y) * w + x, // mirrored vertically
    5: (x: number, y: number) => x * w + y, // mirrored, rotated 270 clockwise
    6: (x: number, y: number) => (h - 1 - x) * w + y, // rotated 90 clockwise
    7: (x: number, y: number) => (h - 1 - x) * w + (w - 1 - y), // mirrored, rotated 90 clockwise
    8: (x: number, y: number) => x * w + (w - 1 - y), // rotated 270 clockwise
  }[orientation as 2 | 3 | 4 | 5 | 6 | 7 | 8];
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) target[y * width + x] = source[from(x, y)];
  return { width, height, channels: 4, data: new Uint8Array(target.buffer) };
}

/**
 * The header of an image `decodeImage` can decode. The format is checked before the size is read (WebP, which
 * the header reader recognises to name it, is refused): advice to resize an image, or that its header is
 * broken, is no use when its format is refused anyway.
 */
export function readDecodableHeader(bytes: Uint8Array | Buffer): ImageHeader {
  const format = readImageFormat(bytes);
  if (!DECODABLE_FORMATS.includes(format)) {
    throw new ImageDecodeError('unsupported-format', `Unsupported image format "${format}"; expected one of: ${DECODABLE_FORMATS.join(', ')}`);
  }
  return readImageHeader(bytes);
}

/**
 * What jpeg-js allocates per pixel at most, with room to spare: measured, about 21 bytes for a 4:4:4 colour JPEG
 * (what jimp writes); by its own accounting a 4-component (CMYK) 4:4:4 JPEG, the worst case, needs about 28.
 */
const JPEG_BYTES_PER_PIXEL = 32;
/** Room for the tables beside the image, in MB. */
const JPEG_TABLES_MB = 16;

/**
 * jpeg-js's limits for a JPEG whose header gives `pixels` (width x height, already within the caller's limit):
 * its resolution limit is that size, so a frame the header check did not see (jpeg-js reads frames itself) can be
 * no larger, and its memory limit what such an image needs. Its defaults (100 megapixels, 512 MB) let a crafted
 * 1-megapixel file take 1.3 GB, and refuse 4:4:4 colour JPEGs above about 24 megapixels.
 */
export function jpegLimits(pixels: number): { maxResolutionInMP: number; maxMemoryUsageInMB: number } {
  return {
    maxResolutionInMP: (pixels + 0.5) / 1e6, // jpeg-js multiplies back by 1e6: half a pixel's room for rounding
    maxMemoryUsageInMB: Math.ceil((pixels * JPEG_BYTES_PER_PIXEL) / 2 ** 20) + JPEG_TABLES_MB,
  };
}
