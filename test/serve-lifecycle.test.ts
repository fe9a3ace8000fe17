/**
 * The server as `npm start` runs it, in a child process: execution-provider fallback and the CUDA start-up
 * error, configuration errors, graceful shutdown on SIGTERM, several processes sharing the port, and the
 * shipped models/ where they exist.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, cpSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { connect, createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { readModelMetadata } from '../contract/metadata.ts';
import { writeFixtureModels } from './helpers/fixture-models.ts';
import { makeImage, memoryLogger, rawRequest } from './helpers/serve-harness.ts';
import { DEFAULT_UTKFACE, REPO_ROOT } from '../node-shared/paths.ts';
import { loadModels } from '../serve/models.ts';
import { missingCudaBinaries } from '../node-shared/onnxruntime-node.ts';

/** How long output is still read once a child has exited. */
const OUTPUT_AFTER_EXIT_MS = 1000;

interface Spawned {
  child: ChildProcess;
  /** started as `npm start` (npm is the child, in a process group of its own) */
  viaNpm: boolean;
  output: string[];
  exit: Promise<number | null>;
  /** Resolves with the first output line matching `pattern`. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** The port from the "listening on" line. */
  port(): Promise<number>;
}

/**
 * npm's own script, run by this node (so no `npm` on PATH is needed): set where the tests run under
 * `npm test`, as CI runs them.
 */
const NPM_CLI = process.env.npm_execpath;

/** serve/main.ts in a child process; `viaNpm`: as `npm start -- ARGS` runs it, npm being the child. */
function startMain(args: string[], env: NodeJS.ProcessEnv = {}, viaNpm = false): Spawned {
  const commandArgs = viaNpm ? [NPM_CLI as string, 'start', '--silent', '--', ...args] : ['--import', 'tsx', join(REPO_ROOT, 'serve', 'main.ts'), ...args];
  const child = spawn(process.execPath, commandArgs, {
    // npm and its children get a process group of their own, for stop() to end any server npm leaves behind.
    detached: viaNpm,
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output: string[] = [];
  const watchers: { pattern: RegExp; resolve: (line: string) => void }[] = [];
  const onText = (chunk: Buffer): void => {
    for (const line of chunk.toString('utf8').split('\n').filter((l) => l !== '')) {
      output.push(line);
      for (const watcher of watchers.filter((w) => w.pattern.test(line))) watcher.resolve(line);
    }
  };
  child.stdout?.on('data', onText);
  child.stderr?.on('data', onText);
  const exit = new Promise<number | null>((resolve, reject) => {
    child.on('exit', (code) => resolve(code));
    child.on('error', reject);
  });
  const waitFor = (pattern: RegExp, timeoutMs = 30_000): Promise<string> =>
    new Promise((resolve, reject) => {
      const seen = output.find((line) => pattern.test(line));
      if (seen !== undefined) return resolve(seen);
      const timer = setTimeout(() => reject(new Error(`no line matching ${pattern} within ${timeoutMs} ms; output:\n${output.join('\n')}`)), timeoutMs);
      watchers.push({ pattern, resolve: (line) => (clearTimeout(timer), resolve(line)) });
      // A process's last lines can be read after its 'exit' event, on a busy machine well after it.
      void exit.then(() => setTimeout(() => reject(new Error(`exited before a line matching ${pattern}; output:\n${output.join('\n')}`)), OUTPUT_AFTER_EXIT_MS));
    });
  const port = async (): Promise<number> => Number(/listening on http:\/\/[^:]+:(\d+)/.exec(await waitFor(/listening on/))?.[1]);
  return { child, viaNpm, output, exit, waitFor, port };
}

async function stop(server: Spawned): Promise<void> {
  if (server.child.exitCode === null) server.child.kill('SIGTERM');
  await server.exit;
  // Whatever of npm's group is still running (a server npm left behind) is killed.
  if (server.viaNpm && server.child.pid !== undefined) {
    try {
      process.kill(-server.child.pid, 'SIGKILL');
    } catch {
      // the group is gone already
    }
  }
}

const refusesConnections = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.on('connect', () => (socket.destroy(), resolve(false)));
    socket.on('error', () => resolve(true));
  });

