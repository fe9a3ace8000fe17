/**
 * Uploads decoded with sharp (libvips): EXIF orientation applied, and a large photo shrunk while it is decoded
 * (JPEG's DCT scaling) to at most `maxSide` pixels a side, which is all the detector and the face crops use.
 * The header is read first, so a format we do not take or an image outside the size limits is refused before
 * any pixel is allocated. BMP, which libvips does not read, goes through the guarded jimp decoder.
 */
import sharp, { type FailOnOptions, type Sharp } from 'sharp';
import { imageSizeProblem, type ImageSizeLimits, type ImageSizeProblem } from '../contract/limits.ts';
import type { PixelBuffer } from '../contract/preprocess.ts';
import { ImageDecodeError, readImageHeader, type ImageFormat } from '../contract/image-header.ts';
import { decodeImage } from './decode.ts';

/** The formats the server decodes; readImageHeader recognises no others. */
export const PHOTO_FORMATS: readonly ImageFormat[] = ['jpeg', 'png', 'webp', 'gif', 'tiff', 'bmp'];

/** Longest side of the decoded photo by default: a face a tenth of the photo wide still gets 100 pixels. */
export const DEFAULT_WORKING_SIDE = 1024;

/** Transparent pixels are shown over white, as `preprocessToBytes` composites them. */
const WHITE = '#ffffff';

/**
 * What makes libvips refuse an image's pixels, per format. A JPEG cut short is refused; libjpeg's other warnings
 * (extraneous bytes before a marker, a damaged scan it fills in) are common in cameras' own files, so those decode,
 * as browsers show them, and the detector decides whether a face is there. The other loaders report damage as
 * errors, and their warnings (ancillary PNG chunks, unusual TIFF tags) do not touch the pixels.
 */
const FAIL_ON: Record<ImageFormat, FailOnOptions> = { jpeg: 'truncated', png: 'error', webp: 'error', gif: 'error', tiff: 'error', bmp: 'error' };

/** EXIF orientations 5 to 8 turn the image a quarter, swapping width and height. */
const FIRST_QUARTER_TURN_ORIENTATION = 5;

export interface PhotoDecodeOptions extends ImageSizeLimits {
  /** Longest side of the pixels returned; larger photos are shrunk (never enlarged). */
  maxSide?: number;
}

export interface DecodedPhoto {
  format: ImageFormat;
  /** RGB pixels after EXIF orientation, at most `maxSide` a side */
  pixels: PixelBuffer;
  /** the photo's own size after EXIF orientation: what boxes are reported in */
  width: number;
  height: number;
  /** photo pixels per decoded pixel (1 where no shrinking was needed) */
  scale: number;
}

/** An image refused for its size, with the server's error code. */
export class ImageSizeError extends Error {
  override name = 'ImageSizeError';
  constructor(readonly problem: ImageSizeProblem, format: ImageFormat) {
    super(`The ${format} image ${problem.predicate}`);
  }
}

// One libvips thread per image: the server decodes several images at once, one per request.
sharp.concurrency(1);

export async function decodePhoto(bytes: Uint8Array, options: PhotoDecodeOptions): Promise<DecodedPhoto> {
  const header = readImageHeader(bytes);
  if (!PHOTO_FORMATS.includes(header.format)) {
    throw new ImageDecodeError('unsupported-format', `${header.format} images are not supported; send one of: ${PHOTO_FORMATS.join(', ')}`);
  }
  const problem = imageSizeProblem(header.width, header.height, options);
  if (problem !== undefined) throw new ImageSizeError(problem, header.format);
  const maxSide = options.maxSide ?? DEFAULT_WORKING_SIDE;
  if (header.format === 'bmp') return fromPixels(header.format, await decodeImage(bytes, { maxPixels: options.maxPixels }), maxSide);
  try {
    const input = sharp(bytes, { limitInputPixels: options.maxPixels, failOn: FAIL_ON[header.format], pages: 1 });
    const { orientation = 1 } = await input.metadata();
    const turned = orientation >= FIRST_QUARTER_TURN_ORIENTATION;
    const [width, height] = turned ? [header.height, header.width] : [header.width, header.height];
    const pixels = await workingPixels(input.rotate(), maxSide);
    return { format: header.format, pixels, width, height, scale: width / pixels.width };
  } catch (error) {
    throw new ImageDecodeError('corrupt', `The ${header.format} image could not be decoded (${firstLine(error)}); the file may be truncated or corrupted`, { cause: error });
  }
}

/** A photo decoded by another decoder, shrunk as sharp would have. */
async function fromPixels(format: ImageFormat, image: PixelBuffer, maxSide: number): Promise<DecodedPhoto> {
  const longest = Math.max(image.width, image.height);
  if (longest <= maxSide && image.channels === 3) return { format, pixels: image, width: image.width, height: image.height, scale: 1 };
  const pixels = await workingPixels(sharp(image.data, { raw: { width: image.width, height: image.height, channels: image.channels as 1 | 2 | 3 | 4 } }), maxSide);
  return { format, pixels, width: image.width, height: image.height, scale: image.width / pixels.width };
}

/** RGB bytes at most `maxSide` a side (never enlarged), transparency over white. */
async function workingPixels(image: Sharp, maxSide: number): Promise<PixelBuffer> {
  const { data, info } = await image
    .resize({ width: maxSide, height: maxSide, fit: 'inside', withoutEnlargement: true })
    .flatten({ background: WHITE })
    .toColourspace('srgb')
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, channels: 3, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

const firstLine = (error: unknown): string => (error instanceof Error ? error.message : String(error)).split('\n')[0];
