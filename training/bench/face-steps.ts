/**
 * `npx tsx training/bench/face-steps.ts [FILE]`: the time of each step the server takes for one face crop with
 * detection, one at a time on one thread (mean of 50 runs after 5 warm-up runs): preparing the detector's input,
 * the detector, reading its outputs, cutting the face out. FILE defaults to a UTKFace crop.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeDetections } from '../../contract/face/blazeface.ts';
import { cropFace, detectFaces, firstDetectorInput, type RunDetector } from '../../contract/face/photo.ts';
import { decodePhoto } from '../../imaging/photo-decode.ts';
import { createSession, run } from '../../node-shared/onnxruntime-node.ts';
import { DEFAULT_UTKFACE } from '../../node-shared/paths.ts';
import { servedDetectorFile } from '../data/aligned-crops.ts';

const RUNS = 50;
const WARM_UP_RUNS = 5;
const MODEL_INPUT = { width: 64, height: 64, channels: 3 as const, scaling: 'unit' as const };

async function meanMs(name: string, step: () => unknown): Promise<void> {
  for (let i = 0; i < WARM_UP_RUNS; i++) await step();
  const started = performance.now();
  for (let i = 0; i < RUNS; i++) await step();
  console.log(`${name.padEnd(28)} ${((performance.now() - started) / RUNS).toFixed(2)} ms`);
}

const file = process.argv[2] ?? join(DEFAULT_UTKFACE, '25_1_2_20170104021412148.jpg.chip.jpg');
const detector = await servedDetectorFile();
const session = await createSession(detector.bytes, { provider: 'cpu', threads: 1 });
const photo = await decodePhoto(new Uint8Array(readFileSync(file)), { maxPixels: 25_000_000, minImageSide: 32 });
const runDetector: RunDetector = async (input, size) => Object.values(await run(session, { [session.inputs[0].name]: { data: input, dims: [1, size, size, 3] } }));
const first = firstDetectorInput(photo.pixels);
const outputs = await runDetector(first.input, first.transform.inputSize);
const faces = await detectFaces(photo.pixels, runDetector, { minScore: 0.5, maxFaces: 20 }, first);
console.log(`${file}: ${photo.width}x${photo.height}, ${faces.length} face(s)`);
await meanMs('detector input (decode thread)', () => firstDetectorInput(photo.pixels));
await meanMs('detector run', () => runDetector(first.input, first.transform.inputSize));
await meanMs('reading its outputs', () => decodeDetections(outputs, first.transform, { minScore: 0.5 }));
if (faces.length > 0) await meanMs('cutting the face out (64x64)', () => cropFace(photo.pixels, faces[0], [MODEL_INPUT]));
