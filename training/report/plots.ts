/**
 * The coursework notebook's figures as PNG files: training curves, confusion matrix heatmap and grids of
 * sample faces. Drawn on a plain RGBA buffer; jimp supplies the bundled Open Sans bitmap fonts (loaded from
 * node_modules, no network) and the PNG encoder.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Jimp, loadFont, measureText } from 'jimp';
import { SANS_10_BLACK, SANS_12_BLACK, SANS_14_BLACK, SANS_16_BLACK, SANS_8_BLACK } from 'jimp/fonts';

type Font = Awaited<ReturnType<typeof loadFont>>;
type FontSize = 8 | 10 | 12 | 14 | 16;
/** A colour as red, green, blue bytes. */
export type RGB = readonly [number, number, number];

const FONT_FILES: Record<FontSize, string> = {
  8: SANS_8_BLACK,
  10: SANS_10_BLACK,
  12: SANS_12_BLACK,
  14: SANS_14_BLACK,
  16: SANS_16_BLACK,
};

let fontsLoading: Promise<Map<FontSize, Font>> | undefined;

function loadFonts(): Promise<Map<FontSize, Font>> {
  const sizes: FontSize[] = [8, 10, 12, 14, 16];
  fontsLoading ??= Promise.all(sizes.map(async (size) => [size, await loadFont(FONT_FILES[size])] as const)).then(
    (entries) => new Map(entries),
  );
  return fontsLoading;
}

// matplotlib's tab:blue and tab:orange, the colours of the notebook's train and validation curves.
export const TRAIN_COLOR: RGB = [0x1f, 0x77, 0xb4];
export const VALIDATION_COLOR: RGB = [0xff, 0x7f, 0x0e];
export const CORRECT_COLOR: RGB = [0x2c, 0xa0, 0x2c];
export const WRONG_COLOR: RGB = [0xd6, 0x27, 0x28];
/** matplotlib's tab:green, for the line that marks the kept epoch on the curves. */
export const KEPT_EPOCH_COLOR: RGB = [0x2c, 0xa0, 0x2c];
const WHITE: RGB = [255, 255, 255];
const TEXT: RGB = [0x22, 0x22, 0x22];
const MUTED_TEXT: RGB = [0x55, 0x55, 0x55];
const AXIS: RGB = [0x44, 0x44, 0x44];
const GRID: RGB = [0xe6, 0xe6, 0xe6];

/** A rectangle in image pixels: left, top, width, height. */
export interface Box {
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface PlotFile {
  file: string;
  width: number;
  height: number;
}

interface TextOptions {
  size?: FontSize;
  color?: RGB;
  /** which point of the text (x, y) is: horizontally */
  align?: 'left' | 'center' | 'right';
  /** and vertically */
  baseline?: 'top' | 'middle' | 'bottom';
  /** rotate 90 degrees counter-clockwise, reading bottom to top */
  vertical?: boolean;
}

/** An RGBA pixel buffer with the few drawing operations the figures need, all clipped to the image. */
class Canvas {
  readonly image: InstanceType<typeof Jimp>;
  readonly width: number;
  readonly height: number;
  private readonly data: Buffer;

  constructor(
    width: number,
    height: number,
    private readonly fonts: Map<FontSize, Font>,
  ) {
    this.width = Math.round(width);
    this.height = Math.round(height);
    this.image = new Jimp({ width: this.width, height: this.height, color: 0xffffffff });
    this.data = this.image.bitmap.data;
  }

  /** Mixes `color` into one pixel with opacity `alpha` (0 to 1). */
  blend(x: number, y: number, color: RGB, alpha = 1): void {
    if (x < 0 || y < 0 || x >= this.width || y >= this.height || alpha <= 0) return;
    const i = (y * this.width + x) * 4;
    const a = Math.min(1, alpha);
    for (let c = 0; c < 3; c++) this.data[i + c] = Math.round(this.data[i + c] * (1 - a) + color[c] * a);
    this.data[i + 3] = 255;
  }

  pixel(x: number, y: number): RGB {
    const i = (y * this.width + x) * 4;
    return [this.data[i], this.data[i + 1], this.data[i + 2]];
  }

  fillRect(x: number, y: number, width: number, height: number, color: RGB): void {
    const x0 = Math.max(0, Math.round(x));
    const y0 = Math.max(0, Math.round(y));
    const x1 = Math.min(this.width, Math.round(x + width));
    const y1 = Math.min(this.height, Math.round(y + height));
    for (let py = y0; py < y1; py++) for (let px = x0; px < x1; px++) this.blend(px, py, color);
  }

