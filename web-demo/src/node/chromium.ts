/**
 * Debian's Chromium, driven by playwright-core for the web demo's tests and benchmark. Never a downloaded
 * browser build: when /usr/bin/chromium is missing, `chromiumMissing()` says so and what to install.
 */
import { existsSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { chromium, type Browser, type Page, type Request } from 'playwright-core';

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** Quiet, offline, reproducible: no GPU, no background traffic, no first-run UI. */
export const CHROMIUM_ARGS: readonly string[] = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-default-apps',
  '--disable-extensions',
  '--no-first-run',
  '--no-default-browser-check',
  '--metrics-recording-only',
  '--mute-audio',
];

/** Why the browser tests cannot run here, or undefined when Chromium is installed. */
export function chromiumMissing(): string | undefined {
  return existsSync(CHROMIUM_PATH)
    ? undefined
    : `${CHROMIUM_PATH} is missing: install Debian's chromium package (apt-get install chromium) to run the browser tests`;
}

export async function launchChromium(extraArgs: readonly string[] = []): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: [...CHROMIUM_ARGS, ...extraArgs] });
}

export interface RecordedRequest {
  url: string;
  method: string;
  resourceType: string;
  status?: number;
  /** bytes received for it: headers and (encoded) body, once it finished */
  transferred?: number;
  failure?: string;
}

/** Records every request the page (and its workers) makes, with the bytes each transferred. */
export function recordRequests(page: Page): { requests: RecordedRequest[]; settled(): Promise<void> } {
  const requests: RecordedRequest[] = [];
  const pending: Promise<void>[] = [];
  const entries = new Map<Request, RecordedRequest>();
  page.on('request', (request) => {
    const entry: RecordedRequest = { url: request.url(), method: request.method(), resourceType: request.resourceType() };
    entries.set(request, entry);
    requests.push(entry);
  });
  page.on('requestfinished', (request) => {
    const entry = entries.get(request);
    if (entry === undefined) return;
    pending.push(
      (async () => {
        const response = await request.response();
        entry.status = response?.status();
        const sizes = await request.sizes();
        entry.transferred = sizes.responseHeadersSize + sizes.responseBodySize;
      })().catch(() => {}),
    );
  });
  page.on('requestfailed', (request) => {
    const entry = entries.get(request);
    if (entry !== undefined) entry.failure = request.failure()?.errorText ?? 'failed';
  });
  return { requests, settled: async () => void (await Promise.all(pending)) };
}

/** A webcam that needs no camera or permission prompt: Chromium's test pattern, or the frames of `file` (Y4M, looped). */
export function fakeCameraArgs(file?: string): string[] {
  return ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', ...(file === undefined ? [] : [`--use-file-for-fake-video-capture=${file}`])];
}

/** One RGB frame, 3 bytes a pixel, row-major; width and height even. */
export interface RgbFrame {
  width: number;
  height: number;
  data: Uint8Array;
}

/**
 * Writes `frames` as a Y4M video (4:2:0, full-range BT.601, as JPEG's YCbCr), the format Chromium's
 * `--use-file-for-fake-video-capture` plays in a loop as the webcam.
 */
export async function writeFakeCamera(path: string, frames: Iterable<RgbFrame>, fps: number): Promise<void> {
  const file = await open(path, 'w');
  try {
    let header: string | undefined;
    for (const { width, height, data } of frames) {
      if (width % 2 !== 0 || height % 2 !== 0) throw new RangeError(`Y4M 4:2:0 frames need even sides; got ${width}x${height}`);
      const expected = `YUV4MPEG2 W${width} H${height} F${fps}:1 Ip A1:1 C420jpeg\n`;
      if (header === undefined) await file.write((header = expected));
      else if (header !== expected) throw new RangeError('Every frame of a Y4M video has the same size');
      const luma = Buffer.alloc(width * height);
      const cb = Buffer.alloc((width / 2) * (height / 2));
      const cr = Buffer.alloc(cb.length);
      for (let i = 0; i < width * height; i++) {
        const [r, g, b] = [data[i * 3], data[i * 3 + 1], data[i * 3 + 2]];
        luma[i] = Math.round(0.299 * r + 0.587 * g + 0.114 * b);
      }
      for (let y = 0; y < height; y += 2) {
        for (let x = 0; x < width; x += 2) {
          let [r, g, b] = [0, 0, 0];
          for (const at of [y * width + x, y * width + x + 1, (y + 1) * width + x, (y + 1) * width + x + 1]) {
            r += data[at * 3] / 4;
            g += data[at * 3 + 1] / 4;
            b += data[at * 3 + 2] / 4;
          }
          const c = (y / 2) * (width / 2) + x / 2;
          cb[c] = Math.max(0, Math.min(255, Math.round(128 - 0.168736 * r - 0.331264 * g + 0.5 * b)));
          cr[c] = Math.max(0, Math.min(255, Math.round(128 + 0.5 * r - 0.418688 * g - 0.081312 * b)));
        }
      }
      await file.write(Buffer.concat([Buffer.from('FRAME\n'), luma, cb, cr]));
    }
    if (header === undefined) throw new RangeError('A Y4M video needs at least one frame');
  } finally {
    await file.close();
  }
}
