/**
 * Reloading the models: the server serves /models/* and answers /v1/predict from the models it loaded, whatever
 * happens to the folder on disk, until it is asked to reload (SIGHUP); a folder that does not load changes nothing,
 * one that does changes the page's files and the API's answers together, and a request in flight at the swap
 * finishes on the models that admitted it. In this process, and as `npm start -- --workers 2` in a child process.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { REPO_ROOT } from '../node-shared/paths.ts';
import { writeFixtureModels } from './helpers/fixture-models.ts';
import { makeImage, rawRequest, startTestServer, type TestServer } from './helpers/serve-harness.ts';

/** Two valid model folders whose gender models differ (different weights). */
let oldModels = '';
let newModels = '';
let jpeg: Uint8Array<ArrayBuffer>;

/** What the page and the API see: the gender model's bytes under /models/, and an answer without its timings. */
async function observe(t: TestServer): Promise<{ gender: Buffer; answer: unknown }> {
  const gender = Buffer.from(await (await fetch(`${t.url}/models/gender.onnx`)).arrayBuffer());
  const res = await fetch(`${t.url}/v1/predict?detect=none`, { method: 'POST', body: jpeg, headers: { 'content-type': 'image/jpeg' } });
  assert.equal(res.status, 200);
  const { faces } = (await res.json()) as { faces: unknown };
  return { gender, answer: faces };
}

/** A copy of `from` that the test may change. */
function liveCopy(from: string): string {
  const live = mkdtempSync(join(tmpdir(), 'serve-reload-live-'));
  cpSync(from, live, { recursive: true });
  return live;
}

async function until(condition: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

before(async () => {
  oldModels = mkdtempSync(join(tmpdir(), 'serve-reload-old-'));
  newModels = mkdtempSync(join(tmpdir(), 'serve-reload-new-'));
  await writeFixtureModels(oldModels, { seed: 7 });
  await writeFixtureModels(newModels, { seed: 8 });
  jpeg = await makeImage(120, 120, 'image/jpeg', 5);
});
after(() => {
  rmSync(oldModels, { recursive: true, force: true });
  rmSync(newModels, { recursive: true, force: true });
});

describe('reloading the models, in this process', () => {
  it('serves the loaded models while the folder changes, keeps them when a reload fails, and swaps page and API together when one loads', async () => {
    const live = liveCopy(oldModels);
    const t = await startTestServer({ modelsDir: live, flags: ['--decode-threads', '1'] });
    try {
      const loaded = await observe(t);
      assert.ok(loaded.gender.equals(await readFile(join(oldModels, 'gender.onnx'))));

      // Another valid gender model over the loaded one: the manifest's sha256 no longer matches it.
      cpSync(join(newModels, 'gender.onnx'), join(live, 'gender.onnx'));
      assert.deepEqual(await observe(t), loaded, 'the page and the API still use the loaded models');

      const failed = await t.server.reload();
      assert.equal(failed.reloaded, false);
      assert.match(failed.reloaded ? '' : failed.reason, /gender\.onnx has sha256 [0-9a-f]{64}, but manifest\.json says/);
      assert.ok(t.logs.some((line) => /^error reload failed, still serving the models loaded at \S+: .*gender\.onnx has sha256/.test(line)), t.logs.join('\n'));
      assert.deepEqual(await observe(t), loaded, 'a folder that does not load changes nothing');

      cpSync(newModels, live, { recursive: true });
      const reloaded = await t.server.reload();
      assert.equal(reloaded.reloaded, true);
      const swapped = await observe(t);
      assert.ok(swapped.gender.equals(await readFile(join(newModels, 'gender.onnx'))), '/models/ serves the new file');
      assert.notDeepEqual(swapped.answer, loaded.answer, 'and the API answers with the new models');
      const report = (await (await fetch(`${t.url}/v1/models`)).json()) as { models: { task: string; sha256: string }[] };
      const manifest = JSON.parse(await readFile(join(newModels, 'manifest.json'), 'utf8')) as { models: { file: string; sha256: string }[] };
      assert.equal(report.models.find((m) => m.task === 'gender')?.sha256, manifest.models.find((m) => m.file === 'gender.onnx')?.sha256);
      assert.ok(t.logs.some((line) => /^info reloaded in \d+ ms: .*; the previous models are released once their 0 image\(s\) in flight are answered/.test(line)), t.logs.join('\n'));
      await until(() => t.logs.some((line) => /^info released the models loaded at/.test(line)), 'the old models to be released');
    } finally {
      await t.close();
      rmSync(live, { recursive: true, force: true });
    }
  });

  it('finishes a request in flight at the swap on the models that admitted it, and releases them after it', async () => {
    const live = liveCopy(oldModels);
    const t = await startTestServer({ modelsDir: live, flags: ['--decode-threads', '1'] });
    try {
      const loaded = await observe(t);
      const oldPredictor = t.server.state.predictor;
      // Half an upload: the request is admitted on arrival, by the models being served then.
      const socket = connect({ host: '127.0.0.1', port: t.server.port });
      const received: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => received.push(chunk));
      const closed = new Promise((resolve) => socket.on('close', resolve));
      await new Promise((resolve) => socket.on('connect', resolve));
      socket.write(`POST /v1/predict?detect=none HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nConnection: close\r\nContent-Length: ${jpeg.length}\r\n\r\n`);
      socket.write(jpeg.subarray(0, jpeg.length >> 1));
      await until(() => oldPredictor?.depth === 1, 'the request to be admitted');

      cpSync(newModels, live, { recursive: true });
      assert.equal((await t.server.reload()).reloaded, true);
      assert.notEqual(t.server.state.predictor, oldPredictor);
      assert.ok(t.logs.some((line) => /released once their 1 image\(s\) in flight are answered/.test(line)), t.logs.join('\n'));
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.ok(!t.logs.some((line) => /released the models loaded at/.test(line)), 'the old models wait for the request they admitted');
      // A request answered by the new models meanwhile does not hide the one the old models still hold.
      await observe(t);
      assert.match(await (await fetch(`${t.url}/metrics`)).text(), /^queue_depth 1$/m);

      socket.write(jpeg.subarray(jpeg.length >> 1));
      await closed;
      const response = Buffer.concat(received).toString('utf8');
      assert.match(response, /^HTTP\/1\.1 200 OK/);
      const { faces } = JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4)) as { faces: unknown };
      assert.deepEqual(faces, loaded.answer, 'answered by the models that admitted it');
      await until(() => t.logs.some((line) => /^info released the models loaded at/.test(line)), 'the old models to be released');
      assert.notDeepEqual((await observe(t)).answer, loaded.answer, 'new requests get the new models');
    } finally {
      await t.close();
      rmSync(live, { recursive: true, force: true });
    }
  });
});

