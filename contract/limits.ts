/**
 * The image sizes every runtime accepts: the server refuses others with 422 image_too_small and 413
 * image_too_large (its --min-image-side and --max-pixels default to these), and the web demo refuses them
 * with the same words before it draws an image at full size. One place, so the two cannot drift apart.
 */

/** Smallest width or height, in pixels: below it a face is too small to say anything about. */
export const DEFAULT_MIN_IMAGE_SIDE = 32;

/** Largest width x height: decoding more costs seconds and gigabytes of memory for a model input of 64x64. */
export const DEFAULT_MAX_PIXELS = 25_000_000;

export interface ImageSizeLimits {
  maxPixels: number;
  minImageSide: number;
}

/** Why an image of `width` x `height` is refused, as the server's error code and a predicate ("is 2x2; ..."). */
export interface ImageSizeProblem {
  code: 'image_too_large' | 'image_too_small';
  /** completes a sentence whose subject names the image, e.g. `The png image ${predicate}` */
  predicate: string;
}

/** The server's and the page's size rule, in one wording: undefined where the image is accepted. */
export function imageSizeProblem(width: number, height: number, limits: ImageSizeLimits = { maxPixels: DEFAULT_MAX_PIXELS, minImageSide: DEFAULT_MIN_IMAGE_SIDE }): ImageSizeProblem | undefined {
  if (width * height > limits.maxPixels) {
    return { code: 'image_too_large', predicate: `is ${width}x${height} = ${width * height} pixels; the limit is ${limits.maxPixels}. Resize it and try again` };
  }
  if (Math.min(width, height) < limits.minImageSide) {
    return { code: 'image_too_small', predicate: `is ${width}x${height}; both sides must be at least ${limits.minImageSide} pixels` };
  }
  return undefined;
}
