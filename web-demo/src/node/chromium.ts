/**
 * Debian's Chromium, driven by playwright-core for the web demo's tests and benchmark. Never a downloaded
 * browser build: when /usr/bin/chromium is missing, `chromiumMissing()` says so and what to install.
 */
import { existsSync } from 'node:fs';
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
