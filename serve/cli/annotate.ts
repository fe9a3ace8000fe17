/**
 * A photo with its answer drawn on it: each face's box and a short caption ("34 y, female, White") on a dark
 * background, or for a face not judged a dashed box and the reason. The overlay is an SVG composed by sharp onto
 * the photo as the server saw it (EXIF orientation applied), since boxes are in that frame.
 */
import sharp, { type Sharp } from 'sharp';
import type { FacePrediction, PhotoPrediction } from '../../contract/face/photo.ts';
import { readImageHeader } from '../../contract/image-header.ts';
import type { TaskPrediction } from '../../contract/prediction.ts';
import { decodeImage } from '../../imaging/decode.ts';

/** The tasks' order in a caption, as a person says it; tasks not listed follow in the answer's order. */
const CAPTION_ORDER = ['age', 'gender', 'ethnicity'];
const JUDGED_COLOUR = '#ffd400';
const NOT_JUDGED_COLOUR = '#ff5a5a';
const CAPTION_BACKGROUND = 'rgba(0,0,0,0.72)';
const CAPTION_TEXT_COLOUR = '#ffffff';
/** Stroke and font sizes as fractions of the photo's shorter side, with floors that keep them visible on small photos. */
const STROKE_FRACTION = 1 / 200;
const MIN_STROKE_PX = 2;
const FONT_FRACTION = 1 / 28;
const MIN_FONT_PX = 11;
/** DejaVu Sans Mono's advance is 0.602 em: a monospace font lets the background fit the caption without measuring text. */
const MONOSPACE_ADVANCE_EM = 0.61;
const CAPTION_PADDING_EM = 0.3;
const DASH_STROKES = 3;

const isTaskPrediction = (value: unknown): value is TaskPrediction =>
  typeof value === 'object' && value !== null && 'index' in value && 'probabilities' in value;

/** One face's caption: its tasks' answers ("34 y, female, White"), or why it was not judged (the reason's gist; the answer has it whole). */
export function faceCaption(face: FacePrediction): string {
  if (face.reason !== undefined) return `not judged: ${face.reason.split(':')[0]}`;
  const tasks = Object.entries(face).filter((entry): entry is [string, TaskPrediction] => isTaskPrediction(entry[1]));
  const rank = (task: string): number => (CAPTION_ORDER.includes(task) ? CAPTION_ORDER.indexOf(task) : CAPTION_ORDER.length);
  tasks.sort(([a], [b]) => rank(a) - rank(b));
  return tasks
    .map(([task, prediction]) => {
      if (task === 'age') return prediction.years === undefined ? `${prediction.group ?? prediction.index} y` : `${Math.round(prediction.years)} y`;
      return prediction.label ?? prediction.group ?? String(prediction.index);
    })
    .join(', ');
}

const escapeXml = (text: string): string =>
  text.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c] as string);

/** The caption cut to `maxChars`, with an ellipsis where it was cut. */
const fitCaption = (caption: string, maxChars: number): string => (caption.length <= maxChars ? caption : `${caption.slice(0, Math.max(0, maxChars - 1))}…`);

const clamp = (value: number, low: number, high: number): number => Math.min(Math.max(value, low), Math.max(low, high));

/** The SVG drawn over a photo of the answer's size: a box and a caption per face, the largest face's last so it is on top. */
export function overlaySvg(answer: PhotoPrediction): string {
  const { width, height } = answer.image;
  const shorter = Math.min(width, height);
  const stroke = Math.max(MIN_STROKE_PX, Math.round(shorter * STROKE_FRACTION));
  const fontSize = Math.max(MIN_FONT_PX, Math.round(shorter * FONT_FRACTION));
  const padding = Math.round(fontSize * CAPTION_PADDING_EM);
  const captionHeight = fontSize + 2 * padding;
  const shapes = [...answer.faces].reverse().map((face) => {
    const judged = face.reason === undefined;
    const colour = judged ? JUDGED_COLOUR : NOT_JUDGED_COLOUR;
    const { x, y, width: w, height: h } = face.box;
    const dash = judged ? '' : ` stroke-dasharray="${DASH_STROKES * stroke} ${2 * stroke}"`;
    const box = `<rect x="${x}" y="${y}" width="${w}" height="${h}" fill="none" stroke="${colour}" stroke-width="${stroke}"${dash}/>`;
    const caption = fitCaption(faceCaption(face), Math.floor((width - 2 * padding) / (fontSize * MONOSPACE_ADVANCE_EM)));
    const captionWidth = Math.ceil(caption.length * fontSize * MONOSPACE_ADVANCE_EM) + 2 * padding;
    // Above the box where it fits, else just inside its top edge; kept within the photo either way.
    const captionX = clamp(x - stroke / 2, 0, width - captionWidth);
    const captionY = y - stroke / 2 - captionHeight >= 0 ? y - stroke / 2 - captionHeight : clamp(y + stroke / 2, 0, height - captionHeight);
    const background = `<rect x="${captionX}" y="${captionY}" width="${captionWidth}" height="${captionHeight}" fill="${CAPTION_BACKGROUND}" stroke="${colour}" stroke-width="1"/>`;
    const text = `<text x="${captionX + padding}" y="${captionY + padding + fontSize * 0.8}" fill="${CAPTION_TEXT_COLOUR}">${escapeXml(caption)}</text>`;
    return `${box}${background}${text}`;
  });
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
    `font-family="DejaVu Sans Mono, monospace" font-size="${fontSize}">${shapes.join('')}</svg>`
  );
}

/** The photo as the server saw it (EXIF orientation applied); BMP, which libvips does not read, through the jimp decoder. */
async function orientedPhoto(bytes: Uint8Array): Promise<Sharp> {
  if (readImageHeader(bytes).format !== 'bmp') return sharp(bytes, { pages: 1 }).rotate();
  const pixels = await decodeImage(bytes);
  return sharp(pixels.data, { raw: { width: pixels.width, height: pixels.height, channels: pixels.channels as 1 | 2 | 3 | 4 } });
}

/** Writes the photo with its answer drawn on it to `outFile` as PNG, at the photo's own size. */
export async function writeAnnotatedPhoto(bytes: Uint8Array, answer: PhotoPrediction, outFile: string): Promise<void> {
  const photo = await (await orientedPhoto(bytes)).raw().toBuffer({ resolveWithObject: true });
  const { width, height } = photo.info;
  if (width !== answer.image.width || height !== answer.image.height) {
    throw new Error(`The photo reads as ${width}x${height} but was answered as ${answer.image.width}x${answer.image.height}; not drawing boxes in the wrong place`);
  }
  await sharp(photo.data, { raw: { width, height, channels: photo.info.channels } })
    .composite([{ input: Buffer.from(overlaySvg(answer)), top: 0, left: 0 }])
    .png()
    .toFile(outFile);
}
