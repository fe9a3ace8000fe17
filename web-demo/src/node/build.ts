/**
 * `npm run build:web`: the web demo as a static folder, web-demo/dist.
 *
 *   app.js, app.css       the page, bundled by esbuild (with contract, the shared preprocessing and metadata reader)
 *   index.html, favicon.svg
 *   ort/                  onnxruntime-web: only the ort module and WebAssembly binary of each backend (runtime.ts ORT_FILES)
 *   *.br, *.gz            precompressed copies, for servers that negotiate Content-Encoding
 *   _headers              the response headers the page needs, in the format Netlify and Cloudflare Pages read
 *   models/               only with --with-models: a copy of models/ for hosts that serve nothing else
 *
 * `--if-stale` builds only when an input changed since the last build (what `npm start` and the tests use).
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { constants as zlib, createBrotliCompress, createGzip } from 'node:zlib';
import * as esbuild from 'esbuild';
import { isMain, reportUsageError } from '../../../node-shared/cli-args.ts';
import { REPO_ROOT } from '../../../node-shared/paths.ts';
import { BACKENDS, ORT_FILES } from '../browser/runtime.ts';
import { CROSS_ORIGIN_ISOLATION_HEADERS } from './static-server.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
export const WEB_DEMO_DIR = join(REPO_ROOT, 'web-demo');
export const DIST_DIR = join(WEB_DEMO_DIR, 'dist');
export const MODELS_DIR = join(REPO_ROOT, 'models');
const BROWSER_SRC = join(WEB_DEMO_DIR, 'src', 'browser');
const ORT_DIST = dirname(createRequire(import.meta.url).resolve('onnxruntime-web'));
/** Where the build records its inputs' hashes, to tell whether it is stale. A dotfile: static servers skip it. */
const BUILD_INFO = join(DIST_DIR, '.build-info.json');
/** Held while building, so that test files building at once do not write over each other; kept when dist is emptied. */
const LOCK_NAME = '.build-lock';
const LOCK_DIR = join(DIST_DIR, LOCK_NAME);
/** A lock older than this was left by a build that died; the next one takes it over. */
const STALE_LOCK_MS = 120_000;
/** Copied as they are. */
const STATIC_FILES = ['index.html', 'favicon.svg'];
const COMPRESSIBLE = /\.(html|js|mjs|css|svg|json|wasm)$/;

export interface BuildOptions {
  /** build only when an input changed since the last build */
  ifStale?: boolean;
  /** also copy models/ into dist/models, for a static host that serves nothing else */
  withModels?: boolean;
  log?: (line: string) => void;
}

export interface BuildResult {
  built: boolean;
  /** why it was (re)built, or why not */
  reason: string;
  /** every file in dist with its size, for the log */
  files: { path: string; bytes: number }[];
}

interface BuildInfo {
  /** sha256 of each input file, by path relative to the repository */
  inputs: Record<string, string>;
  /** size and mtime of each copied onnxruntime-web file, so a big binary is not hashed on every check */
  ort: Record<string, string>;
  withModels: boolean;
}

async function sha256(path: string): Promise<string> {
  const buffer = await readFile(path);
  // A plain Uint8Array view (Node's Buffer typings do not fit `update`'s parameter).
  return createHash('sha256').update(new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength)).digest('hex');
}

async function ortStamp(file: string): Promise<string> {
  const info = await stat(join(ORT_DIST, file));
  return `${info.size}:${info.mtimeMs}`;
}

/** Every file under `dir`, recursively (none when it does not exist). */
async function listFiles(dir: string): Promise<string[]> {
  if (!existsSync(dir)) return [];
  const files: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) files.push(...(await listFiles(path)));
    else if (entry.isFile()) files.push(path);
  }
  return files;
}

/** What --with-models copies: the models and their manifest, not contract. */
async function modelFiles(): Promise<string[]> {
  return (await listFiles(MODELS_DIR)).filter((file) => /\.(onnx|json)$/.test(file) && !relative(MODELS_DIR, file).startsWith('spec'));
}

/** The inputs of a build: the page's sources, what esbuild bundled last time, and this script. */
async function hashInputs(bundled: readonly string[]): Promise<Record<string, string>> {
  const paths = new Set([...(await listFiles(BROWSER_SRC)), ...bundled.map((p) => resolve(REPO_ROOT, p)), fileURLToPath(import.meta.url), join(HERE, 'static-server.ts')]);
  const inputs: Record<string, string> = {};
  for (const path of [...paths].sort()) inputs[relative(REPO_ROOT, path)] = existsSync(path) ? await sha256(path) : 'missing';
  return inputs;
}

