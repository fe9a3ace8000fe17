/**
 * `npm run bench:web`: in headless Chromium (Debian's), the bytes the page transfers from its first request to
 * the end of its first prediction (empty cache), then the median in-browser time of the three models over
 * `--runs` predictions (timingsMs.inference of window.demo.predict: every model's run, no decoding).
 *
 *   npm run bench:web                      page from the inference server if it can serve it, else the demo server
 *   npm run bench:web -- --url http://localhost:3000/   a page that is already being served
 *   npm run bench:web -- --runs 200 --threads 2
 */
import type { DemoInfo } from '../browser/main.ts';
import type { Prediction } from '../browser/models.ts';
import { reportUsageError } from '../../../node-shared/cli-args.ts';
import { chromiumMissing, launchChromium, recordRequests } from './chromium.ts';
import { faceImages } from './face-images.ts';
import { startHarness, type Harness } from './harness.ts';

interface BenchConfig {
  runs: number;
  /** a page already served somewhere; default: start the harness */
  url?: string;
  /** page option `threads` (0 = onnxruntime's choice) */
  threads: number;
}

function parseArgs(argv: readonly string[]): BenchConfig {
  const config: BenchConfig = { runs: 50, threads: 0 };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (value === undefined) throw new Error(`Option ${flag} needs a value`);
    i++;
    if (flag === '--runs' || flag === '--threads') {
      const n = Number(value);
      if (!Number.isInteger(n) || n < (flag === '--runs' ? 1 : 0)) throw new Error(`${flag} must be a whole number${flag === '--runs' ? ' of at least 1' : ''}; got "${value}"`);
      config[flag === '--runs' ? 'runs' : 'threads'] = n;
    } else if (flag === '--url') {
      config.url = new URL(value).href;
    } else {
      throw new Error(`Unknown argument "${flag}"; expected one of: --runs, --url, --threads`);
    }
  }
  return config;
}

const quantile = (values: readonly number[], q: number): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
};

const USAGE = 'Usage: npm run bench:web -- [--runs 50] [--threads 0] [--url URL]\n';

async function main(): Promise<void> {
  if (process.argv.includes('--help') || process.argv.includes('-h')) {
    process.stdout.write(USAGE);
    return;
  }
  let config: BenchConfig;
  try {
    config = parseArgs(process.argv.slice(2));
  } catch (error) {
    reportUsageError((error as Error).message, USAGE);
    process.exit(2);
  }
  const missing = chromiumMissing();
  if (missing !== undefined) {
    process.stderr.write(`${missing}\n`);
    process.exit(1);
  }
  let harness: Harness | undefined;
  if (config.url === undefined) harness = await startHarness((line) => console.log(line));
  const pageUrl = new URL(config.threads > 0 ? `?threads=${config.threads}` : '', config.url ?? harness?.pageUrl).href;
  const { faces, source } = await faceImages(10);
  const browser = await launchChromium();
  try {
    // A fresh context: an empty cache, as a first visit.
    const context = await browser.newContext();
    const page = await context.newPage();
    const recorder = recordRequests(page);
    const started = performance.now();
    await page.goto(pageUrl);
    const info: DemoInfo = await page.evaluate(() => window.demo.ready);
    const readyMs = performance.now() - started;
    const predict = (index: number): Promise<Prediction> =>
      page.evaluate(
        ({ base64, type }) => window.demo.predict(new Blob([Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))], { type })),
        { base64: Buffer.from(faces[index % faces.length].bytes).toString('base64'), type: faces[index % faces.length].type },
      );
    await predict(0);
    const firstPredictionMs = performance.now() - started;
    await recorder.settled();
    const fetched = recorder.requests.filter((r) => !r.url.startsWith('blob:') && !r.url.startsWith('data:'));
    const transferred = fetched.reduce((sum, r) => sum + (r.transferred ?? 0), 0);

    const inference: number[] = [];
    const decode: number[] = [];
    const total: number[] = [];
    for (let i = 0; i < config.runs; i++) {
      const { timingsMs } = await predict(i + 1);
      inference.push(timingsMs.inference);
      decode.push(timingsMs.decode);
      total.push(timingsMs.total);
    }

    const ms = (value: number): string => `${value.toFixed(2)} ms`;
    console.log('');
    console.log(`page: ${pageUrl} (${harness === undefined ? 'given' : `from the ${harness.pageServer === 'serve' ? 'inference' : 'demo'} server; ${harness.modelsSource} models`})`);
    console.log(`browser: ${browser.version()} headless; onnxruntime-web ${info.version}, ${info.backend}, ${info.threads} thread(s), cross-origin isolated: ${info.crossOriginIsolated}`);
    console.log(`images: ${faces.length} ${source} faces, JPEG as stored`);
    console.log('');
    console.log(`bytes transferred before the first prediction: ${transferred.toLocaleString('en')} (${(transferred / 1024 / 1024).toFixed(2)} MiB) in ${fetched.length} requests`);
    for (const r of [...fetched].sort((a, b) => (b.transferred ?? 0) - (a.transferred ?? 0))) {
      console.log(`  ${String(r.transferred ?? '?').padStart(10)}  ${new URL(r.url).pathname}`);
    }
    console.log(`time to models ready: ${Math.round(readyMs)} ms; to the first prediction: ${Math.round(firstPredictionMs)} ms`);
    console.log('');
    console.log(`over ${config.runs} predictions:     median     p90       min`);
    for (const [name, values] of [['inference (3 models)', inference], ['decode + preprocess', decode], ['total', total]] as const) {
      console.log(`  ${name.padEnd(22)} ${ms(quantile(values, 0.5)).padStart(9)} ${ms(quantile(values, 0.9)).padStart(9)} ${ms(Math.min(...values)).padStart(9)}`);
    }
    console.log('');
    console.log(
      JSON.stringify({
        runs: config.runs,
        threads: info.threads,
        medianInferenceMs: quantile(inference, 0.5),
        medianDecodeMs: quantile(decode, 0.5),
        medianTotalMs: quantile(total, 0.5),
        bytesBeforeFirstPrediction: transferred,
        requestsBeforeFirstPrediction: fetched.length,
      }),
    );
  } finally {
    await browser.close();
    await harness?.close();
  }
}

await main();
