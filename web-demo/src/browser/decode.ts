/**
 * Decoding in the browser: an image file (or a webcam frame) to an RGBA pixel buffer, upright per its EXIF
 * orientation. Everything after decoding (crop, greyscale, resize, scaling) is models/spec/preprocess.ts,
 * the same module the server and training use.
 */
import type { PixelBuffer } from '../../../models/spec/preprocess.ts';

/** The file is not an image this browser can decode; the message is meant for the page. */
export class NotAnImageError extends Error {
  override name = 'NotAnImageError';
}

function describeFile(blob: Blob): string {
  const name = blob instanceof File && blob.name !== '' ? `"${blob.name}"` : 'This file';
  const type = blob.type === '' ? 'of unknown type' : `of type ${blob.type}`;
  return `${name} (${type}, ${blob.size.toLocaleString('en')} bytes)`;
}

/** The pixels of a drawable (an ImageBitmap or a video frame), `width` x `height` from (`left`, `top`). */
export function readPixels(source: CanvasImageSource, left: number, top: number, width: number, height: number): PixelBuffer {
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext('2d', { willReadFrequently: true });
  if (context === null) throw new Error('This browser cannot create a 2D canvas to read the image');
  context.drawImage(source, left, top, width, height, 0, 0, width, height);
  const { data } = context.getImageData(0, 0, width, height, { colorSpace: 'srgb' });
  return { width, height, channels: 4, data };
}

/**
 * Decodes an image file. The stored pixels are used as they are (no colour-profile conversion), as the
 * server's decoder does, and EXIF orientation is applied ('from-image'), as the server's decoder does.
 */
export async function decodeImageBlob(blob: Blob): Promise<PixelBuffer> {
  if (blob.size === 0) throw new NotAnImageError(`${describeFile(blob)} is empty. Choose a photo of a face (JPEG, PNG, WebP, GIF or BMP).`);
  let bitmap: ImageBitmap;
  try {
    bitmap = await createImageBitmap(blob, { imageOrientation: 'from-image', colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch {
    throw new NotAnImageError(`${describeFile(blob)} is not an image this browser can read. Choose a photo of a face (JPEG, PNG, WebP, GIF or BMP).`);
  }
  try {
    return readPixels(bitmap, 0, 0, bitmap.width, bitmap.height);
  } finally {
    bitmap.close();
  }
}