/** Why the last build is stale, or undefined when it is current. */
async function staleness(withModels: boolean): Promise<string | undefined> {
  if (!existsSync(BUILD_INFO)) return 'no previous build';
  let previous: BuildInfo;
  try {
    previous = JSON.parse(await readFile(BUILD_INFO, 'utf8')) as BuildInfo;
  } catch {
    return 'the previous build record is unreadable';
  }
  if (previous.withModels !== withModels) return withModels ? 'models are to be included' : 'models are to be left out';
  const current = await hashInputs(Object.keys(previous.inputs));
  for (const path of new Set([...Object.keys(current), ...Object.keys(previous.inputs)])) {
    if (current[path] !== previous.inputs[path]) return `${path} changed`;
  }
  for (const file of Object.values(ORT_FILES).flat()) {
    if (previous.ort[file] !== (await ortStamp(file))) return `onnxruntime-web's ${file} changed`;
    if (!existsSync(join(DIST_DIR, 'ort', file))) return `dist/ort/${file} is missing`;
  }
  for (const file of ['app.js', 'app.css', ...STATIC_FILES]) if (!existsSync(join(DIST_DIR, file))) return `dist/${file} is missing`;
  if (withModels) {
    for (const file of await modelFiles()) {
      const copy = join(DIST_DIR, 'models', relative(MODELS_DIR, file));
      if (!existsSync(copy) || (await sha256(copy)) !== (await sha256(file))) return `models/${relative(MODELS_DIR, file)} changed`;
    }
  }
  return undefined;
}

async function compress(path: string): Promise<void> {
  const size = (await stat(path)).size;
  await Promise.all([
    pipeline(createReadStream(path), createGzip({ level: 9 }), createWriteStream(`${path}.gz`)),
    // Quality 9 is within 15% of 11 on the WebAssembly binary, in a tenth of the time.
    pipeline(createReadStream(path), createBrotliCompress({ params: { [zlib.BROTLI_PARAM_QUALITY]: 9, [zlib.BROTLI_PARAM_SIZE_HINT]: size } }), createWriteStream(`${path}.br`)),
  ]);
}

/** The `_headers` file: every path gets the cross-origin isolation headers. */
function headersFile(): string {
  const lines = Object.entries(CROSS_ORIGIN_ISOLATION_HEADERS).map(([name, value]) => `  ${name}: ${value}`);
  return `# Headers the web demo needs (Netlify / Cloudflare Pages format); see web-demo/README.md.\n/*\n${lines.join('\n')}\n`;
}

/** Copies the onnxruntime-web files the page uses into dist/ort, skipping those already there and current. */
async function copyOrt(previous: BuildInfo | undefined, log: (line: string) => void): Promise<Record<string, string>> {
  const dir = join(DIST_DIR, 'ort');
  await mkdir(dir, { recursive: true });
  const wanted = new Set(BACKENDS.flatMap((backend) => ORT_FILES[backend]));
  const ort: Record<string, string> = {};
  for (const file of wanted) {
    ort[file] = await ortStamp(file);
    const target = join(dir, file);
    if (previous?.ort[file] === ort[file] && existsSync(target) && existsSync(`${target}.br`) && existsSync(`${target}.gz`)) continue;
    log(`copying and compressing onnxruntime-web ${file}`);
    await copyFile(join(ORT_DIST, file), target);
    await compress(target);
  }
  for (const file of await readdir(dir)) {
    if (!wanted.has(file.replace(/\.(br|gz)$/, ''))) await rm(join(dir, file));
  }
  return ort;
}

