/**
 * The server's pure parts: the config (flags, environment, validation), the micro-batcher and the metrics (with the
 * predictors' queue gauges, on a stand-in decode pool).
 */
import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { describe, it } from 'node:test';
import { MicroBatcher } from '../serve/batcher.ts';
import { ConfigError, helpText, loadConfig, OPTIONS } from '../serve/config.ts';
import { REPO_ROOT } from '../node-shared/paths.ts';
import type { DecodePool } from '../serve/decode-pool.ts';
import { formatPrometheus, mergeSnapshots, ServeMetrics } from '../serve/metrics.ts';
import { Predictor } from '../serve/predictor.ts';

describe('serve config', () => {
  it('needs no configuration: documented defaults, models/ and web-demo/dist of the repository, on loopback only', () => {
    const config = loadConfig([], {});
    assert.equal(config.port, 3000);
    assert.equal(config.host, '127.0.0.1', 'the README promises 127.0.0.1:3000; every interface is asked for with HOST=0.0.0.0');
    assert.equal(config.device, 'auto');
    assert.equal(config.workers, 1);
    assert.equal(config.modelsDir, resolve(REPO_ROOT, 'models'));
    assert.equal(config.webDemoDir, resolve(REPO_ROOT, 'web-demo', 'dist'));
    assert.equal(config.decodeThreads, availableParallelism());
  });

  it('reads PORT, HOST and SERVE_* from the environment, and flags win over them', () => {
    const env = { PORT: '8080', HOST: '0.0.0.0', SERVE_DEVICE: 'cpu', SERVE_MAX_QUEUE: '7', UNRELATED: 'x' };
    const fromEnv = loadConfig([], env);
    assert.deepEqual([fromEnv.port, fromEnv.host, fromEnv.device, fromEnv.maxQueue], [8080, '0.0.0.0', 'cpu', 7]);
    const flagged = loadConfig(['--port', '9090', '--device=cuda', '--max-queue', '9', '--host', '::1'], env);
    assert.deepEqual([flagged.port, flagged.device, flagged.maxQueue, flagged.host], [9090, 'cuda', 9, '::1']);
  });

  it('divides the cores among worker processes for the decode threads', () => {
    assert.equal(loadConfig(['--workers', String(availableParallelism())], {}).decodeThreads, 1);
    assert.equal(loadConfig(['--decode-threads', '3'], {}).decodeThreads, 3);
  });

  it('names the key, and the allowed values, of every wrong option', () => {
    assert.throws(() => loadConfig(['--device', 'tpu'], {}), { name: 'ConfigError', message: 'Unsupported --device "tpu"; expected one of: auto, cpu, cuda' });
    assert.throws(() => loadConfig([], { SERVE_DEVICE: 'tpu' }), /Unsupported SERVE_DEVICE "tpu"; expected one of: auto, cpu, cuda/);
    assert.throws(() => loadConfig(['--port', 'eighty'], {}), /--port must be a whole number from 0 to 65535; got "eighty"/);
    assert.throws(() => loadConfig([], { PORT: '70000' }), /PORT must be a whole number from 0 to 65535/);
    assert.throws(() => loadConfig(['--workers', '0'], {}), /--workers must be a whole number from 1/);
    assert.throws(() => loadConfig(['--max-queue'], {}), /Option --max-queue needs a value/);
  });

  it('keeps a batch no larger than the queue: a smaller --max-queue lowers the default, an explicit larger batch is refused', () => {
    assert.equal(loadConfig(['--max-queue', '8'], {}).maxBatchImages, 8);
    assert.equal(loadConfig(['--max-queue', '8', '--max-batch-images', '4'], {}).maxBatchImages, 4);
    assert.equal(loadConfig([], {}).maxBatchImages, OPTIONS.maxBatchImages.default);
    assert.throws(() => loadConfig(['--max-queue', '8', '--max-batch-images', '16'], {}), (e) => e instanceof ConfigError && /--max-batch-images \(16\) must not exceed --max-queue \(8\)/.test(e.message));
    assert.throws(() => loadConfig(['--max-queue', '8'], { SERVE_MAX_BATCH_IMAGES: '9' }), /SERVE_MAX_BATCH_IMAGES \(9\) must not exceed --max-queue \(8\)/);
    assert.throws(() => loadConfig(['--max-batch-images', '64'], {}), /--max-batch-images \(64\) must not exceed --max-queue \(32\)/);
  });

  it('refuses unknown flags, stray arguments and unknown SERVE_* variables by name', () => {
    assert.throws(() => loadConfig(['--prot', '80'], {}), (error: Error) => error instanceof ConfigError && /Unknown option --prot; expected one of: --port/.test(error.message));
    assert.throws(() => loadConfig(['models'], {}), /Unknown argument "models"/);
    assert.throws(() => loadConfig([], { SERVE_DEVCE: 'cpu' }), /Unknown environment variable SERVE_DEVCE; expected one of: SERVE_MODELS_DIR/);
  });

  it('documents every option in --help with its flag, variable and default', () => {
    const text = helpText();
    for (const option of Object.values(OPTIONS)) {
      assert.ok(text.includes(option.flag) && text.includes(option.env), option.flag);
    }
    assert.match(text, /--device .*\(auto\|cpu\|cuda\); default "auto"/);
    assert.match(text, /--host +HOST +address to listen on: 127\.0\.0\.1 = this machine only; 0\.0\.0\.0 .* every interface.*; default "127\.0\.0\.1"/);
  });
});

