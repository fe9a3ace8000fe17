/**
 * The decode pool on its own: a thread stuck past the time limit is replaced, and no image goes to the thread
 * being ended (it would fail with it).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DecodePool, type DecodedImage } from '../serve/decode-pool.ts';
import { RequestTimeoutError } from '../serve/errors.ts';
import { blackPng, makeImage } from './helpers/serve-harness.ts';

describe('serve: decode pool', () => {
  it('gives an image that arrives as a stuck thread is replaced to the replacement, not to the thread being ended', async () => {
    const small = await makeImage(64, 64, 'image/png', 1);
    // 400 megapixels: libvips needs about half a second to read them, past the 100 ms limit.
    const stuck = blackPng(20_000, 20_000);
    let arrived: Promise<DecodedImage> | undefined;
    let replaced = 0;
    const pool = await DecodePool.start({
      threads: 1,
      perThread: 2,
      taskTimeoutMs: 100,
      specs: [{ height: 8, width: 8, channels: 3, scaling: 'unit' }],
      maxPixels: 1_000_000_000,
      minImageSide: 1,
      // The moment of the race: the old thread has been told to end but has not exited yet.
      onReplaced: () => {
        replaced++;
        arrived = pool.decode(small, false);
      },
    });
    try {
      await pool.ready();
      await assert.rejects(pool.decode(stuck, false), RequestTimeoutError);
      assert.equal(replaced, 1);
      const image = await (arrived as Promise<DecodedImage>);
      assert.ok(image.prepared.kind === "whole");
      assert.deepEqual([image.width, image.height, image.prepared.inputs[0].length], [64, 64, 8 * 8 * 3]);
    } finally {
      await pool.close();
    }
  });
});