export async function buildWebDemo(options: BuildOptions = {}): Promise<BuildResult> {
  const log = options.log ?? (() => {});
  const withModels = options.withModels ?? false;
  const files = async (): Promise<BuildResult['files']> =>
    Promise.all((await listFiles(DIST_DIR)).filter((p) => !p.endsWith('.build-info.json')).map(async (p) => ({ path: relative(DIST_DIR, p), bytes: (await stat(p)).size })));
  if (options.ifStale) {
    const why = await staleness(withModels);
    if (why === undefined) return { built: false, reason: 'web-demo/dist is up to date', files: await files() };
    log(`building web-demo/dist: ${why}`);
  }
  let previous: BuildInfo | undefined;
  try {
    previous = JSON.parse(await readFile(BUILD_INFO, 'utf8')) as BuildInfo;
  } catch {
    previous = undefined;
  }
  await mkdir(DIST_DIR, { recursive: true });
  // Everything but the onnxruntime-web copies (large, and only re-copied when they change) is rebuilt.
  for (const entry of await readdir(DIST_DIR)) if (entry !== 'ort' && entry !== LOCK_NAME) await rm(join(DIST_DIR, entry), { recursive: true, force: true });

  const result = await esbuild.build({
    absWorkingDir: REPO_ROOT,
    entryPoints: { app: join(BROWSER_SRC, 'main.ts'), 'app-style': join(BROWSER_SRC, 'styles.css') },
    outdir: DIST_DIR,
    entryNames: '[name]',
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: ['chrome113', 'edge113', 'firefox115', 'safari16.4'],
    minify: true,
    sourcemap: 'linked',
    metafile: true,
    logLevel: 'silent',
  });
  for (const warning of result.warnings) log(`esbuild: ${warning.text}`);
  // One stylesheet name for the page, whatever esbuild calls the CSS entry.
  await rm(join(DIST_DIR, 'app-style.js'), { force: true });
  await copyFile(join(DIST_DIR, 'app-style.css'), join(DIST_DIR, 'app.css'));
  await rm(join(DIST_DIR, 'app-style.css'), { force: true });
  await rm(join(DIST_DIR, 'app-style.css.map'), { force: true });
  for (const file of STATIC_FILES) await copyFile(join(BROWSER_SRC, file), join(DIST_DIR, file));
  await writeFile(join(DIST_DIR, '_headers'), headersFile());
  for (const file of ['app.js', 'app.css', ...STATIC_FILES]) await compress(join(DIST_DIR, file));

  const ort = await copyOrt(previous, log);
  if (withModels) {
    for (const file of await modelFiles()) {
      const target = join(DIST_DIR, 'models', relative(MODELS_DIR, file));
      await mkdir(dirname(target), { recursive: true });
      await copyFile(file, target);
    }
  }
  const bundled = Object.keys(result.metafile.inputs).filter((p) => !p.includes('node_modules'));
  const info: BuildInfo = { inputs: await hashInputs(bundled), ort, withModels };
  await writeFile(BUILD_INFO, `${JSON.stringify(info, null, 2)}\n`);
  return { built: true, reason: 'built', files: await files() };
}


/** Runs `build` while holding the lock directory. */
async function withBuildLock<T>(build: () => Promise<T>): Promise<T> {
  await mkdir(DIST_DIR, { recursive: true });
  for (;;) {
    try {
      await mkdir(LOCK_DIR);
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const age = await stat(LOCK_DIR).then((info) => Date.now() - info.mtimeMs, () => 0);
      if (age > STALE_LOCK_MS) await rm(LOCK_DIR, { recursive: true, force: true });
      else await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
  try {
    return await build();
  } finally {
    await rm(LOCK_DIR, { recursive: true, force: true });
  }
}

/** Builds web-demo/dist when it is missing or older than its sources; cheap when it is current. */
export async function ensureWebDemoBuilt(log?: (line: string) => void): Promise<BuildResult> {
  return withBuildLock(() => buildWebDemo({ ifStale: true, log }));
}

const USAGE = 'Usage: npm run build:web -- [--if-stale] [--with-models]';

if (isMain(import.meta.url)) {
  const args = process.argv.slice(2);
  const known = ['--if-stale', '--with-models', '--help', '-h'];
  const unknown = args.find((arg) => !known.includes(arg));
  if (unknown !== undefined) {
    reportUsageError(`Unknown argument "${unknown}"; expected: ${known.join(', ')}`, USAGE);
    process.exit(2);
  }
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const started = performance.now();
  const result = await withBuildLock(() => buildWebDemo({ ifStale: args.includes('--if-stale'), withModels: args.includes('--with-models'), log: (line) => console.log(line) }));
  if (!result.built) {
    console.log(result.reason);
  } else {
    const kib = (bytes: number): string => `${(bytes / 1024).toFixed(1)} KiB`;
    for (const file of result.files.filter((f) => !/\.(br|gz|map)$/.test(f.path)).sort((a, b) => a.path.localeCompare(b.path))) {
      console.log(`  ${file.path.padEnd(44)} ${kib(file.bytes).padStart(12)}`);
    }
    console.log(`web-demo/dist built in ${Math.round(performance.now() - started)} ms`);
  }
}
