/** Assertions on the errors `decodeImage` and `readImageHeader` throw, shared by the decoding tests. */
import assert from 'node:assert/strict';
import { ImageDecodeError } from '../../imaging/decode.ts';

/** Asserts that `error` is an ImageDecodeError for `reason` whose message matches `pattern`; true, for assert.throws. */
export function assertDecodeError(error: unknown, reason: ImageDecodeError['reason'], pattern: RegExp): true {
  assert.ok(error instanceof ImageDecodeError, `expected an ImageDecodeError, got ${String(error)}`);
  assert.equal(error.reason, reason);
  assert.match(error.message, pattern);
  return true;
}
