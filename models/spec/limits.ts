/**
 * The image sizes every runtime accepts: the server refuses others with 422 image_too_small and 413
 * image_too_large (its --min-image-side and --max-pixels default to these), and the web demo refuses them
 * with the same words before it draws an image at full size. One place, so the two cannot drift apart.
 */

/** Smallest width or height, in pixels: below it a face is too small to say anything about. */
export const DEFAULT_MIN_IMAGE_SIDE = 32;

/** Largest width x height: decoding more costs seconds and gigabytes of memory for a model input of 64x64. */
export const DEFAULT_MAX_PIXELS = 25_000_000;