describe('serve lifecycle (npm start in a child process)', () => {
  let modelsDir: string;
  let jpeg: Uint8Array<ArrayBuffer>;
  const base = (): string[] => ['--host', '127.0.0.1', '--port', '0', '--models', modelsDir];

  before(async () => {
    modelsDir = mkdtempSync(join(tmpdir(), 'serve-lifecycle-'));
    await writeFixtureModels(modelsDir);
    jpeg = await makeImage(200, 200, 'image/jpeg', 11);
  });
  after(() => rmSync(modelsDir, { recursive: true, force: true }));

  it('falls back to CPU under --device auto where the CUDA provider is missing, logging one line that says why', { skip: missingCudaBinaries() === undefined && 'the CUDA binaries are installed here' }, async () => {
    const server = startMain([...base(), '--device', 'auto']);
    try {
      const port = await server.port();
      await server.waitFor(/ready in/);
      const why = server.output.filter((line) => /device auto: using CPU/.test(line));
      assert.equal(why.length, 1, 'one line');
      assert.match(why[0], /libonnxruntime_providers_cuda\.so is not installed/);
      assert.match(why[0], /npm run setup:cuda/);
      assert.ok(server.output.some((line) => /execution provider: cpu/.test(line)));
      const models = (await (await fetch(`http://127.0.0.1:${port}/v1/models`)).json()) as { provider: string; providerNote: string };
      assert.equal(models.provider, 'cpu');
      assert.match(models.providerNote, /npm run setup:cuda/);
    } finally {
      await stop(server);
    }
  });

  it('fails at start-up under --device cuda without the CUDA provider, saying how to install it', { skip: missingCudaBinaries() === undefined && 'the CUDA binaries are installed here' }, async () => {
    const server = startMain([...base(), '--device', 'cuda']);
    assert.equal(await server.exit, 1);
    const text = server.output.join('\n');
    assert.match(text, /--device cuda: .*libonnxruntime_providers_cuda\.so/);
    assert.match(text, /npm run setup:cuda/);
  });

  it('exits 2 naming an unknown option, and 1 saying how to export where there are no models', async () => {
    const unknown = startMain(['--prot', '80']);
    assert.equal(await unknown.exit, 2);
    assert.match(unknown.output.join('\n'), /Unknown option --prot; expected one of: --port/);
    const empty = mkdtempSync(join(tmpdir(), 'serve-no-models-'));
    try {
      const none = startMain(['--host', '127.0.0.1', '--port', '0', '--models', empty]);
      assert.equal(await none.exit, 1);
      assert.match(none.output.join('\n'), /No models in .*npm run export/);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it('exits 1 on a port in use, naming it and how to choose another', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      const port = (taken.address() as AddressInfo).port;
      const server = startMain(['--host', '127.0.0.1', '--port', String(port)]);
      assert.equal(await server.exit, 1);
      assert.match(server.output.join('\n'), new RegExp(`127\\.0\\.0\\.1 port ${port} is already in use .*choose another with --port \\(or PORT\\); --port 0 takes any free one`));
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });

  it('on SIGTERM stops accepting, finishes the request in flight, and exits 0', async () => {
    const server = startMain(base());
    try {
      const port = await server.port();
      await server.waitFor(/ready in/);
      // A request in flight: its head and half its body are sent before the signal, the rest after.
      const socket = connect({ host: '127.0.0.1', port });
      await new Promise((resolve) => socket.once('connect', resolve));
      const received: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => received.push(chunk));
      const closed = new Promise((resolve) => socket.once('close', resolve));
      socket.write(`POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: ${jpeg.length}\r\n\r\n`);
      socket.write(jpeg.subarray(0, jpeg.length >> 1));
      await new Promise((r) => setTimeout(r, 200));
      server.child.kill('SIGTERM');
      await server.waitFor(/SIGTERM: finishing requests in flight/);
      let refused = false;
      for (let i = 0; i < 50 && !refused; i++) {
        refused = await refusesConnections(port);
        if (!refused) await new Promise((r) => setTimeout(r, 50));
      }
      assert.ok(refused, 'new connections are refused');
      socket.write(jpeg.subarray(jpeg.length >> 1));
      await closed;
      const response = Buffer.concat(received).toString('utf8');
      assert.match(response, /^HTTP\/1\.1 200 OK/);
      // The synthetic image holds no face: the detector ran and found none.
      assert.match(response, /"faces":\[\],"timingsMs"/);
      assert.equal(await server.exit, 0);
      assert.ok(server.output.some((line) => line.includes('stopped')));
    } finally {
      await stop(server);
    }
  });

  it('drains and exits when SIGTERM goes to npm (as a container runtime sends it to `npm start`), leaving no server behind', { skip: NPM_CLI === undefined && 'not run by npm (npm_execpath is unset): run `npm test`' }, async () => {
    const server = startMain(base(), {}, true);
    try {
      const port = await server.port();
      await server.waitFor(/ready in/);
      server.child.kill('SIGTERM');
      await server.waitFor(/SIGTERM: finishing requests in flight/);
      assert.equal(await server.exit, 0, 'npm exits as the server does, cleanly');
      let refused = false;
      for (let i = 0; i < 50 && !refused; i++) {
        refused = await refusesConnections(port);
        if (!refused) await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(refused, 'the server process is gone with npm');
    } finally {
      await stop(server);
    }
  });

  it('runs --workers 2 processes on one port, sums their metrics, and stops them all on SIGTERM', async () => {
    const server = startMain([...base(), '--workers', '2', '--decode-threads', '1']);
    try {
      await server.waitFor(/\[worker 1\] .*ready in/);
      await server.waitFor(/\[worker 2\] .*ready in/);
      const port = await server.port();
      for (let i = 0; i < 12; i++) {
        const res = await rawRequest(port, [`POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nConnection: close\r\nContent-Length: ${jpeg.length}\r\n\r\n`, jpeg]);
        assert.equal(res?.status, 200);
      }
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      assert.match(metrics, /^http_requests_total\{method="POST",route="\/v1\/predict",status="200"\} 12$/m, 'both processes counted in one scrape');
      server.child.kill('SIGTERM');
      await server.waitFor(/all workers stopped/);
      assert.equal(await server.exit, 0);
    } finally {
      await stop(server);
    }
  });

  it('refuses at start-up a model changed after export (sha256) or one that is not an exported model', async () => {
    const copy = mkdtempSync(join(tmpdir(), 'serve-bad-models-'));
    const log = memoryLogger([]);
    try {
      cpSync(modelsDir, copy, { recursive: true });
      appendFileSync(join(copy, 'gender.onnx'), new Uint8Array([0]));
      await assert.rejects(loadModels(copy, { device: 'cpu', merge: 'auto', threads: 1, log }), /gender\.onnx has sha256 [0-9a-f]{64}, but manifest\.json says [0-9a-f]{64}.*export the models again/);
      // Only one bad file at a time: the models load concurrently, so which error came first would be chance.
      cpSync(join(modelsDir, 'gender.onnx'), join(copy, 'gender.onnx'));
      rmSync(join(copy, 'manifest.json'));
      writeFileSync(join(copy, 'age.onnx'), 'not a model');
      await assert.rejects(loadModels(copy, { device: 'cpu', merge: 'auto', threads: 1, log }), /age\.onnx: Not a valid ONNX model/);
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });

  const shipped = join(REPO_ROOT, 'models', 'manifest.json');
  it('serves the shipped models/ with no configuration, labels from their metadata', { skip: !existsSync(shipped) && 'models/manifest.json is not exported yet' }, async () => {
    const server = startMain(['--host', '127.0.0.1', '--port', '0']);
    try {
      const port = await server.port();
      await server.waitFor(/ready in/);
      // A UTKFace crop goes through the shipped detector; without the dataset, the synthetic image is taken whole.
      const face = join(DEFAULT_UTKFACE, '25_1_2_20170104021412148.jpg.chip.jpg');
      const real = existsSync(face);
      const body = real ? new Uint8Array(await readFile(face)) : jpeg;
      const res = await fetch(`http://127.0.0.1:${port}/v1/predict${real ? '' : '?detect=none'}`, { method: 'POST', body, headers: { 'content-type': 'image/jpeg' } });
      assert.equal(res.status, 200);
      const prediction = (await res.json()) as { faces: Record<string, { group?: string; label?: string; index: number; probabilities: number[] }>[] };
      assert.equal(prediction.faces.length, 1, real ? 'the detector finds the one face' : 'detect=none: the image is one face');
      for (const task of ['age', 'ethnicity', 'gender']) {
        const metadata = readModelMetadata(new Uint8Array(await readFile(join(REPO_ROOT, 'models', `${task}.onnx`))));
        const answer = prediction.faces[0][task];
        assert.equal(answer.probabilities.length, metadata.labels.length);
        assert.equal(answer.group ?? answer.label, metadata.labels[answer.index]);
      }
    } finally {
      await stop(server);
    }
  });
});
