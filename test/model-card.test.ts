import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { readModelMetadata } from '../contract/metadata.ts';
import { DEFAULT_UTKFACE, REPO_ROOT } from '../node-shared/paths.ts';

describe('model card', () => {
  it('measures the shipped ONNX models on their recorded test split and agrees with their training metrics', { timeout: 300_000 }, async (t) => {
    if (!existsSync(DEFAULT_UTKFACE)) {
      t.skip(`UTKFace data not found at ${DEFAULT_UTKFACE}; the card is measured where ../shared/data/utkface exists (CI has it)`);
      return;
    }
    const dir = await mkdtemp(join(tmpdir(), 'model-card-'));
    try {
      const out = join(dir, 'MODEL_CARD.md');
      const result = spawnSync(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'training/cli/model-card.ts'), '--out', out], { encoding: 'utf8', cwd: REPO_ROOT });
      assert.equal(result.status, 0, result.stdout + result.stderr);
      const card = await readFile(out, 'utf8');
      for (const task of ['age', 'ethnicity', 'gender']) {
        const metadata = readModelMetadata(new Uint8Array(await readFile(join(REPO_ROOT, 'models', `${task}.onnx`))));
        const trained = (metadata.metrics as { testAccuracy: number }).testAccuracy;
        assert.match(card, new RegExp(`\\| ${task} \\| [^|]+ \\| [^|]+ \\| ${(trained * 100).toFixed(1)}% \\|`), `${task}: the card's accuracy is the one measured at training`);
        // The temperature each file carries is the one its section names; the age model has none.
        const fit = (metadata.metrics as { calibration?: { temperature: number } }).calibration;
        assert.equal(fit === undefined, task === 'age', task);
        if (fit !== undefined) assert.ok(card.includes(`rescaled by a temperature of ${fit.temperature} fitted on the`), `${task}: temperature ${fit.temperature}`);
      }
      assert.equal(card.match(/\| probability of the answer at least \| faces kept \| accuracy of those \|/g)?.length, 3, 'a table of confident answers per model');
      for (const section of ['## Data', '## Intended use', '## Known failure modes', '## How to reproduce every number', 'Gender accuracy per ethnicity', 'Confusion matrix']) {
        assert.ok(card.includes(section), section);
      }
      // The committed card is the output of the same command.
      assert.equal(card, await readFile(join(REPO_ROOT, 'models', 'MODEL_CARD.md'), 'utf8'));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
