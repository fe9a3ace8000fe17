/**
 * What the web demo's end-to-end test and benchmark stand on: the page built, a models folder (the shipped
 * models/ unless the caller gives another), the real
 * inference server (serve/) on a free port, and the origin that serves the page: the real server when it
 * serves everything the page needs, else the demo's own static server (and the reason why).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../../../serve/config.ts';
import { createLogger } from '../../../serve/log.ts';
import { startServer, type RunningServer as InferenceServer } from '../../../serve/server.ts';
import { ORT_FILES } from '../browser/runtime.ts';
import { DIST_DIR, ensureWebDemoBuilt, MODELS_DIR } from './build.ts';
import { CROSS_ORIGIN_ISOLATION_HEADERS, startStaticServer, type RunningServer as StaticServer } from './static-server.ts';

export interface Harness {
  /** the page's address (ends with /) */
  pageUrl: string;
  /** the inference server's address (no trailing /) */
  apiUrl: string;
  /** which server serves the page */
  pageServer: 'serve' | 'demo';
  /** why the real server does not serve the page, when it does not */
  serveShortfalls: string[];
  modelsDir: string;
  /** the shipped models/, or a folder the caller gave */
  modelsSource: 'shipped' | 'given';
  close(): Promise<void>;
}

/** What the real server does not yet do for the page: serve /models/, the ort files, and the isolation headers. */
export async function pageShortfalls(baseUrl: string): Promise<string[]> {
  const missing: string[] = [];
  const page = await fetch(new URL('/', baseUrl));
  for (const [name, value] of Object.entries(CROSS_ORIGIN_ISOLATION_HEADERS)) {
    if (page.headers.get(name) !== value) missing.push(`GET / does not send "${name}: ${value}"`);
  }
  if (!(page.headers.get('content-type') ?? '').startsWith('text/html')) missing.push(`GET / answers ${page.status} ${page.headers.get('content-type')}, not the page`);
  const manifest = await fetch(new URL('/models/manifest.json', baseUrl));
  if (!manifest.ok) missing.push(`GET /models/manifest.json answers ${manifest.status}`);
  const wasm = await fetch(new URL(`/ort/${ORT_FILES.wasm[2]}`, baseUrl), { method: 'HEAD' });
  if (!wasm.ok || wasm.headers.get('content-type') !== 'application/wasm') missing.push(`HEAD /ort/${ORT_FILES.wasm[2]} answers ${wasm.status} ${wasm.headers.get('content-type')}`);
  if (wasm.ok && wasm.headers.get('cross-origin-embedder-policy') === null) missing.push('the .wasm and worker scripts come without the isolation headers');
  return missing;
}

/** Starts the servers on `modelsDir` (default: the shipped models/, which are always in the repository). */
export async function startHarness(log: (line: string) => void = () => {}, modelsDir = MODELS_DIR): Promise<Harness> {
  if (!existsSync(join(modelsDir, 'manifest.json'))) {
    throw new Error(`No models in ${modelsDir} (it has no manifest.json): export them with \`npm run export -- --all\`, or give the harness a folder that holds them`);
  }
  await ensureWebDemoBuilt(log);
  let api: InferenceServer | undefined;
  let demo: StaticServer | undefined;
  const close = async (): Promise<void> => {
    await demo?.close();
    await api?.shutdown();
  };
  try {
    // An empty environment: the caller's SERVE_* variables must not change what is tested.
    const config = loadConfig(['--port', '0', '--host', '127.0.0.1', '--models', modelsDir, '--web-demo', DIST_DIR, '--device', 'cpu', '--log-level', 'warn'], {});
    api = await startServer(config, { log: createLogger('warn', '[serve] ') });
    await api.ready;
    const apiUrl = `http://127.0.0.1:${api.port}`;
    const serveShortfalls = await pageShortfalls(apiUrl);
    let pageUrl = `${apiUrl}/`;
    if (serveShortfalls.length > 0) {
      demo = await startStaticServer({ distDir: DIST_DIR, modelsDir });
      pageUrl = demo.url;
      log(`the inference server cannot serve the page yet (${serveShortfalls.join('; ')}): the page comes from the demo server at ${pageUrl}`);
    }
    return { pageUrl, apiUrl, pageServer: demo === undefined ? 'serve' : 'demo', serveShortfalls, modelsDir, modelsSource: modelsDir === MODELS_DIR ? 'shipped' : 'given', close };
  } catch (error) {
    await close();
    throw error;
  }
}
