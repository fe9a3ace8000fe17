/**
 * Under load: a full queue sheds with 503 and Retry-After instead of growing a backlog, a request over its time
 * limit gets 503 (and the decode thread stuck on it is replaced), and a short bounded loopback load succeeds.
 * Throughput figures live in `npm run bench:serve`, not here.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runLoad } from '../serve/bench/load.ts';
import { blackPng, makeImage, startTestServer } from './helpers/serve-harness.ts';

describe('serve under load', () => {
  it('sheds load with 503 and Retry-After when the queue is full, and goes on serving', async () => {
    const t = await startTestServer({ flags: ['--max-queue', '2'] });
    try {
      const bodies = await Promise.all([1, 2, 3, 4].map((seed) => makeImage(200, 200, 'image/jpeg', seed)));
      const result = await runLoad({ url: `${t.url}/v1/predict`, bodies, contentType: 'image/jpeg', concurrency: 24, durationMs: 1500, maxRequests: 2000, requestTimeoutMs: 10_000 });
      assert.ok((result.byStatus[200] ?? 0) > 0, 'some requests are answered');
      assert.ok((result.byStatus[503] ?? 0) > 0, 'the rest are shed');
      assert.ok(result.retryAfterSeen, '503s carry Retry-After');
      assert.deepEqual(Object.keys(result.byStatus).sort(), ['200', '503'], 'no timeouts, no dropped connections');
      const res = await fetch(`${t.url}/v1/predict`, { method: 'POST', body: bodies[0], headers: { 'content-type': 'image/jpeg' } });
      assert.equal(res.status, 200);
      const metrics = await (await fetch(`${t.url}/metrics`)).text();
      assert.match(metrics, /^errors_total\{code="overloaded"\} [1-9]\d*$/m);
      assert.match(metrics, /^queue_depth 0$/m);
    } finally {
      await t.close();
    }
  });

  it('answers 503 timeout when a request outlives its time limit, and replaces the decode thread stuck on it', async () => {
    const t = await startTestServer({ flags: ['--timeout-ms', '400', '--decode-threads', '1', '--max-pixels', '300000000', '--max-body-bytes', '100000000'] });
    try {
      // 256 megapixels, Adam7-interlaced: a small file, but libvips must hold and reassemble every pixel (no
      // shrink-on-load, no streaming), seconds of work on any machine.
      const huge = blackPng(16_000, 16_000, { interlaced: true });
      const res = await fetch(`${t.url}/v1/predict`, { method: 'POST', body: huge, headers: { 'content-type': 'image/png' } });
      assert.equal(res.status, 503);
      assert.equal(res.headers.get('retry-after'), '1');
      assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'timeout');
      // The one decode thread was stuck on the huge image: it is replaced, and requests succeed again.
      const small = await makeImage(200, 200, 'image/jpeg', 6);
      let status = 0;
      for (const deadline = Date.now() + 10_000; status !== 200 && Date.now() < deadline; ) {
        const next = await fetch(`${t.url}/v1/predict`, { method: 'POST', body: small, headers: { 'content-type': 'image/jpeg' } });
        status = next.status;
        await next.arrayBuffer();
      }
      assert.equal(status, 200);
      // sharp decodes off the thread's own loop, so a small image can be answered while the huge one is still being
      // decoded; the watchdog replaces the thread once that image has been in it past the time limit.
      let metrics = '';
      for (const deadline = Date.now() + 10_000; !/^decode_threads_replaced_total [1-9]\d*$/m.test(metrics) && Date.now() < deadline; ) {
        metrics = await (await fetch(`${t.url}/metrics`)).text();
        if (!/^decode_threads_replaced_total [1-9]\d*$/m.test(metrics)) await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.match(metrics, /^decode_threads_replaced_total [1-9]\d*$/m);
      assert.ok(t.logs.some((line) => line.includes('replaced it')));
    } finally {
      await t.close();
    }
  });

  it('serves a short bounded loopback load (concurrency 8) with no error', async () => {
    const t = await startTestServer();
    try {
      const bodies = await Promise.all([1, 2, 3, 4, 5, 6, 7, 8].map((seed) => makeImage(200, 200, 'image/jpeg', seed)));
      const result = await runLoad({ url: `${t.url}/v1/predict`, bodies, contentType: 'image/jpeg', concurrency: 8, durationMs: 1500, maxRequests: 400 });
      assert.ok(result.requests > 0);
      assert.deepEqual(Object.keys(result.byStatus), ['200']);
      assert.ok(result.okP99 > 0 && Number.isFinite(result.okP99));
      // The synthetic images hold no face: each request is one detector search.
      const metrics = await (await fetch(`${t.url}/metrics`)).text();
      const searches = Number(/^inference_seconds_count\{model="detector"\} (\d+)$/m.exec(metrics)?.[1]);
      assert.equal(searches, result.requests, 'every image went through the detector');
      // With detect=none (the query string reaches the server) every image is one face in a classifier batch.
      const whole = await runLoad({ url: `${t.url}/v1/predict?detect=none`, bodies, contentType: 'image/jpeg', concurrency: 8, durationMs: 1000, maxRequests: 200 });
      assert.deepEqual(Object.keys(whole.byStatus), ['200']);
      const after = await (await fetch(`${t.url}/metrics`)).text();
      assert.equal(Number(/^inference_seconds_count\{model="detector"\} (\d+)$/m.exec(after)?.[1]), searches, 'detect=none runs no detector');
      assert.ok(/^inference_batch_size_count [1-9]\d*$/m.test(after), 'the faces ran in classifier batches');
    } finally {
      await t.close();
    }
  });

  it('refuses to send load anywhere but 127.0.0.1', async () => {
    await assert.rejects(runLoad({ url: 'http://example.com/v1/predict', bodies: [new Uint8Array(1)], contentType: 'image/jpeg', concurrency: 1, durationMs: 10, maxRequests: 1 }), /only targets 127\.0\.0\.1/);
  });
});
