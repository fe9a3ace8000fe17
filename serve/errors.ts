/**
 * Errors a caller can act on, one class each; they become their HTTP status and {"error":{"code","message"}}.
 * Anything else is a 500 whose details go to the log, never to the caller.
 */

export abstract class HttpError extends Error {
  abstract readonly status: number;
  abstract readonly code: string;
  /** Seconds for a Retry-After header, where waiting helps. */
  readonly retryAfterSeconds?: number;
}

export class EmptyBodyError extends HttpError {
  readonly status = 400;
  readonly code = 'empty_body';
  constructor(message = 'The request body is empty; send the image bytes as the body, or as a multipart/form-data file field named "image"') {
    super(message);
  }
}

export class UnsupportedMediaTypeError extends HttpError {
  readonly status = 415;
  readonly code = 'unsupported_media_type';
}

export class UnsupportedImageFormatError extends HttpError {
  readonly status = 415;
  readonly code = 'unsupported_image_format';
}

export class CorruptImageError extends HttpError {
  readonly status = 422;
  readonly code = 'corrupt_image';
}

export class ImageTooSmallError extends HttpError {
  readonly status = 422;
  readonly code = 'image_too_small';
}

export class TooManyPixelsError extends HttpError {
  readonly status = 413;
  readonly code = 'image_too_large';
}

export class PayloadTooLargeError extends HttpError {
  readonly status = 413;
  readonly code = 'payload_too_large';
}

export class TooManyImagesError extends HttpError {
  readonly status = 413;
  readonly code = 'too_many_images';
}

export class MissingImageFieldError extends HttpError {
  readonly status = 400;
  readonly code = 'missing_image_field';
}

export class MalformedMultipartError extends HttpError {
  readonly status = 400;
  readonly code = 'malformed_multipart';
}

export class IncompleteUploadError extends HttpError {
  readonly status = 400;
  readonly code = 'incomplete_upload';
}

export class UploadTimeoutError extends HttpError {
  readonly status = 408;
  readonly code = 'upload_timeout';
}

export class MalformedUrlError extends HttpError {
  readonly status = 400;
  readonly code = 'malformed_url';
}

export class InvalidParameterError extends HttpError {
  readonly status = 400;
  readonly code = 'invalid_parameter';
}

/** Face detection asked of a server whose models folder lists no detector. */
export class DetectionUnavailableError extends HttpError {
  readonly status = 400;
  readonly code = 'detection_unavailable';
  constructor(message = 'This server has no face detector (its models folder lists none); send detect=none to take the whole image as one face') {
    super(message);
  }
}

/** The client closed the connection before its answer (nginx's 499): its work is dropped, and it is no server fault. */
export class ClientClosedError extends HttpError {
  readonly status = 499;
  readonly code = 'client_closed_request';
}

export class NotFoundError extends HttpError {
  readonly status = 404;
  readonly code = 'not_found';
}

export class MethodNotAllowedError extends HttpError {
  readonly status = 405;
  readonly code = 'method_not_allowed';
  constructor(
    message: string,
    readonly allow: readonly string[],
  ) {
    super(message);
  }
}

export class OverloadedError extends HttpError {
  readonly status = 503;
  readonly code = 'overloaded';
  override readonly retryAfterSeconds = 1;
}

export class RequestTimeoutError extends HttpError {
  readonly status = 503;
  readonly code = 'timeout';
  override readonly retryAfterSeconds = 1;
}

export class NotReadyError extends HttpError {
  readonly status = 503;
  readonly code = 'not_ready';
  override readonly retryAfterSeconds = 1;
}

export class ShuttingDownError extends HttpError {
  readonly status = 503;
  readonly code = 'shutting_down';
  override readonly retryAfterSeconds = 1;
}

/** Errors that decode threads report by code (an Error does not keep its class across a thread). */
const BY_CODE: Record<string, new (message: string) => HttpError> = {
  unsupported_image_format: UnsupportedImageFormatError,
  corrupt_image: CorruptImageError,
  image_too_small: ImageTooSmallError,
  image_too_large: TooManyPixelsError,
  empty_body: EmptyBodyError,
};

/** Rebuilds an error a decode thread reported; an unknown code is a server fault. */
export function errorFromCode(code: string, message: string): Error {
  const ErrorClass = BY_CODE[code];
  return ErrorClass === undefined ? new Error(`${code}: ${message}`) : new ErrorClass(message);
}

export interface ErrorBody {
  error: { code: string; message: string };
}

export const INTERNAL_ERROR: ErrorBody = {
  error: { code: 'internal_error', message: 'The server failed to handle this request; it has been logged. Try again, and report it if it persists.' },
};

/** Status and body for any error: a caller's own error as it is, anything else as an opaque 500. */
export function toErrorResponse(error: unknown): { status: number; body: ErrorBody; retryAfterSeconds?: number } {
  if (error instanceof HttpError) {
    return { status: error.status, body: { error: { code: error.code, message: error.message } }, retryAfterSeconds: error.retryAfterSeconds };
  }
  return { status: 500, body: INTERNAL_ERROR };
}
