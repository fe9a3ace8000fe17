/** The in-memory form of a labelled face set, whatever it was read from. */
import type { InputSpec } from '../../contract/preprocess.ts';
import type { CropSource } from './aligned-crops.ts';

export interface Dataset {
  /** what the pixels are: size, channels, scaling */
  spec: InputSpec;
  /** number of faces */
  count: number;
  /** preprocessed bytes (0-255), count x height x width x channels, HWC per face */
  pixels: Uint8Array;
  /** whole years, 1 to 116 */
  ages: Uint8Array;
  /** 0 = male, 1 = female */
  genders: Uint8Array;
  /** 0 = White, 1 = Black, 2 = Asian, 3 = Indian, 4 = Others */
  ethnicities: Uint8Array;
  /** source file name (UTKFace) or img_name (CSV) of each face */
  names: string[];
  /** what was skipped while reading, and why */
  skipped: SkipReport;
  /** with aligned crops: the faces that kept their UTKFace crop, by reason (the detector found no face, or one it could not align) */
  unaligned?: SkipReport;
  /** set by `loadDataset`: whether the faces came from the binary cache, and its file */
  cache?: { status: 'hit' | 'written' | 'rebuilt' | 'off'; file?: string };
}

export interface SkipReport {
  /** total entries skipped */
  count: number;
  /** counts by reason, e.g. { "missing race field": 3 } */
  byReason: Record<string, number>;
  /** the first few skipped entries with their reason */
  examples: { entry: string; reason: string }[];
}

export interface LoadOptions {
  /** keep at most this many faces: a deterministic (seeded) random subset, the same on every run */
  limit?: number;
  /** folder for the binary cache; default `.cache/datasets` under the current directory; `false` disables it */
  cacheDir?: string | false;
  /** show a progress bar on stderr while decoding (default: true when stderr is a TTY, periodic lines otherwise) */
  progress?: boolean;
  /** parallel decode workers for a folder (default: number of CPU cores) */
  workers?: number;
  /** seed of the `limit` subset (default 42) */
  seed?: number;
  /** UTKFace folders: their own crops (default), or the detector's aligned crops of them (training/data/aligned-crops.ts) */
  crops?: CropSource;
  /** where `loadDataset` writes its summary and cache notes (default: a line each on stderr) */
  log?: (line: string) => void;
}
