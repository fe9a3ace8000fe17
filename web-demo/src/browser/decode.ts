/**
 * Decoding in the browser: an image file (or a webcam frame) to an RGBA pixel buffer, upright per its EXIF
 * orientation, then, as the server does, shrunk to its working size (working-size.ts). Everything after that
 * (detection, alignment, crop, greyscale, resize, scaling) is contract/, the same modules the server and
 * training use.
 */
import { ImageDecodeError, readImageHeader } from '../../../contract/image-header.ts';
import { imageSizeProblem } from '../../../contract/limits.ts';
import type { PixelBuffer } from '../../../contract/preprocess.ts';
import { toWorkingSize, workingSize, type WorkingPhoto } from './working-size.ts';

/** The file is not an image this browser can decode; the message is meant for the page. */
export class NotAnImageError extends Error {
  override name = 'NotAnImageError';
}

/** The image is smaller or larger than the server accepts; `code` is the server's error code for it. */
export class ImageSizeError extends Error {
  override name = 'ImageSizeError';
  constructor(
    readonly code: 'image_too_small' | 'image_too_large',
    message: string,
  ) {
    super(message);
  }
}

function describeFile(blob: Blob): string {
  const name = blob instanceof File && blob.name !== '' ? `"${blob.name}"` : 'This file';
  const type = blob.type === '' ? 'of unknown type' : `of type ${blob.type}`;
  return `${name} (${type}, ${blob.size.toLocaleString('en')} bytes)`;
}

const notAnImage = (blob: Blob): NotAnImageError =>
  new NotAnImageError(`${describeFile(blob)} is not an image this browser can read. Choose a photo of a face (JPEG, PNG, WebP, GIF or BMP).`);

/** Refuses the sizes the server refuses by default, in the server's words (`imageSizeProblem`, which it uses too). */
function checkImageSize(blob: Blob, width: number, height: number): void {
  const problem = imageSizeProblem(width, height);
  if (problem !== undefined) throw new ImageSizeError(problem.code, `${describeFile(blob)} ${problem.predicate}.`);
}

/**
 * An image's size from its header, read by the server's own parser (no decoding, well under a millisecond); for
 * a format it does not read (AVIF, SVG, ...), by an <img>.
 */
async function headerSize(blob: Blob): Promise<{ width: number; height: number }> {
  try {
    return readImageHeader(new Uint8Array(await blob.arrayBuffer()));
  } catch (error) {
    // A format the server does not read: the browser's own reading decides. A header the server finds broken is
    // refused, as the server refuses it (a browser would show what it could of a truncated file).
    if (error instanceof ImageDecodeError && error.reason === 'unsupported-format') return imageSize(blob);
    throw notAnImage(blob);
  }
}

/**
 * An image's size, read by an <img> that is never drawn: the browser reads the size from the header and decodes
 * the pixels only to draw them, so a 16000x16000 image costs nothing here.
 */
async function imageSize(blob: Blob): Promise<{ width: number; height: number }> {
  const url = URL.createObjectURL(blob);
  const image = new Image();
  try {
    await new Promise<void>((resolve, reject) => {
      image.onload = () => resolve();
      image.onerror = () => reject(notAnImage(blob));
      image.src = url;
    });
    // An SVG without a size of its own: nothing the models (or createImageBitmap) can use.
    if (image.naturalWidth === 0 || image.naturalHeight === 0) throw notAnImage(blob);
    return { width: image.naturalWidth, height: image.naturalHeight };
  } finally {
    image.onload = image.onerror = null;
    URL.revokeObjectURL(url);
  }
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
 * Decodes an image file. Its size is checked against the server's limits first, from the header, so an image
 * the server would refuse is refused here before it is decoded. The stored pixels are used as they are (no
 * colour-profile conversion), as the server's decoder does, and EXIF orientation is applied ('from-image'), as
 * the server's decoder does.
 */
export async function decodeImageBlob(blob: Blob): Promise<PixelBuffer> {
  if (blob.size === 0) throw new NotAnImageError(`${describeFile(blob)} is empty. Choose a photo of a face (JPEG, PNG, WebP, GIF or BMP).`);
  const size = await headerSize(blob);
  checkImageSize(blob, size.width, size.height);
  let bitmap: ImageBitmap;
  try {
    bitmap = await createImageBitmap(blob, { imageOrientation: 'from-image', colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch {
    throw notAnImage(blob);
  }
  try {
    // The decoded size, in case it differs from what the <img> read: still nothing over the limits is read out.
    checkImageSize(blob, bitmap.width, bitmap.height);
    return readPixels(bitmap, 0, 0, bitmap.width, bitmap.height);
  } finally {
    bitmap.close();
  }
}

/** Decodes an image file and shrinks it to the working size the server finds faces at (`decodeImageBlob`, then `toWorkingSize`). */
export async function decodePhoto(blob: Blob): Promise<WorkingPhoto> {
  return toWorkingSize(await decodeImageBlob(blob));
}

let frameCanvas: OffscreenCanvas | undefined;

/**
 * A video frame at most `maxSide` a side, scaled by the canvas (a live view needs speed, not the server's
 * resampling), with `scale` back to the video's pixels. One canvas is reused from frame to frame.
 */
export function readFrame(video: HTMLVideoElement, maxSide: number): WorkingPhoto {
  const { videoWidth: width, videoHeight: height } = video;
  const size = workingSize(width, height, maxSide);
  if (frameCanvas === undefined || frameCanvas.width !== size.width || frameCanvas.height !== size.height) frameCanvas = new OffscreenCanvas(size.width, size.height);
  const context = frameCanvas.getContext('2d', { willReadFrequently: true });
  if (context === null) throw new Error('This browser cannot create a 2D canvas to read the webcam');
  context.drawImage(video, 0, 0, width, height, 0, 0, size.width, size.height);
  const { data } = context.getImageData(0, 0, size.width, size.height, { colorSpace: 'srgb' });
  return { pixels: { width: size.width, height: size.height, channels: 4, data }, width, height, scale: width / size.width };
}
