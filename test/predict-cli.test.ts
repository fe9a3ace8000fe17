/**
 * `npm run predict`, run as a person runs it (a child process): it answers a UTKFace photo exactly as a server on
 * the same models does (boxes, landmarks, probabilities; not timings), one photo as the server's object and several
 * as JSON Lines, draws the photo at its own size with --annotate, names a photo it cannot read on stderr while still
 * answering the others (exit 1), and refuses a bad option with exit 2 before loading anything.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import type { PhotoPrediction } from '../contract/face/photo.ts';
import { DEFAULT_UTKFACE, REPO_ROOT } from '../node-shared/paths.ts';
import { startTestServer, type TestServer } from './helpers/serve-harness.ts';

/** Two UTKFace crops in which the detector finds a face. */
const PHOTOS = ['34_1_0_20170103163016663.jpg.chip.jpg', '26_0_2_20161219191301043.jpg.chip.jpg'].map((name) => join(DEFAULT_UTKFACE, name));
const NO_DATA = PHOTOS.every((photo) => existsSync(photo)) ? false : `the UTKFace photos ${PHOTOS.join(', ')} are absent`;
const MODELS_DIR = join(REPO_ROOT, 'models');

function predictCli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'serve', 'cli', 'predict.ts'), ...args], { cwd: REPO_ROOT, encoding: 'utf8' });
}

/** What must be identical between the CLI and the server: everything but the timings. */
const answerWithoutTimings = ({ timingsMs: _timings, ...rest }: PhotoPrediction): Omit<PhotoPrediction, 'timingsMs'> => rest;

describe('npm run predict answers as the server does', { skip: NO_DATA }, () => {
  let server: TestServer;
  let scratch = '';

  before(async () => {
    server = await startTestServer({ modelsDir: MODELS_DIR });
    scratch = await mkdtemp(join(tmpdir(), 'predict-cli-'));
  });
  after(async () => {
    await server?.close();
    if (scratch !== '') await rm(scratch, { recursive: true, force: true });
  });

  async function serverAnswer(photo: string, query = ''): Promise<PhotoPrediction> {
    const response = await fetch(`${server.url}/v1/predict${query}`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: await readFile(photo) });
    assert.equal(response.status, 200);
    return (await response.json()) as PhotoPrediction;
  }

  it('prints the server\'s answer for one photo, and --annotate writes a PNG of the photo\'s size', async () => {
    const drawing = join(scratch, 'drawn.png');
    const result = predictCli([PHOTOS[0], '--annotate', drawing]);
    assert.equal(result.status, 0, result.stderr);
    const answer = JSON.parse(result.stdout) as PhotoPrediction;
    assert.deepEqual(Object.keys(answer), ['image', 'faces', 'timingsMs']);
    assert.deepEqual(answer.image, { width: 200, height: 200 });
    assert.ok(answer.faces.length >= 1, 'the detector finds the face in a UTKFace crop');
    const face = answer.faces[0];
    assert.deepEqual(Object.keys(face.box), ['x', 'y', 'width', 'height']);
    assert.equal(typeof face.score, 'number');
    assert.ok(face.landmarks !== null && Array.isArray(face.landmarks.leftEye));
    for (const [task, key] of [['age', 'group'], ['ethnicity', 'label'], ['gender', 'label']] as const) {
      const prediction = face[task] as { index: number; probabilities: number[] } & Record<string, unknown>;
      assert.equal(typeof prediction[key], 'string', `${task}.${key}`);
      assert.ok(Math.abs(prediction.probabilities.reduce((sum, p) => sum + p, 0) - 1) < 1e-4, `${task} probabilities sum to 1`);
    }
    assert.deepEqual(answerWithoutTimings(answer), answerWithoutTimings(await serverAnswer(PHOTOS[0])));

    const drawn = await sharp(drawing).metadata();
    assert.deepEqual([drawn.format, drawn.width, drawn.height], ['png', 200, 200]);
  });

  it('prints JSON Lines for several photos (--detect none as the server\'s ?detect=none), naming on stderr the ones it cannot read, exit 1', async () => {
    const missing = join(scratch, 'missing.jpg');
    const notAnImage = join(scratch, 'notes.jpg');
    await writeFile(notAnImage, 'these are notes, not a photo\n');
    const result = predictCli([PHOTOS[0], missing, notAnImage, PHOTOS[1], '--detect', 'none']);
    assert.equal(result.status, 1, result.stderr);
    assert.match(result.stderr, new RegExp(`${missing}: no such file`));
    assert.match(result.stderr, new RegExp(`${notAnImage}: Not a supported image`));
    const lines = result.stdout.trim().split('\n').map((line) => JSON.parse(line) as PhotoPrediction & { file: string });
    assert.deepEqual(lines.map((line) => line.file), [PHOTOS[0], PHOTOS[1]]);
    for (const { file, ...answer } of lines) {
      assert.deepEqual(Object.keys(answer), ['image', 'faces', 'timingsMs']);
      assert.deepEqual(answerWithoutTimings(answer), answerWithoutTimings(await serverAnswer(file, '?detect=none')));
    }
  });

  it('refuses a bad option or no photo with exit 2 and the reason, and prints the usage on stdout for --help', () => {
    for (const [args, reason] of [
      [[PHOTOS[0], '--max-faces', '0'], /--max-faces must be a whole number/],
      [[PHOTOS[0], '--min-score', '2'], /--min-score must be a number from 0 to 1/],
      [[PHOTOS[0], '--detect', 'none', '--max-faces', '3'], /--max-faces applies to face detection/],
      [[PHOTOS[0], PHOTOS[1], '--annotate', join(scratch, 'both.png')], /use --annotate-dir DIR for several/],
      [[PHOTOS[0], '--colour'], /Unknown option '--colour'/],
      [[], /Give at least one photo/],
    ] as const) {
      const result = predictCli([...args]);
      assert.equal(result.status, 2, `${args.join(' ')}: ${result.stderr}`);
      assert.match(result.stderr, reason);
      assert.equal(result.stdout, '');
    }
    const help = predictCli(['--help']);
    assert.equal(help.status, 0);
    assert.match(help.stdout, /^Usage: npm run predict -- PHOTO/);
  });
});