describe('micro-batcher', () => {
  it('puts concurrent items into bounded batches and answers each in order', async () => {
    const batches: number[][] = [];
    const batcher = new MicroBatcher<number, string>({
      maxBatch: 4,
      maxWaitMs: 5,
      runBatch: async (items) => {
        batches.push(items);
        await new Promise((r) => setTimeout(r, 5));
        return items.map((n) => `#${n}`);
      },
    });
    const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => batcher.submit(i)));
    assert.deepEqual(answers, Array.from({ length: 10 }, (_, i) => `#${i}`));
    assert.deepEqual(batches.flat(), Array.from({ length: 10 }, (_, i) => i));
    assert.ok(batches.every((batch) => batch.length <= 4));
    assert.ok(batches.length <= 4, `10 items in ${batches.length} runs`);
  });

  it('runs a lone item after at most the wait, and rejects every item of a failed batch', async () => {
    const batcher = new MicroBatcher<number, number>({
      maxBatch: 8,
      maxWaitMs: 1,
      runBatch: async (items) => {
        if (items.includes(13)) throw new Error('unlucky');
        return items;
      },
    });
    assert.equal(await batcher.submit(1), 1);
    const results = await Promise.allSettled([batcher.submit(12), batcher.submit(13)]);
    assert.deepEqual(results.map((r) => r.status), ['rejected', 'rejected']);
  });
});

describe('metrics', () => {
  it('formats counters, gauges and histograms as Prometheus text', () => {
    const metrics = new ServeMetrics();
    metrics.requests.inc({ route: '/v1/predict', method: 'POST', status: '200' });
    metrics.requests.inc({ route: '/v1/predict', method: 'POST', status: '200' });
    metrics.latency.observe(0.004, { route: '/v1/predict' });
    metrics.trackQueue({ depth: 3, backlog: 0 });
    const text = formatPrometheus(metrics.snapshot());
    assert.match(text, /^# TYPE http_requests_total counter$/m);
    assert.match(text, /^http_requests_total\{method="POST",route="\/v1\/predict",status="200"\} 2$/m);
    assert.match(text, /^http_request_duration_seconds_bucket\{route="\/v1\/predict",le="0.0025"\} 0$/m);
    assert.match(text, /^http_request_duration_seconds_bucket\{route="\/v1\/predict",le="0.005"\} 1$/m);
    assert.match(text, /^http_request_duration_seconds_bucket\{route="\/v1\/predict",le="\+Inf"\} 1$/m);
    assert.match(text, /^http_request_duration_seconds_count\{route="\/v1\/predict"\} 1$/m);
    assert.match(text, /^queue_depth 3$/m);
  });

  it('counts every live predictor in queue_depth and decode_backlog: a reload’s old one draining and the new one admitting', () => {
    const metrics = new ServeMetrics();
    const pool = (backlog: number) => ({ backlog, detects: false }) as unknown as DecodePool;
    const options = { maxQueue: 8, maxBatch: 4, batchWaitMs: 1 };
    const draining = new Predictor([], pool(1), metrics, options);
    const admitting = new Predictor([], pool(2), metrics, options);
    draining.admit(3);
    admitting.admit(2);
    draining.release(1);
    const text = formatPrometheus(metrics.snapshot());
    assert.match(text, /^queue_depth 4$/m, 'two of the old models’ images and two of the new ones’');
    assert.match(text, /^decode_backlog 3$/m);
    draining.close();
    const after = formatPrometheus(metrics.snapshot());
    assert.match(after, /^queue_depth 2$/m, 'a predictor whose models are released no longer counts');
    assert.match(after, /^decode_backlog 2$/m);
  });

  it('sums the metrics of several processes into one scrape', () => {
    const [a, b] = [new ServeMetrics(), new ServeMetrics()];
    a.errors.inc({ code: 'overloaded' });
    b.errors.inc({ code: 'overloaded' }, 2);
    b.errors.inc({ code: 'corrupt_image' });
    a.latency.observe(0.2, { route: '/healthz' });
    b.latency.observe(0.3, { route: '/healthz' });
    const text = formatPrometheus(mergeSnapshots([a.snapshot(), b.snapshot()]));
    assert.match(text, /^errors_total\{code="overloaded"\} 3$/m);
    assert.match(text, /^errors_total\{code="corrupt_image"\} 1$/m);
    assert.match(text, /^http_request_duration_seconds_count\{route="\/healthz"\} 2$/m);
    assert.match(text, /^http_request_duration_seconds_sum\{route="\/healthz"\} 0\.5$/m);
  });
});