describe('reloading the models on SIGHUP (npm start -- --workers 2, in a child process)', () => {
  it('the primary passes SIGHUP to every worker: a broken folder keeps the old models everywhere, a valid one replaces them everywhere', async () => {
    const live = liveCopy(oldModels);
    const args = ['--import', 'tsx', join(REPO_ROOT, 'serve', 'main.ts'), '--host', '127.0.0.1', '--port', '0', '--models', live, '--workers', '2', '--decode-threads', '1'];
    const child = spawn(process.execPath, args, { cwd: REPO_ROOT, env: { PATH: process.env.PATH, HOME: process.env.HOME }, stdio: ['ignore', 'pipe', 'pipe'] });
    const output: string[] = [];
    const onText = (chunk: Buffer): void => void output.push(...chunk.toString('utf8').split('\n').filter((line) => line !== ''));
    child.stdout.on('data', onText);
    child.stderr.on('data', onText);
    const exited = new Promise((resolve) => child.on('exit', resolve));
    const count = (pattern: RegExp): number => output.filter((line) => pattern.test(line)).length;
    const waitForLines = (pattern: RegExp, n: number): Promise<void> => until(() => count(pattern) >= n, `${n} line(s) matching ${pattern}; output:\n${output.join('\n')}`, 60_000);
    /** The gender model's bytes as several connections (spread over the workers) receive them. */
    const servedGender = async (port: number): Promise<Buffer[]> => {
      const bodies: Buffer[] = [];
      for (let i = 0; i < 6; i++) {
        const res = await rawRequest(port, ['GET /models/gender.onnx HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'], { waitMs: 10_000 });
        assert.equal(res?.status, 200);
        bodies.push(Buffer.from(res.body, 'latin1'));
      }
      return bodies;
    };
    try {
      await waitForLines(/\[worker \d+\] .*ready in/, 2);
      const port = Number(/listening on http:\/\/[^:]+:(\d+)/.exec(output.find((line) => /listening on/.test(line)) ?? '')?.[1]);
      const oldGender = await readFile(join(oldModels, 'gender.onnx'));
      const newGender = await readFile(join(newModels, 'gender.onnx'));

      cpSync(join(newModels, 'gender.onnx'), join(live, 'gender.onnx'));
      child.kill('SIGHUP');
      await waitForLines(/\[primary\] SIGHUP: asking 2 worker\(s\) to reload the models/, 1);
      await waitForLines(/\[worker \d+\] reload failed, still serving the models loaded at/, 2);
      for (const body of await servedGender(port)) assert.ok(body.equals(oldGender), 'every worker still serves the models it loaded');

      cpSync(newModels, live, { recursive: true });
      child.kill('SIGHUP');
      await waitForLines(/\[worker \d+\] reloaded in \d+ ms/, 2);
      for (const body of await servedGender(port)) assert.ok(body.equals(newGender), 'every worker serves the new models');
      assert.equal(child.exitCode, null, 'SIGHUP does not stop the server');
    } finally {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
      rmSync(live, { recursive: true, force: true });
    }
  });
});
