/**
 * Decoding in Node: image bytes to an RGBA pixel buffer (jpeg-js for JPEGs, jimp for the rest), after the header
 * sniff of `contract/image-header.ts` (re-exported here) has read the image's format and size without decoding it,
 * and the module for its format (`jpeg.ts`, `png.ts`, `gif.ts`, `bmp.ts`, `tiff.ts`) has checked the bytes for what
 * would hang or blow up its decoder (docs/hardening.md lists each such file). Used by training and by the server;
 * everything after decoding (crop, greyscale, resize, scaling) is `preprocess.ts`, so nothing here converts or resizes.
 *
 * JPEGs are decoded by jpeg-js, the decoder jimp itself calls, with the same options: jimp would also run
 * exif-parser over the whole file, whose cost a crafted file can make quadratic.
 * EXIF orientation: a JPEG's Orientation tag (2-8) is read in `jpeg.ts` and applied after decoding
 * (`orient`), as jimp would, so a phone photo taken sideways comes out upright and with width and height swapped.
 * `readImageHeader` reports the stored size (before that rotation), which is what decoding allocates.
 */
import jpeg from 'jpeg-js';
import { Jimp } from 'jimp';
import { checkBmpCompression } from './bmp.ts';
import { checkGif } from './gif.ts';
import { checkJpegSegments, jpegLimits, jpegOrientation } from './jpeg.ts';
import { checkPng } from './png.ts';
import { checkTiffData, tiffForDecoding } from './tiff.ts';
import { DECODABLE_FORMATS, ImageDecodeError, readImageFormat, readImageHeader, type ImageFormat, type ImageHeader } from '../contract/image-header.ts';
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
  const { bytes: decoded, orientation } = PREPARE_FOR_DECODER[header.format](bytes, header);
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

/** What to decode, and the EXIF orientation (1-8) to apply to the pixels afterwards. */
interface DecoderInput {
  bytes: Uint8Array;
  orientation: number;
}

/**
 * Per format, the bytes to decode: checked (`jpeg.ts`, `png.ts`, `gif.ts`, `bmp.ts`, `tiff.ts`), and for a TIFF a
 * copy with the parts the decoder must not read hidden (its later pages and maker notes). Each throws
 * `ImageDecodeError` where decoding would hang or blow up a decoder ('corrupt'), or decode wrongly
 * ('unsupported-format'). The caller's bytes are never changed.
 */
const PREPARE_FOR_DECODER: Readonly<Record<ImageFormat, (bytes: Uint8Array, header: ImageHeader) => DecoderInput>> = {
  jpeg: (bytes, header) => {
    checkJpegSegments(bytes, header);
    return { bytes, orientation: jpegOrientation(bytes) };
  },
  png: (bytes) => {
    checkPng(bytes);
    return { bytes, orientation: 1 };
  },
  gif: (bytes, header) => {
    checkGif(bytes, header);
    return { bytes, orientation: 1 };
  },
  bmp: (bytes) => {
    checkBmpCompression(bytes);
    return { bytes, orientation: 1 };
  },
  tiff: (bytes) => {
    const decoded = tiffForDecoding(bytes);
    checkTiffData(decoded);
    return { bytes: decoded, orientation: 1 };
  },
  webp: (bytes) => ({ bytes, orientation: 1 }), // never reached: `readDecodableHeader` refuses WebP
};

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
