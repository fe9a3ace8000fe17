/**
 * Photos with several faces, composed with sharp from face crops (UTKFace's, or generated ones), for the web
 * demo's end-to-end test and benchmark: a plain or gradient background and each face placed where the spec says;
 * and a fake webcam's frames, a face sliding across a wider scene.
 */
import sharp, { type Sharp } from 'sharp';
import type { FaceImage } from './face-images.ts';
import type { RgbFrame } from './chromium.ts';

/** A scene to compose: its size, background, and each face's side (pixels) and centre (fractions of the scene). */
export interface SceneSpec {
  name: string;
  width: number;
  height: number;
  background: 'plain' | 'gradient';
  faces: { side: number; x: number; y: number }[];
}

/** From a small photo to a large one that the server (and the page) shrink to their working size. */
export const SCENES: readonly SceneSpec[] = [
  { name: 'one-face-640x480', width: 640, height: 480, background: 'plain', faces: [{ side: 220, x: 0.45, y: 0.5 }] },
  { name: 'two-faces-640x480', width: 640, height: 480, background: 'plain', faces: [{ side: 200, x: 0.28, y: 0.5 }, { side: 170, x: 0.74, y: 0.45 }] },
  { name: 'three-faces-1024x768', width: 1024, height: 768, background: 'gradient', faces: [{ side: 260, x: 0.2, y: 0.45 }, { side: 220, x: 0.52, y: 0.55 }, { side: 180, x: 0.82, y: 0.4 }] },
  {
    name: 'four-faces-1280x960',
    width: 1280,
    height: 960,
    background: 'gradient',
    faces: [{ side: 300, x: 0.17, y: 0.3 }, { side: 260, x: 0.5, y: 0.3 }, { side: 230, x: 0.82, y: 0.32 }, { side: 280, x: 0.4, y: 0.75 }],
  },
  {
    name: 'four-faces-2400x1800',
    width: 2400,
    height: 1800,
    background: 'gradient',
    faces: [{ side: 520, x: 0.18, y: 0.32 }, { side: 460, x: 0.5, y: 0.3 }, { side: 420, x: 0.82, y: 0.35 }, { side: 500, x: 0.45, y: 0.74 }],
  },
];

export function sceneSpec(name: string): SceneSpec {
  const spec = SCENES.find((scene) => scene.name === name);
  if (spec === undefined) throw new Error(`No scene "${name}"; expected one of: ${SCENES.map((scene) => scene.name).join(', ')}`);
  return spec;
}

/** Background brightness of a plain scene; a gradient runs from reddish on the left to bluish at the top. */
const PLAIN_GREY = 168;

function background(spec: SceneSpec): Buffer {
  const { width, height } = spec;
  const pixels = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const at = (y * width + x) * 3;
      if (spec.background === 'plain') {
        pixels.fill(PLAIN_GREY, at, at + 3);
      } else {
        pixels[at] = 70 + Math.round((110 * x) / width);
        pixels[at + 1] = 120;
        pixels[at + 2] = 190 - Math.round((100 * y) / height);
      }
    }
  }
  return pixels;
}

/** The scene as raw RGB, face `i` taken from `crops[i % crops.length]`. */
async function composeRaw(spec: SceneSpec, crops: readonly FaceImage[]): Promise<Sharp> {
  const layers = await Promise.all(
    spec.faces.map(async (face, i) => ({
      input: await sharp(crops[i % crops.length].bytes).resize(face.side, face.side).toBuffer(),
      left: Math.round(face.x * spec.width - face.side / 2),
      top: Math.round(face.y * spec.height - face.side / 2),
    })),
  );
  // Composited, then read back as one image: sharp applies composite last, after any resize or crop.
  return sharp(await sharp(background(spec), { raw: { width: spec.width, height: spec.height, channels: 3 } }).composite(layers).png().toBuffer());
}

/** The scene encoded as PNG or JPEG (quality 92) by sharp. */
export async function composeScene(spec: SceneSpec, crops: readonly FaceImage[], format: 'png' | 'jpeg'): Promise<FaceImage> {
  const image = await composeRaw(spec, crops);
  const bytes = format === 'png' ? await image.png().toBuffer() : await image.jpeg({ quality: 92 }).toBuffer();
  return { name: `${spec.name}.${format === 'png' ? 'png' : 'jpg'}`, type: `image/${format}`, bytes: new Uint8Array(bytes) };
}

export interface CameraVideo {
  width: number;
  height: number;
  fps: number;
  frames: number;
}

/** A camera looking at one face on a gradient half again as wide as the frame, the face sliding there and back once per loop. */
export async function cameraFrames(face: FaceImage, video: CameraVideo): Promise<Iterable<RgbFrame>> {
  const sceneWidth = Math.round(video.width * 1.5);
  const side = Math.round(video.height * 0.45);
  const spec: SceneSpec = { name: 'camera', width: sceneWidth, height: video.height, background: 'gradient', faces: [{ side, x: 0.5, y: 0.5 }] };
  const data = await (await composeRaw(spec, [face])).removeAlpha().raw().toBuffer();
  return (function* () {
    for (let f = 0; f < video.frames; f++) {
      // There and back (a cosine), so the loop has no jump; even, for 4:2:0.
      const left = 2 * Math.round(((sceneWidth - video.width) / 2) * (1 - Math.cos((2 * Math.PI * f) / video.frames)) / 2);
      const frame = new Uint8Array(video.width * video.height * 3);
      for (let y = 0; y < video.height; y++) frame.set(data.subarray((y * sceneWidth + left) * 3, (y * sceneWidth + left + video.width) * 3), y * video.width * 3);
      yield { width: video.width, height: video.height, data: frame };
    }
  })();
}