  /** A frame of `thickness` pixels drawn inside the box. */
  strokeRect(box: Box, color: RGB, thickness = 1): void {
    const { x, y, width, height } = box;
    this.fillRect(x, y, width, thickness, color);
    this.fillRect(x, y + height - thickness, width, thickness, color);
    this.fillRect(x, y, thickness, height, color);
    this.fillRect(x + width - thickness, y, thickness, height, color);
  }

  /**
   * An anti-aliased line through the points, `lineWidth` pixels wide, with optional round markers.
   * Coverage is collected per pixel first (maximum over segments) so joints are not painted twice.
   */
  polyline(points: readonly (readonly [number, number])[], color: RGB, lineWidth: number, markerRadius = 0): void {
    const coverage = new Map<number, number>();
    const half = lineWidth / 2;
    const cover = (px: number, py: number, value: number): void => {
      if (px < 0 || py < 0 || px >= this.width || py >= this.height || value <= 0) return;
      const key = py * this.width + px;
      if ((coverage.get(key) ?? 0) < value) coverage.set(key, Math.min(1, value));
    };
    const stamp = (ax: number, ay: number, bx: number, by: number, radius: number): void => {
      const dx = bx - ax;
      const dy = by - ay;
      const lengthSquared = dx * dx + dy * dy;
      const x0 = Math.floor(Math.min(ax, bx) - radius - 1);
      const x1 = Math.ceil(Math.max(ax, bx) + radius + 1);
      const y0 = Math.floor(Math.min(ay, by) - radius - 1);
      const y1 = Math.ceil(Math.max(ay, by) + radius + 1);
      for (let py = y0; py <= y1; py++) {
        for (let px = x0; px <= x1; px++) {
          // distance from the pixel centre to the segment
          const cx = px + 0.5;
          const cy = py + 0.5;
          const t = lengthSquared === 0 ? 0 : Math.max(0, Math.min(1, ((cx - ax) * dx + (cy - ay) * dy) / lengthSquared));
          const distance = Math.hypot(cx - (ax + t * dx), cy - (ay + t * dy));
          cover(px, py, radius + 0.5 - distance);
        }
      }
    };
    for (let i = 0; i < points.length; i++) {
      const [x, y] = points[i];
      if (i + 1 < points.length) stamp(x, y, points[i + 1][0], points[i + 1][1], half);
      else if (points.length === 1) stamp(x, y, x, y, half);
      if (markerRadius > 0) stamp(x, y, x, y, markerRadius);
    }
    for (const [key, value] of coverage) this.blend(key % this.width, Math.floor(key / this.width), color, value);
  }

  font(size: FontSize): Font {
    const font = this.fonts.get(size);
    if (font === undefined) throw new Error(`No bitmap font of size ${size} is loaded`);
    return font;
  }

  /** Width in pixels of `text` in the given font size (before any rotation). */
  textWidth(text: string, size: FontSize = 12): number {
    const font = this.font(size);
    return measureText(font, printable(font, text));
  }

  textHeight(size: FontSize = 12): number {
    return this.font(size).common.lineHeight;
  }

  /** Draws text in any colour: the black bitmap font is printed on a transparent image and used as coverage. */
  text(text: string, x: number, y: number, options: TextOptions = {}): void {
    const { size = 12, color = TEXT, align = 'left', baseline = 'top', vertical = false } = options;
    const font = this.font(size);
    const clean = printable(font, text);
    const width = measureText(font, clean);
    const height = font.common.lineHeight;
    if (width <= 0) return;
    const glyphs = new Jimp({ width, height, color: 0x00000000 });
    glyphs.print({ font, x: 0, y: 0, text: clean });
    const alpha = glyphs.bitmap.data;
    // Size of the drawn block on the page: a vertical text is `height` wide and `width` tall.
    const blockWidth = vertical ? height : width;
    const blockHeight = vertical ? width : height;
    const left = Math.round(align === 'left' ? x : align === 'center' ? x - blockWidth / 2 : x - blockWidth);
    const top = Math.round(baseline === 'top' ? y : baseline === 'middle' ? y - blockHeight / 2 : y - blockHeight);
    for (let gy = 0; gy < height; gy++) {
      for (let gx = 0; gx < width; gx++) {
        const a = alpha[(gy * width + gx) * 4 + 3] / 255;
        if (a === 0) continue;
        // Counter-clockwise: the text's x runs up the page, its y runs right.
        if (vertical) this.blend(left + gy, top + (width - 1 - gx), color, a);
        else this.blend(left + gx, top + gy, color, a);
      }
    }
  }

