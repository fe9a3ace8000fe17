/** File writing that readers of the same folder can rely on. */
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

/** Writes `file` through a temporary file renamed over it, so that no reader (a server watching the folder) ever sees half of it. */
export async function writeFileAtomic(file: string, bytes: Uint8Array | string): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  const temp = `${file}.tmp-${process.pid}`;
  try {
    await writeFile(temp, bytes);
    await rename(temp, file);
  } catch (error) {
    // A failed write or rename must not leave the temp file (as large as the model) behind.
    await rm(temp, { force: true }).catch(() => {});
    throw error;
  }
}
