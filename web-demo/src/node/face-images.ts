/**
 * Face images for the web demo's end-to-end test and benchmark to send: UTKFace from ../shared/data/utkface
 * when present, else generated face-like images.
 */
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Jimp } from 'jimp';
import { DEFAULT_UTKFACE as UTKFACE_DIR } from '../../../node-shared/paths.ts';

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