  async save(file: string): Promise<PlotFile> {
    await mkdir(dirname(file), { recursive: true });
    const png = await this.image.getBuffer('image/png');
    // a view, because jimp's Buffer type comes from an older @types/node than writeFile's
    await writeFile(file, new Uint8Array(png.buffer, png.byteOffset, png.byteLength));
    return { file, width: this.width, height: this.height };
  }
}

/** The text with characters the bitmap font lacks replaced by "?". */
function printable(font: Font, text: string): string {
  return Array.from(text, (ch) => (ch in font.chars ? ch : '?')).join('');
}

/** `text` shortened with ".." until it fits `maxWidth` pixels. */
function fitText(canvas: Canvas, text: string, maxWidth: number, size: FontSize): string {
  if (canvas.textWidth(text, size) <= maxWidth) return text;
  let shortened = text;
  while (shortened.length > 1 && canvas.textWidth(`${shortened}..`, size) > maxWidth) shortened = shortened.slice(0, -1);
  return `${shortened}..`;
}

/** Tick positions at 1, 2 or 5 times a power of ten covering [min, max] with about `count` ticks. */
export function niceTicks(min: number, max: number, count = 6): { ticks: number[]; min: number; max: number; decimals: number } {
  if (!(max > min)) {
    const pad = Math.abs(min) > 0 ? Math.abs(min) * 0.1 : 0.5;
    return niceTicks(min - pad, max + pad, count);
  }
  const rough = (max - min) / Math.max(1, count - 1);
  const power = 10 ** Math.floor(Math.log10(rough));
  const fraction = rough / power;
  const step = (fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10) * power;
  const lo = Math.floor(min / step + 1e-9) * step;
  const hi = Math.ceil(max / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let k = 0; lo + k * step <= hi + step * 1e-9; k++) ticks.push(Number((lo + k * step).toPrecision(12)));
  const decimals = Math.max(0, Math.ceil(-Math.log10(step) - 1e-9));
  return { ticks, min: lo, max: hi, decimals };
}

export interface TrainingHistory {
  epoch: number[];
  loss: number[];
  /** may be empty when training had no validation set */
  valLoss: number[];
  accuracy: number[];
  /** may be empty when training had no validation set */
  valAccuracy: number[];
}

export interface HistoryPlot extends PlotFile {
  /** plot areas of the loss and accuracy panels */
  panels: { loss: Box; accuracy: Box };
  /** where the kept epoch's line is drawn (its x in both panels) and the boxes of its "kept: epoch N" labels */
  kept?: { x: { loss: number; accuracy: number }; labels: Box[] };
}

/** What the two loss curves measure, where training's loss is not the quantity validation reports. */
export interface LossLegend {
  /** legend entry of the training curve, e.g. "train: label-smoothed cross-entropy, augmented faces" */
  train: string;
  /** legend entry of the validation curve */
  validation: string;
  /** a line under the panel's title, e.g. that the two are not comparable */
  note?: string;
}

export interface HistoryPlotOptions {
  /** default 1000 */
  width?: number;
  /** default 420 */
  height?: number;
  /** the epoch whose weights were kept: a dashed vertical line labelled "kept: epoch N" in both panels */
  keptEpoch?: number;
  /** what the loss curves are (default: "train" and "validation", the same loss) */
  loss?: LossLegend;
}

interface Series {
  name: string;
  color: RGB;
  values: readonly number[];
}

/**
 * Loss (left) and accuracy (right) per epoch, train and validation, like the notebook's two plots; the kept
 * epoch marked in both, and the loss legend saying what each loss is where the two are different quantities.
 */
export async function plotHistory(
  history: TrainingHistory,
  file: string,
  title: string,
  options: HistoryPlotOptions = {},
): Promise<HistoryPlot> {
  const n = history.epoch.length;
  for (const key of ['loss', 'accuracy', 'valLoss', 'valAccuracy'] as const) {
    const length = history[key].length;
    const optional = key === 'valLoss' || key === 'valAccuracy';
    if (length !== n && !(optional && length === 0)) {
      throw new RangeError(`history.${key} has ${length} values but history.epoch has ${n}${optional ? ' (or leave it empty)' : ''}`);
    }
  }
  const { width = 1000, height = 420, keptEpoch, loss } = options;
  const canvas = new Canvas(width, height, await loadFonts());
  canvas.text(title, width / 2, 10, { size: 16, align: 'center' });
  const panelWidth = width / 2;
  // A described loss has its legend above the panel, where long entries hide no curve; the panels' titles rise with it.
  const legendRows = loss === undefined ? 0 : 2 + (loss.note === undefined ? 0 : 1);
  const titleOffset = 24 + legendRows * LEGEND_ROW_PX;
  const top = 62 + legendRows * LEGEND_ROW_PX;
  const bottom = height - 52;
  const boxFor = (panel: number): Box => {
    const x = Math.round(panel * panelWidth + 62);
    return { x, y: top, width: Math.round((panel + 1) * panelWidth - 24) - x, height: bottom - top };
  };
  const panels = { loss: boxFor(0), accuracy: boxFor(1) };
  const lossPanel = drawPanel(canvas, panels.loss, { name: 'loss', titleOffset, legendAbove: loss !== undefined, note: loss?.note }, history.epoch, [
    { name: loss?.train ?? 'train', color: TRAIN_COLOR, values: history.loss },
    { name: loss?.validation ?? 'validation', color: VALIDATION_COLOR, values: history.valLoss },
  ], undefined, keptEpoch);
  const accuracyPanel = drawPanel(canvas, panels.accuracy, { name: 'accuracy', titleOffset }, history.epoch, [
    { name: 'train', color: TRAIN_COLOR, values: history.accuracy },
    { name: 'validation', color: VALIDATION_COLOR, values: history.valAccuracy },
  ], [0, 1], keptEpoch);
  const kept = lossPanel.kept !== undefined && accuracyPanel.kept !== undefined
    ? { x: { loss: lossPanel.kept.x, accuracy: accuracyPanel.kept.x }, labels: [lossPanel.kept.label, accuracyPanel.kept.label] }
    : undefined;
  return { ...(await canvas.save(file)), panels, ...(kept === undefined ? {} : { kept }) };
}

const KEPT_LABEL_SIZE: FontSize = 10;
/** Height of a row of the legend drawn above a panel. */
const LEGEND_ROW_PX = 15;
const DASH_PX = 5;

/** A dashed vertical line at `x` over the plot box, and its label at the top, beside it on the side with room. */
function drawKeptEpoch(canvas: Canvas, box: Box, x: number, epoch: number): Box {
  for (let y = box.y + 1; y < box.y + box.height; y += 2 * DASH_PX) canvas.fillRect(x - 1, y, 2, Math.min(DASH_PX, box.y + box.height - y), KEPT_EPOCH_COLOR);
  const text = `kept: epoch ${epoch}`;
  const width = canvas.textWidth(text, KEPT_LABEL_SIZE);
  const height = canvas.textHeight(KEPT_LABEL_SIZE);
  const left = x + 4 + width <= box.x + box.width - 2 ? x + 4 : x - 4 - width;
  const label = { x: Math.round(left) - 2, y: box.y + 3, width: Math.round(width) + 4, height };
  canvas.fillRect(label.x, label.y, label.width, label.height, WHITE);
  canvas.text(text, left, box.y + 3, { size: KEPT_LABEL_SIZE, color: KEPT_EPOCH_COLOR });
  return label;
}

function drawPanel(
  canvas: Canvas,
  box: Box,
  /** the panel's title, `titleOffset` pixels above the plot; `legendAbove`: the legend in rows between the two, then the note */
  heading: { name: string; titleOffset: number; legendAbove?: boolean; note?: string },
  epochs: readonly number[],
  allSeries: readonly Series[],
  clamp?: readonly [number, number],
  keptEpoch?: number,
): { kept?: { x: number; label: Box } } {
  const series = allSeries.filter((s) => s.values.length > 0);
  const finite = series.flatMap((s) => s.values.filter(Number.isFinite));
  let yMin = finite.length > 0 ? Math.min(...finite) : 0;
  let yMax = finite.length > 0 ? Math.max(...finite) : 1;
  const yPad = (yMax - yMin) * 0.05;
  yMin -= yPad;
  yMax += yPad;
  if (clamp !== undefined && finite.every((v) => v >= clamp[0] && v <= clamp[1])) {
    yMin = Math.max(clamp[0], yMin);
    yMax = Math.min(clamp[1], yMax);
  } else if (finite.every((v) => v >= 0)) {
    yMin = Math.max(0, yMin);
  }
  const y = niceTicks(yMin, yMax, 6);
  const xFinite = epochs.filter(Number.isFinite);
  const xLo = xFinite.length > 0 ? Math.min(...xFinite) : 0;
  const xHi = xFinite.length > 0 ? Math.max(...xFinite) : 1;
  const xPad = xHi > xLo ? (xHi - xLo) * 0.03 : 0.5;
  const xMin = xLo - xPad;
  const xMax = xHi + xPad;
  const xTicks = niceTicks(xLo, xHi, 8).ticks.filter((t) => Number.isInteger(t) && t >= xMin && t <= xMax);
  const px = (epoch: number): number => box.x + ((epoch - xMin) / (xMax - xMin)) * box.width;
  const py = (value: number): number => box.y + box.height - ((value - y.min) / (y.max - y.min)) * box.height;

  canvas.text(heading.name, box.x + box.width / 2, box.y - heading.titleOffset, { size: 14, align: 'center' });
  for (const tick of y.ticks) {
    const ty = Math.round(py(tick));
    canvas.fillRect(box.x, ty, box.width, 1, GRID);
    canvas.fillRect(box.x - 5, ty, 5, 1, AXIS);
    canvas.text(tick.toFixed(y.decimals), box.x - 8, ty, { size: 12, align: 'right', baseline: 'middle', color: MUTED_TEXT });
  }
  for (const tick of xTicks) {
    const tx = Math.round(px(tick));
    canvas.fillRect(tx, box.y, 1, box.height, GRID);
    canvas.fillRect(tx, box.y + box.height, 1, 5, AXIS);
    canvas.text(String(tick), tx, box.y + box.height + 8, { size: 12, align: 'center', color: MUTED_TEXT });
  }
  canvas.text('epoch', box.x + box.width / 2, box.y + box.height + 28, { size: 12, align: 'center' });
  canvas.strokeRect({ x: box.x, y: box.y, width: box.width + 1, height: box.height + 1 }, AXIS);

  const markerRadius = epochs.length <= 40 ? 3 : 0;
  const pixelSeries = series.map((s) => {
    // NaN or infinite values (a diverged epoch) break the line instead of bending it off the chart.
    const runs: [number, number][][] = [[]];
    s.values.forEach((value, i) => {
      if (Number.isFinite(value) && Number.isFinite(epochs[i])) runs[runs.length - 1].push([px(epochs[i]), py(value)]);
      else if (runs[runs.length - 1].length > 0) runs.push([]);
    });
    return { ...s, runs: runs.filter((r) => r.length > 0) };
  });
  const keptShown = keptEpoch !== undefined && Number.isFinite(keptEpoch) && keptEpoch >= xMin && keptEpoch <= xMax;
  const kept = keptShown ? { x: Math.round(px(keptEpoch)), label: drawKeptEpoch(canvas, box, Math.round(px(keptEpoch)), keptEpoch) } : undefined;
  for (const s of pixelSeries) for (const run of s.runs) canvas.polyline(run, s.color, 2, markerRadius);
  if (heading.legendAbove === true) drawLegendAbove(canvas, box, pixelSeries, markerRadius, heading.note);
  else drawLegend(canvas, box, pixelSeries, markerRadius, kept === undefined ? [] : [kept.label]);
  return kept === undefined ? {} : { kept };
}

/** The legend as rows between the panel's title and the plot, the last row a muted `note`. */
function drawLegendAbove(canvas: Canvas, box: Box, series: readonly Series[], markerRadius: number, note?: string): void {
  const size: FontSize = 10;
  const rows = series.length + (note === undefined ? 0 : 1);
  const rowY = (row: number): number => box.y - 6 - (rows - row - 0.5) * LEGEND_ROW_PX;
  // the rows may reach into the gap between the panels, where nothing else is drawn at that height
  const textWidth = box.width + 60;
  series.forEach((s, i) => {
    const y = rowY(i);
    canvas.polyline([[box.x - 20, y], [box.x + 4, y]], s.color, 2, 0);
    if (markerRadius > 0) canvas.polyline([[box.x - 8, y]], s.color, 0, markerRadius);
    canvas.text(fitText(canvas, s.name, textWidth, size), box.x + 10, y, { size, baseline: 'middle' });
  });
  if (note !== undefined) canvas.text(fitText(canvas, note, textWidth, size), box.x + 10, rowY(series.length), { size, baseline: 'middle', color: MUTED_TEXT });
}

/** A legend box in whichever inner corner of the plot covers the fewest data points, and none of the boxes in `avoid`. */
function drawLegend(canvas: Canvas, box: Box, series: readonly (Series & { runs: [number, number][][] })[], markerRadius: number, avoid: readonly Box[] = []): void {
  if (series.length === 0) return;
  const size: FontSize = 12;
  const rowHeight = 18;
  const margin = 8;
  const swatchWidth = 16 + 28 + 6;
  const names = series.map((s) => fitText(canvas, s.name, box.width - swatchWidth - 2 * margin, size));
  const legendWidth = swatchWidth + Math.max(...names.map((name) => canvas.textWidth(name, size)));
  const legendHeight = 8 + rowHeight * series.length;
  const corners: Box[] = [
    { x: box.x + box.width - legendWidth - margin, y: box.y + margin, width: legendWidth, height: legendHeight },
    { x: box.x + box.width - legendWidth - margin, y: box.y + box.height - legendHeight - margin, width: legendWidth, height: legendHeight },
    { x: box.x + margin, y: box.y + margin, width: legendWidth, height: legendHeight },
    { x: box.x + margin, y: box.y + box.height - legendHeight - margin, width: legendWidth, height: legendHeight },
  ];
  const overlap = (corner: Box): number => {
    let count = 0;
    for (const s of series) {
      for (const run of s.runs) {
        for (let i = 0; i < run.length; i++) {
          // sample each segment so that lines crossing the box count, not only their points
          const [ax, ay] = run[i];
          const [bx, by] = run[Math.min(i + 1, run.length - 1)];
          for (let t = 0; t <= 1; t += 0.1) {
            const x = ax + (bx - ax) * t;
            const y = ay + (by - ay) * t;
            if (x >= corner.x - 4 && x <= corner.x + corner.width + 4 && y >= corner.y - 4 && y <= corner.y + corner.height + 4) count++;
          }
        }
      }
    }
    return count;
  };
  const intersects = (a: Box, b: Box): boolean => a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height;
  // covering a label costs more than covering every data point
  const scores = corners.map((corner) => overlap(corner) + (avoid.some((a) => intersects(a, corner)) ? 1e9 : 0));
  const legend = corners[scores.indexOf(Math.min(...scores))];
  canvas.fillRect(legend.x, legend.y, legend.width, legend.height, WHITE);
  canvas.strokeRect(legend, [0xcc, 0xcc, 0xcc]);
  series.forEach((s, i) => {
    const rowY = legend.y + 4 + rowHeight * i + rowHeight / 2;
    canvas.polyline([[legend.x + 8, rowY], [legend.x + 36, rowY]], s.color, 2, 0);
    if (markerRadius > 0) canvas.polyline([[legend.x + 22, rowY]], s.color, 0, markerRadius);
    canvas.text(names[i], legend.x + 42, rowY, { size, baseline: 'middle' });
  });
}

// matplotlib's "Blues" colour map (ColorBrewer), light to dark.
const BLUES: readonly RGB[] = [
  [0xf7, 0xfb, 0xff],
  [0xde, 0xeb, 0xf7],
  [0xc6, 0xdb, 0xef],
  [0x9e, 0xca, 0xe1],
  [0x6b, 0xae, 0xd6],
  [0x42, 0x92, 0xc6],
  [0x21, 0x71, 0xb5],
  [0x08, 0x51, 0x9c],
  [0x08, 0x30, 0x6b],
];

/** The Blues colour of a value from 0 (lightest) to 1 (darkest). */
export function blues(value: number): RGB {
  const v = Math.max(0, Math.min(1, Number.isFinite(value) ? value : 0)) * (BLUES.length - 1);
  const i = Math.min(BLUES.length - 2, Math.floor(v));
  const t = v - i;
  const mix = (c: number): number => Math.round(BLUES[i][c] + (BLUES[i + 1][c] - BLUES[i][c]) * t);
  return [mix(0), mix(1), mix(2)];
}

export interface ConfusionMatrixPlot extends PlotFile {
  /** cells[true][predicted] */
  cells: Box[][];
}

/**
 * Heatmap of a confusion matrix: true classes down the side, predicted across, each cell's count printed
 * on it with its share of the row; the colour is the row share, so every class's recall reads the same way
 * however many faces it has.
 */
export async function plotConfusionMatrix(
  cm: readonly (readonly number[])[],
  labels: readonly string[],
  file: string,
  title: string,
): Promise<ConfusionMatrixPlot> {
  const n = labels.length;
  if (n === 0 || cm.length !== n || cm.some((row) => row.length !== n)) {
    throw new RangeError(`The confusion matrix must be ${n} x ${n} to match the ${n} labels`);
  }
  const fonts = await loadFonts();
  const measure = new Canvas(1, 1, fonts);
  const cell = n <= 2 ? 110 : n <= 6 ? 84 : n <= 10 ? 62 : 44;
  const labelSize: FontSize = 14;
  const labelWidth = Math.max(...labels.map((l) => measure.textWidth(l, labelSize)));
  // predicted-class names that would not fit under their column are written bottom to top
  const verticalColumns = labelWidth > cell - 6;
  const columnLabelHeight = verticalColumns ? labelWidth : measure.textHeight(labelSize);
  const grid = n * cell;
  const left = 16 + measure.textHeight(14) + 10 + labelWidth + 10;
  const top = 16 + measure.textHeight(16) + 18;
  const barGap = 24;
  const barWidth = 16;
  const rightPart = barGap + barWidth + 8 + measure.textWidth('100%', 12) + 16;
  const bottomPart = 8 + columnLabelHeight + 8 + measure.textHeight(14) + 14;
  const width = Math.max(left + grid + rightPart, measure.textWidth(title, 16) + 32);
  const height = top + grid + bottomPart;
  const canvas = new Canvas(width, height, fonts);
  const gridLeft = left + Math.max(0, Math.floor((width - (left + grid + rightPart)) / 2));

  canvas.text(title, width / 2, 16, { size: 16, align: 'center' });
  const cells: Box[][] = [];
  const countSize: FontSize = cell >= 60 ? 16 : 12;
  for (let t = 0; t < n; t++) {
    const rowTotal = cm[t].reduce((sum, c) => sum + c, 0);
    cells.push([]);
    for (let p = 0; p < n; p++) {
      const share = rowTotal === 0 ? 0 : cm[t][p] / rowTotal;
      // one pixel of white between cells keeps neighbouring equal colours apart
      const box: Box = { x: gridLeft + p * cell, y: top + t * cell, width: cell - 1, height: cell - 1 };
      cells[t].push(box);
      canvas.fillRect(box.x, box.y, box.width, box.height, blues(share));
      const ink: RGB = share > 0.5 ? WHITE : TEXT;
      const cx = box.x + box.width / 2;
      const cy = box.y + box.height / 2;
      if (cell >= 56 && cm[t][p] > 0) {
        canvas.text(String(cm[t][p]), cx, cy - 2, { size: countSize, align: 'center', baseline: 'bottom', color: ink });
        canvas.text(`${(share * 100).toFixed(share > 0 && share < 0.1 ? 1 : 0)}%`, cx, cy + 2, { size: 12, align: 'center', color: ink });
      } else {
        canvas.text(String(cm[t][p]), cx, cy, { size: countSize, align: 'center', baseline: 'middle', color: ink });
      }
    }
    canvas.text(labels[t], gridLeft - 10, top + t * cell + cell / 2, { size: labelSize, align: 'right', baseline: 'middle' });
  }
  for (let p = 0; p < n; p++) {
    const cx = gridLeft + p * cell + cell / 2;
    canvas.text(labels[p], cx, top + grid + 8, { size: labelSize, align: 'center', vertical: verticalColumns });
  }
  canvas.text('predicted', gridLeft + grid / 2, top + grid + 8 + columnLabelHeight + 8, { size: 14, align: 'center', color: MUTED_TEXT });
  canvas.text('true', gridLeft - labelWidth - 20, top + grid / 2, { size: 14, align: 'right', baseline: 'middle', vertical: true, color: MUTED_TEXT });

  // Colour bar for the row share.
  const barX = gridLeft + grid + barGap;
  for (let i = 0; i < grid; i++) canvas.fillRect(barX, top + i, barWidth, 1, blues(1 - i / (grid - 1)));
  canvas.strokeRect({ x: barX, y: top, width: barWidth, height: grid }, [0xbb, 0xbb, 0xbb]);
  for (const share of [0, 0.5, 1]) {
    const ty = top + Math.round((1 - share) * (grid - 1));
    canvas.fillRect(barX + barWidth, ty, 4, 1, AXIS);
    canvas.text(`${share * 100}%`, barX + barWidth + 7, ty, { size: 12, baseline: 'middle', color: MUTED_TEXT });
  }
  return { ...(await canvas.save(file)), cells };
}

export interface FaceSample {
  /** HWC bytes, 0-255 */
  pixels: Uint8Array;
  height: number;
  width: number;
  /** 1 (grayscale) or 3 (RGB) */
  channels: number;
  predicted: string;
  truth: string;
  correct: boolean;
}

export interface SampleGridOptions {
  /** faces per row; default about the square root of the number of faces */
  columns?: number;
  /** whole-number upscaling (nearest neighbour); default makes a face about 144 pixels */
  scale?: number;
}

export interface SampleGridPlot extends PlotFile {
  /** where each face image was drawn, inside its frame */
  faces: Box[];
}

/** Faces in a grid, upscaled, each framed green (right) or red (wrong) and captioned with predicted and true labels. */
export async function plotSampleGrid(
  samples: readonly FaceSample[],
  file: string,
  title: string,
  options: SampleGridOptions = {},
): Promise<SampleGridPlot> {
  samples.forEach((s, i) => {
    if (s.channels !== 1 && s.channels !== 3) throw new RangeError(`samples[${i}].channels is ${s.channels}; expected 1 or 3`);
    if (!Number.isInteger(s.height) || !Number.isInteger(s.width) || s.height < 1 || s.width < 1) {
      throw new RangeError(`samples[${i}] has size ${s.height} x ${s.width}; expected whole numbers of at least 1`);
    }
    const expected = s.height * s.width * s.channels;
    if (s.pixels.length !== expected) {
      throw new RangeError(`samples[${i}].pixels has ${s.pixels.length} bytes; ${s.height} x ${s.width} x ${s.channels} needs ${expected}`);
    }
  });
  const fonts = await loadFonts();
  const faceHeight = Math.max(1, ...samples.map((s) => s.height));
  const faceWidth = Math.max(1, ...samples.map((s) => s.width));
  const scale = options.scale ?? Math.max(1, Math.floor(144 / Math.max(faceHeight, faceWidth)));
  if (!Number.isInteger(scale) || scale < 1) throw new RangeError(`options.scale is ${scale}; expected a whole number of at least 1`);
  const columns = Math.max(1, Math.min(samples.length, options.columns ?? Math.ceil(Math.sqrt(samples.length))));
  const rows = Math.ceil(samples.length / columns);
  const frame = 3;
  const captionSize: FontSize = 12;
  const measure = new Canvas(1, 1, fonts);
  const lineHeight = measure.textHeight(captionSize);
  const tileWidth = Math.max(faceWidth * scale + 2 * frame, 110);
  const tileHeight = faceHeight * scale + 2 * frame + 4 + 2 * lineHeight;
  const gap = 16;
  const margin = 20;
  const header = 16 + 22 + 20 + 12;
  const width = Math.max(margin * 2 + columns * tileWidth + (columns - 1) * gap, measure.textWidth(title, 16) + 2 * margin, 300);
  const height = samples.length === 0 ? header + 60 : header + rows * tileHeight + (rows - 1) * gap + margin;
  const canvas = new Canvas(width, height, fonts);
  const right = samples.filter((s) => s.correct).length;

  canvas.text(title, width / 2, 16, { size: 16, align: 'center' });
  const legend = [
    { color: CORRECT_COLOR, text: `correct (${right})` },
    { color: WRONG_COLOR, text: `misclassified (${samples.length - right})` },
  ];
  const legendWidth = legend.reduce((sum, l) => sum + 18 + canvas.textWidth(l.text, 12) + 20, -20);
  let legendX = Math.round(width / 2 - legendWidth / 2);
  for (const l of legend) {
    canvas.strokeRect({ x: legendX, y: 42, width: 12, height: 12 }, l.color, 3);
    canvas.text(l.text, legendX + 18, 48, { size: 12, baseline: 'middle', color: MUTED_TEXT });
    legendX += 18 + canvas.textWidth(l.text, 12) + 20;
  }
  if (samples.length === 0) canvas.text('no faces to show', width / 2, header + 10, { size: 14, align: 'center', color: MUTED_TEXT });

  const gridLeft = Math.round((width - (columns * tileWidth + (columns - 1) * gap)) / 2);
  const faces: Box[] = [];
  samples.forEach((s, i) => {
    const tileX = gridLeft + (i % columns) * (tileWidth + gap);
    const tileY = header + Math.floor(i / columns) * (tileHeight + gap);
    const drawnWidth = s.width * scale;
    const drawnHeight = s.height * scale;
    const faceBox: Box = { x: tileX + Math.round((tileWidth - drawnWidth) / 2), y: tileY + frame, width: drawnWidth, height: drawnHeight };
    faces.push(faceBox);
    const color = s.correct ? CORRECT_COLOR : WRONG_COLOR;
    canvas.strokeRect({ x: faceBox.x - frame, y: faceBox.y - frame, width: drawnWidth + 2 * frame, height: drawnHeight + 2 * frame }, color, frame);
    for (let y = 0; y < s.height; y++) {
      for (let x = 0; x < s.width; x++) {
        const i0 = (y * s.width + x) * s.channels;
        const rgb: RGB = s.channels === 1 ? [s.pixels[i0], s.pixels[i0], s.pixels[i0]] : [s.pixels[i0], s.pixels[i0 + 1], s.pixels[i0 + 2]];
        canvas.fillRect(faceBox.x + x * scale, faceBox.y + y * scale, scale, scale, rgb);
      }
    }
    const captionY = faceBox.y + drawnHeight + frame + 4;
    const centre = tileX + tileWidth / 2;
    const fit = (text: string): string => fitText(canvas, text, tileWidth, captionSize);
    canvas.text(fit(`pred: ${s.predicted}`), centre, captionY, { size: captionSize, align: 'center', color: s.correct ? TEXT : darker(WRONG_COLOR) });
    canvas.text(fit(`true: ${s.truth}`), centre, captionY + lineHeight, { size: captionSize, align: 'center', color: MUTED_TEXT });
  });
  return { ...(await canvas.save(file)), faces };
}

function darker(color: RGB): RGB {
  return [Math.round(color[0] * 0.8), Math.round(color[1] * 0.8), Math.round(color[2] * 0.8)];
}
