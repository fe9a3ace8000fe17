/** Seeded randomness for reproducible splits and subsets. */
import { seededRandom } from '../../node-shared/random.ts';

export { seededRandom };

/** A seeded Fisher-Yates permutation of 0..count-1. */
export function shuffledIndices(count: number, seed: number): Int32Array {
  const random = seededRandom(seed);
  const indices = Int32Array.from({ length: count }, (_, i) => i);
  for (let i = count - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const t = indices[i];
    indices[i] = indices[j];
    indices[j] = t;
  }
  return indices;
}

export interface Split {
  train: Int32Array;
  test: Int32Array;
}

/** A seeded random split, `testFraction` of the items held out (as sklearn's train_test_split). */
export function trainTestSplit(count: number, testFraction: number, seed: number): Split {
  if (!(testFraction > 0 && testFraction < 1)) {
    throw new RangeError(`testFraction ${testFraction} is out of range; expected a number between 0 and 1`);
  }
  const order = shuffledIndices(count, seed);
  const testCount = Math.ceil(count * testFraction);
  return { test: order.slice(0, testCount), train: order.slice(testCount) };
}
