/**
 * The face pipeline's pixel loops as they were before they were made faster (commit d9debff), kept verbatim
 * so that tests can prove the fast ones give the same bytes and floats for every input; with the random images
 * those tests compare them on.
 */
import type { Similarity, CropSpec } from '../../contract/face/align.ts';
import type { InputTransform } from '../../contract/face/blazeface.ts';
import type { PixelBuffer } from '../../contract/preprocess.ts';

/** `warpToCrop` of contract/face/align.ts at d9debff. */
export function referenceWarpToCrop(image: PixelBuffer, toImage: Similarity, cropSize: number, spec: CropSpec): Uint8Array {
  const { width, height, channels: inC, data } = image;
  if (data.length !== width * height * inC || width < 1 || height < 1) {
    throw new RangeError(`Pixel buffer holds ${data.length} bytes; expected ${width}x${height}x${inC}`);
  }
  const outC = spec.channels;
  const out = new Uint8Array(spec.width * spec.height * outC);
  const stepX = cropSize / spec.width;
  const stepY = cropSize / spec.height;
  const scale = Math.hypot(toImage.a, toImage.b);
  const nx = Math.max(1, Math.ceil(stepX * scale - 1e-9));
  const ny = Math.max(1, Math.ceil(stepY * scale - 1e-9));
  const rgb = [0, 0, 0];
  const acc = [0, 0, 0];
  const pixel = (x: number, y: number, weight: number): void => {
    const s = (y * width + x) * inC;
    if (inC === 1) {
      rgb[0] = rgb[1] = rgb[2] = data[s];
    } else {
      const alpha = inC === 4 ? data[s + 3] : 255;
      const white = 255 * (255 - alpha);
      for (let c = 0; c < 3; c++) rgb[c] = alpha === 255 ? data[s + c] : (data[s + c] * alpha + white) / 255;
    }
    for (let c = 0; c < 3; c++) acc[c] += rgb[c] * weight;
  };
  const samples = nx * ny;
  for (let oy = 0; oy < spec.height; oy++) {
    for (let ox = 0; ox < spec.width; ox++) {
      acc[0] = acc[1] = acc[2] = 0;
      for (let sy = 0; sy < ny; sy++) {
        const v = (oy + (sy + 0.5) / ny) * stepY;
        for (let sx = 0; sx < nx; sx++) {
          const u = (ox + (sx + 0.5) / nx) * stepX;
          const fx = toImage.a * u - toImage.b * v + toImage.tx - 0.5;
          const fy = toImage.b * u + toImage.a * v + toImage.ty - 0.5;
          const x0 = Math.floor(fx);
          const y0 = Math.floor(fy);
          const tx = fx - x0;
          const ty = fy - y0;
          const xa = clamp(x0, width);
          const xb = clamp(x0 + 1, width);
          const ya = clamp(y0, height);
          const yb = clamp(y0 + 1, height);
          pixel(xa, ya, (1 - tx) * (1 - ty));
          pixel(xb, ya, tx * (1 - ty));
          pixel(xa, yb, (1 - tx) * ty);
          pixel(xb, yb, tx * ty);
        }
      }
      const d = (oy * spec.width + ox) * outC;
      if (outC === 1) {
        // ITU-R BT.601 luma, as preprocessToBytes.
        out[d] = toByte((acc[0] * 299 + acc[1] * 587 + acc[2] * 114) / 1000 / samples);
      } else {
        for (let c = 0; c < 3; c++) out[d + c] = toByte(acc[c] / samples);
      }
    }
  }
  return out;
}

function clamp(i: number, size: number): number {
  return i < 0 ? 0 : i >= size ? size - 1 : i;
}

function toByte(value: number): number {
  return Math.min(255, Math.max(0, Math.round(value)));
}

/** `blazefaceInput` of contract/face/blazeface.ts at d9debff, its defaults made arguments. */
export function referenceBlazefaceInput(image: PixelBuffer, inputSize: number, padding: number): { input: Float32Array; transform: InputTransform } {
  const { width, height } = image;
  const side = Math.max(width, height) * padding;
  const scale = side / inputSize;
  const transform: InputTransform = { inputSize, scale, offsetX: -(side - width) / 2, offsetY: -(side - height) / 2 };
  const xs = coverage(inputSize, scale, transform.offsetX, width);
  const ys = coverage(inputSize, scale, transform.offsetY, height);
  const rgb = toRgb(image);

  // Horizontal pass over the image rows that any output row covers, then vertical; padding is black (weight left over).
  const rows = new Float32Array(height * inputSize * 3);
  for (let y = 0; y < height; y++) {
    for (let ox = 0; ox < inputSize; ox++) {
      const w = xs.weights[ox];
      let r = 0;
      let g = 0;
      let b = 0;
      let s = (y * width + xs.start[ox]) * 3;
      for (let k = 0; k < w.length; k++, s += 3) {
        r += rgb[s] * w[k];
        g += rgb[s + 1] * w[k];
        b += rgb[s + 2] * w[k];
      }
      const d = (y * inputSize + ox) * 3;
      rows[d] = r;
      rows[d + 1] = g;
      rows[d + 2] = b;
    }
  }
  const input = new Float32Array(inputSize * inputSize * 3);
  const stride = inputSize * 3;
  for (let oy = 0; oy < inputSize; oy++) {
    const w = ys.weights[oy];
    for (let i = 0; i < stride; i++) {
      let acc = 0;
      for (let k = 0; k < w.length; k++) acc += rows[(ys.start[oy] + k) * stride + i] * w[k];
      input[oy * stride + i] = acc / 127.5 - 1;
    }
  }
  return { input, transform };
}

function coverage(outSize: number, scale: number, offset: number, inSize: number): { start: Int32Array; weights: Float32Array[] } {
  const start = new Int32Array(outSize);
  const weights: Float32Array[] = [];
  for (let o = 0; o < outSize; o++) {
    const from = Math.max(0, o * scale + offset);
    const to = Math.min(inSize, (o + 1) * scale + offset);
    if (!(to > from)) {
      weights.push(new Float32Array(0));
      continue;
    }
    const first = Math.floor(from);
    const last = Math.ceil(to) - 1;
    const w = new Float32Array(last - first + 1);
    for (let i = first; i <= last; i++) w[i - first] = (Math.min(to, i + 1) - Math.max(from, i)) / scale;
    start[o] = first;
    weights.push(w);
  }
  return { start, weights };
}

function toRgb(image: PixelBuffer): Float32Array {
  const { data, channels } = image;
  const count = image.width * image.height;
  const out = new Float32Array(count * 3);
  for (let p = 0, s = 0, d = 0; p < count; p++, s += channels, d += 3) {
    if (channels === 1) {
      out[d] = out[d + 1] = out[d + 2] = data[s];
      continue;
    }
    const alpha = channels === 4 ? data[s + 3] : 255;
    const white = 255 * (255 - alpha);
    for (let c = 0; c < 3; c++) out[d + c] = alpha === 255 ? data[s + c] : (data[s + c] * alpha + white) / 255;
  }
  return out;
}

/** An image of random pixels; with 4 channels, alpha is often opaque, often clear, often between. */
export function randomImage(random: () => number, width: number, height: number, channels: 1 | 3 | 4): PixelBuffer {
  const data = new Uint8Array(width * height * channels);
  for (let i = 0; i < data.length; i++) data[i] = Math.floor(random() * 256);
  if (channels === 4) {
    for (let i = 3; i < data.length; i += 4) data[i] = [255, 0, data[i]][Math.floor(random() * 3)];
  }
  return { width, height, channels, data };
}
