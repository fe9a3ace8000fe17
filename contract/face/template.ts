/**
 * Where the detector's keypoints and box sit in UTKFace's own aligned crops: the mean over 1996 of 2000
 * training-split crops (the others had no face scoring 0.5), in the crops' 200x200 pixels. Written by
 * `npx tsx training/cli/face-template.ts --limit 2000 --padding 1.5 --out contract/face/template.ts`.
 */
import type { Box } from './blazeface.ts';

export const FACE_TEMPLATE = {
  size: 200,
  rightEye: [56.3, 57.5],
  leftEye: [135.4, 57.1],
  nose: [94.2, 108.8],
  mouth: [95.2, 145.9],
  box: { x: -1.9, y: -5.7, width: 200.1, height: 200.1 },
} as const satisfies { size: number; box: Box } & Record<'rightEye' | 'leftEye' | 'nose' | 'mouth', readonly [number, number]>;
