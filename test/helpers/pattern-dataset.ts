/** A small synthetic dataset for the multitask tests: gender and ethnicity are visible in the pixels. */
import type { InputSpec } from '../../contract/preprocess.ts';
import type { Dataset } from '../../training/data/dataset.ts';

export const SPEC: InputSpec = { height: 16, width: 16, channels: 3, scaling: 'unit' };

/** `count` faces of SPEC whose brightness gives the gender and whose brightest channel gives the ethnicity. */
export function patternDataset(count: number): Dataset {
  const size = SPEC.height * SPEC.width * SPEC.channels;
  const pixels = new Uint8Array(count * size);
  const genders = Uint8Array.from({ length: count }, (_, i) => i % 2);
  const ethnicities = Uint8Array.from({ length: count }, (_, i) => Math.floor(i / 2) % 3);
  for (let i = 0; i < count; i++) {
    for (let p = 0; p < size; p++) {
      const channel = p % 3;
      pixels[i * size + p] = (genders[i] ? 150 : 40) + (channel === ethnicities[i] ? 80 : 0) + ((i * 13 + p * 7) % 20);
    }
  }
  return {
    spec: SPEC,
    count,
    pixels,
    ages: Uint8Array.from({ length: count }, (_, i) => 1 + ((i * 7) % 90)),
    genders,
    ethnicities,
    names: Array.from({ length: count }, (_, i) => `${i}.jpg`),
    skipped: { count: 0, byReason: {}, examples: [] },
  };
}
