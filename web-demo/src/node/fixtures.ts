/**
 * Test fixtures for the web demo: a models folder to serve (the shipped models/ when they exist, else the seed
 * architecture with seeded random weights, exported with the project's exporter), and face images to send
 * (UTKFace from ../shared/data/utkface when present, else generated face-like images).
 */
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Jimp } from 'jimp';
import { exportModel, writeExportedModel } from '../../../export/export-model.ts';
import { modelSha256 } from '../../../export/tfjs-model.ts';
import { taskLabels, TASKS } from '../../../contract/labels.ts';
import { SEED_INPUT } from '../../../contract/preprocess.ts';
import { selectBackend } from '../../../node-shared/tfjs/select.ts';
import { buildSeedModel } from '../../../training/models/seed.ts';
import { DEFAULT_UTKFACE as UTKFACE_DIR } from '../../../node-shared/paths.ts';
import { MODELS_DIR } from './build.ts';

/** Whether a folder holds a manifest and every model it lists. */
export async function hasShippedModels(dir = MODELS_DIR): Promise<boolean> {
  const manifest = join(dir, 'manifest.json');
  if (!existsSync(manifest)) return false;
  try {
    const { models } = JSON.parse(await readFile(manifest, 'utf8')) as { models?: { file?: string }[] };
    return Array.isArray(models) && models.length > 0 && models.every((m) => typeof m.file === 'string' && existsSync(join(dir, m.file)));
  } catch {
    return false;
  }
}

/** Exports the seed model of every task, with seeded random weights, to `dir` (with its manifest.json). */
export async function writeFixtureModels(dir: string, seed = 1): Promise<void> {
  // tfjs's pure-JS CPU backend is enough for models this small.
  await selectBackend('cpu', () => {});
  for (const task of TASKS) {
    const labels = taskLabels(task, 'coursework');
    const model = buildSeedModel(task, labels.length, seed + TASKS.indexOf(task) * 100);
    try {
      const exported = exportModel(model, {
        task,
        labels,
        ageScheme: task === 'age' ? 'coursework' : undefined,
        input: SEED_INPUT,
        preset: 'seed',
        sourceSha256: await modelSha256(model),
      });
      await writeExportedModel(exported, join(dir, `${task}.onnx`));
    } finally {
      model.dispose();
    }
  }
}

export interface FaceImage {
  name: string;
  bytes: Uint8Array<ArrayBuffer>;
  type: string;
}

/** A deterministic face-like picture (a skin-toned oval with eyes and a mouth on a background), as a JPEG. */
async function generatedFace(index: number): Promise<FaceImage> {
  const size = 200;
  const image = new Jimp({ width: size, height: size, color: 0x000000ff });
  const data = image.bitmap.data;
  const tone = [[224, 172, 105], [141, 85, 36], [255, 219, 172], [198, 134, 66], [241, 194, 125]][index % 5];
  const background = [(index * 47) % 256, (index * 91) % 256, (index * 13 + 80) % 256];
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const dx = (x - 100) / (60 + (index % 7) * 3);
      const dy = (y - 105) / (78 + (index % 5) * 3);
      const inFace = dx * dx + dy * dy <= 1;
      const eye = (Math.hypot(x - 78, y - 88) < 7 || Math.hypot(x - 122, y - 88) < 7) && inFace;
      const mouth = Math.abs(y - 138 - (index % 4)) < 4 && Math.abs(x - 100) < 22 && inFace;
      const colour = eye || mouth ? [40, 25, 20] : inFace ? tone : background;
      const shade = 0.85 + 0.15 * Math.sin((x + y + index * 17) / 23);
      const at = (y * size + x) * 4;
      for (let c = 0; c < 3; c++) data[at + c] = Math.max(0, Math.min(255, Math.round(colour[c] * shade)));
      data[at + 3] = 255;
    }
  }
  const buffer = await image.getBuffer('image/jpeg', { quality: 90 });
  return { name: `generated-face-${index}.jpg`, bytes: new Uint8Array(buffer), type: 'image/jpeg' };
}

/**
 * `count` face images: the first of UTKFace's files in name order, spread over the set (every k-th), when the
 * folder exists; else generated ones. `source` says which.
 */
export async function faceImages(count: number): Promise<{ source: 'utkface' | 'generated'; faces: FaceImage[] }> {
  if (existsSync(UTKFACE_DIR)) {
    const names = (await readdir(UTKFACE_DIR)).filter((n) => /\.jpe?g$/i.test(n)).sort();
    if (names.length >= count) {
      const step = Math.floor(names.length / count);
      const picked = Array.from({ length: count }, (_, i) => names[i * step]);
      const faces = await Promise.all(picked.map(async (name) => ({ name, bytes: new Uint8Array(await readFile(join(UTKFACE_DIR, name))), type: 'image/jpeg' })));
      return { source: 'utkface', faces };
    }
  }
  return { source: 'generated', faces: await Promise.all(Array.from({ length: count }, (_, i) => generatedFace(i))) };
}
