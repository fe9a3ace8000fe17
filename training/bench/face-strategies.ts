/**
 * The detection strategies the face benches compare, over one detector whose outputs are remembered per input, so
 * that every strategy and minScore on an image costs each distinct detector input one model run.
 */
import { BLAZEFACE_INPUT_SIZE, blazefaceInput, CROP_PADDING, type OutputTensor } from '../../contract/face/blazeface.ts';
import { detectFaces, needsCropPass, type CropPass, type PreparedDetectorInput, type RunDetector } from '../../contract/face/photo.ts';
import type { PixelBuffer } from '../../contract/preprocess.ts';
import { eyeCentreError, matchDetections, type TrueFace } from '../data/faces.ts';

export interface Strategy {
  name: string;
  /** the first pass's padding */
  padding: number;
  cropPass: CropPass | null;
}

/** Large-face fractions tried for the second pass; Infinity: only when the first pass finds nothing. */
const LARGE_FACE_FRACTIONS = [0.35, 0.45, 0.55, Infinity];
const SECOND_PADDINGS = [CROP_PADDING, 2];

export const STRATEGIES: readonly Strategy[] = [
  { name: 'unpadded', padding: 1, cropPass: null },
  ...SECOND_PADDINGS.map((padding) => ({ name: `padded ${padding}`, padding, cropPass: null })),
  ...SECOND_PADDINGS.flatMap((padding) =>
    LARGE_FACE_FRACTIONS.map((largeFaceFraction) => ({
      name: `unpadded + ${padding} when ${Number.isFinite(largeFaceFraction) ? `none or side >= ${largeFaceFraction}` : 'none'}`,
      padding: 1,
      cropPass: { padding, cropPadding: padding, cropInputSize: BLAZEFACE_INPUT_SIZE, cropTrustedFraction: 0, largeFaceFraction },
    })),
  ),
];

/** A runner that remembers the outputs for each input it has seen (cleared per image by `forget`). */
export function rememberingRunner(run: RunDetector): { run: RunDetector; forget(): void; runs(): number } {
  let seen = new Map<string, readonly OutputTensor[]>();
  let count = 0;
  const key = (input: Float32Array): string => {
    let sum = 0;
    for (let i = 0; i < input.length; i += 13) sum += input[i] * ((i % 101) + 1);
    return `${input.length}:${sum}`;
  };
  return {
    async run(input, size) {
      const k = key(input);
      const known = seen.get(k);
      if (known !== undefined) return known;
      count++;
      const outputs = await run(input, size);
      seen.set(k, outputs);
      return outputs;
    },
    forget() {
      seen = new Map();
    },
    runs: () => count,
  };
}

export interface Tally {
  faces: number;
  found: number;
  duplicates: number;
  elsewhere: number;
  images: number;
  secondPasses: number;
  eyeErrorSum: number;
}

export const emptyTally = (): Tally => ({ faces: 0, found: 0, duplicates: 0, elsewhere: 0, images: 0, secondPasses: 0, eyeErrorSum: 0 });

/** The detector's input for an image at each first-pass padding, made once per image. */
export function preparedInputs(image: PixelBuffer): (padding: number) => PreparedDetectorInput {
  const made = new Map<number, PreparedDetectorInput>();
  return (padding) => {
    if (!made.has(padding)) made.set(padding, blazefaceInput(image, { padding }));
    return made.get(padding)!;
  };
}

/** Runs one strategy on one image and adds how it did against the known faces. */
export async function tallyImage(tally: Tally, image: PixelBuffer, prepare: (padding: number) => PreparedDetectorInput, truth: readonly TrueFace[], strategy: Strategy, run: RunDetector, minScore: number): Promise<void> {
  const search = { minScore, maxFaces: 20 };
  const prepared = prepare(strategy.padding);
  const faces = await detectFaces(image, run, search, prepared, prepared.transform.inputSize, strategy.cropPass);
  if (strategy.cropPass !== null) {
    const first = await detectFaces(image, run, search, prepared, prepared.transform.inputSize, null);
    if (needsCropPass(first, image, strategy.cropPass)) tally.secondPasses++;
  }
  const byScore = [...faces].sort((a, b) => b.score - a.score);
  const matches = matchDetections(byScore, truth);
  tally.images++;
  tally.faces += truth.length;
  matches.detectionOf.forEach((d, f) => {
    if (d < 0) return;
    tally.found++;
    tally.eyeErrorSum += eyeCentreError(byScore[d], truth[f]);
  });
  tally.duplicates += matches.duplicates;
  tally.elsewhere += matches.elsewhere;
}

export function describeTally(tally: Tally): string {
  const perHundred = (n: number): string => ((100 * n) / tally.images).toFixed(1);
  return [
    `found ${((100 * tally.found) / tally.faces).toFixed(2)}% (${tally.found}/${tally.faces})`,
    `false per 100 images ${perHundred(tally.duplicates + tally.elsewhere)} (duplicates ${perHundred(tally.duplicates)}, elsewhere ${perHundred(tally.elsewhere)})`,
    `eye error ${(tally.eyeErrorSum / Math.max(1, tally.found)).toFixed(3)} eye distances`,
    `second pass on ${((100 * tally.secondPasses) / tally.images).toFixed(1)}%`,
  ].join(', ');
}
