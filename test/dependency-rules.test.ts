/**
 * The dependency rules between the top-level folders (.dependency-cruiser.cjs), checked on the real tree, and
 * shown to catch each kind of breach on a small fixture tree cruised with the same rules file.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { cruise, type ICruiseResult, type IModule } from 'dependency-cruiser';
import extractDepcruiseOptions from 'dependency-cruiser/config-utl/extract-depcruise-options';
import extractTSConfig from 'dependency-cruiser/config-utl/extract-ts-config';
import { REPO_ROOT } from '../node-shared/paths.ts';

const RULES_FILE = join(REPO_ROOT, '.dependency-cruiser.cjs');
const TSCONFIG_FILE = join(REPO_ROOT, 'tsconfig.json');

/** The top-level folders of ours; a dependency between two different ones is an edge of the folder graph. */
const TOP_LEVEL_FOLDERS = ['contract', 'imaging', 'node-shared', 'training', 'export', 'serve', 'web-demo', 'deploy', 'test'];

/** What is cruised: every folder with TypeScript of ours (web-demo/dist is built output). */
const CRUISED_PATHS = ['contract', 'imaging', 'node-shared', 'training', 'export', 'serve', 'web-demo/src', 'deploy', 'test'];

/** Each must hold cruised modules, or the cruise silently skipped it. */
const REQUIRED_FOLDERS = ['contract', 'imaging', 'node-shared', 'training', 'export', 'serve', 'web-demo/src/browser', 'web-demo/src/node', 'deploy', 'test'];

/** Fewer would mean the cruise silently skipped folders or stopped resolving `.ts` imports. */
const MIN_MODULES_OF_OURS = 100;

interface Violation {
  rule: string;
  from: string;
  to: string;
}

async function cruiseTree(baseDir: string, paths: string[]): Promise<ICruiseResult> {
  const options = await extractDepcruiseOptions(RULES_FILE);
  const { output } = await cruise(paths, { ...options, baseDir }, undefined, { tsConfig: extractTSConfig(TSCONFIG_FILE) });
  assert.equal(typeof output, 'object', 'cruise returns the result object when no outputType is set');
  return output as ICruiseResult;
}

function topLevelFolder(path: string): string | undefined {
  const folder = path.split('/')[0];
  return TOP_LEVEL_FOLDERS.includes(folder) ? folder : undefined;
}

function ruleViolations(result: ICruiseResult): Violation[] {
  return result.summary.violations.map((violation) => ({ rule: violation.rule.name, from: violation.from, to: violation.to }));
}

/**
 * Cycles between top-level folders, each as its folders and one module edge per folder edge inside it.
 * Computed here because dependency-cruiser's circular rules see module cycles or leaf-folder cycles only,
 * and serve/a.ts -> training/b.ts with training/c.ts -> serve/d.ts is a folder cycle with neither.
 */
function folderCycles(modules: IModule[]): { folders: string[]; edges: string[] }[] {
  const edges = new Map<string, string>();
  for (const module of modules) {
    const from = topLevelFolder(module.source);
    for (const dependency of module.dependencies) {
      const to = topLevelFolder(dependency.resolved);
      if (from && to && from !== to && !edges.has(`${from} ${to}`)) edges.set(`${from} ${to}`, `${module.source} -> ${dependency.resolved}`);
    }
  }
  const reaches = (start: string, goal: string): boolean => {
    const seen = new Set<string>();
    const pending = [start];
    while (pending.length > 0) {
      const folder = pending.pop()!;
      if (folder === goal) return true;
      if (seen.has(folder)) continue;
      seen.add(folder);
      for (const next of TOP_LEVEL_FOLDERS) if (edges.has(`${folder} ${next}`)) pending.push(next);
    }
    return false;
  };
  const cycles: { folders: string[]; edges: string[] }[] = [];
  const placed = new Set<string>();
  for (const folder of TOP_LEVEL_FOLDERS) {
    if (placed.has(folder)) continue;
    const component = TOP_LEVEL_FOLDERS.filter((other) => other === folder || (reaches(folder, other) && reaches(other, folder)));
    component.forEach((member) => placed.add(member));
    if (component.length < 2) continue;
    const inside = [...edges].filter(([key]) => key.split(' ').every((end) => component.includes(end))).map(([, example]) => example);
    cycles.push({ folders: component, edges: inside });
  }
  return cycles;
}

function describeViolations(violations: Violation[]): string {
  return violations.map(({ rule, from, to }) => `  ${rule}: ${from} -> ${to}`).join('\n');
}

describe('dependency rules between top-level folders', () => {
  describe('the real tree', () => {
    let realTree: Promise<ICruiseResult> | undefined;
    const cruiseRealTree = () => (realTree ??= cruiseTree(REPO_ROOT, CRUISED_PATHS));

    it('cruises every top-level folder and resolves every import of ours', async () => {
      const ours = (await cruiseRealTree()).modules.filter((module) => topLevelFolder(module.source));
      assert.ok(ours.length > MIN_MODULES_OF_OURS, `cruised only ${ours.length} modules of ours; expected more than ${MIN_MODULES_OF_OURS}`);
      const missing = REQUIRED_FOLDERS.filter((folder) => !ours.some((module) => module.source.startsWith(`${folder}/`)));
      assert.deepEqual(missing, [], `no module cruised in: ${missing.join(', ')}`);
      const unresolved = ours.flatMap((module) =>
        module.dependencies.filter((dependency) => dependency.couldNotResolve).map((dependency) => `${module.source} -> ${dependency.module}`),
      );
      assert.deepEqual(unresolved, [], `imports dependency-cruiser could not resolve:\n  ${unresolved.join('\n  ')}`);
    });

    it('breaks no rule of .dependency-cruiser.cjs', async () => {
      const violations = ruleViolations(await cruiseRealTree());
      assert.deepEqual(violations, [], `dependency rules broken (see each rule's comment in .dependency-cruiser.cjs):\n${describeViolations(violations)}`);
    });

    it('has no cycle between top-level folders', async () => {
      const cycles = folderCycles((await cruiseRealTree()).modules);
      const described = cycles.map((cycle) => `  among ${cycle.folders.join(', ')}: ${cycle.edges.join('; ')}`).join('\n');
      assert.deepEqual(cycles, [], `cycles between top-level folders, one import per folder edge:\n${described}`);
    });
  });

  describe('fixture trees that break the rules', () => {
    const fixtureRoots: string[] = [];
    after(() => fixtureRoots.forEach((root) => rmSync(root, { recursive: true, force: true })));

    function writeTree(files: Record<string, string>): string {
      const root = mkdtempSync(join(tmpdir(), 'dependency-rules-'));
      fixtureRoots.push(root);
      for (const [path, text] of Object.entries(files)) {
        mkdirSync(dirname(join(root, path)), { recursive: true });
        writeFileSync(join(root, path), text);
      }
      return root;
    }

    it('reports exactly the imports that break a rule, type-only imports included', async () => {
      const root = writeTree({
        'contract/labels.ts': "export const LABELS = ['a'];\n",
        'contract/reads-files.ts': "import { readFileSync } from 'node:fs';\nexport const read = readFileSync;\n",
        'contract/uses-package.ts': "import { Tensor } from 'onnxruntime-web';\nexport const tensor = Tensor;\n",
        'node_modules/onnxruntime-web/package.json': '{ "name": "onnxruntime-web", "main": "index.js", "types": "index.d.ts" }\n',
        'node_modules/onnxruntime-web/index.js': 'export class Tensor {}\n',
        'node_modules/onnxruntime-web/index.d.ts': 'export declare class Tensor {}\n',
        'contract/uses-imaging.ts': "import { decode } from '../imaging/decode.ts';\nexport const decoded = decode;\n",
        'imaging/decode.ts': "import { LABELS } from '../contract/labels.ts';\nimport { ROOT } from '../node-shared/paths.ts';\nexport const decode = [LABELS, ROOT];\n",
        'node-shared/paths.ts': "import { LABELS } from '../contract/labels.ts';\nexport const ROOT = LABELS;\n",
        'node-shared/uses-training.ts': "import { decode } from '../imaging/decode.ts';\nimport { fit } from '../training/fit.ts';\nexport const fitted = [decode, fit];\n",
        'training/fit.ts': "import { ROOT } from '../node-shared/paths.ts';\nexport const fit = ROOT;\n",
        'export/convert.ts': "import { fit } from '../training/fit.ts';\nimport { app } from '../serve/app.ts';\nexport const converted = [fit, app];\n",
        'serve/app.ts': "import { LABELS } from '../contract/labels.ts';\nexport const app = LABELS;\n",
        'serve/trains.ts': "import { fit } from '../training/fit.ts';\nexport const trained = fit;\n",
        'web-demo/src/browser/runtime.ts': "import type { Tensor } from 'onnxruntime-web';\nexport type WebTensor = Tensor;\n",
        'web-demo/src/browser/bundles-ort.ts': "import { Tensor } from 'onnxruntime-web';\nexport const tensor = Tensor;\n",
        'web-demo/src/browser/main.ts': "import { LABELS } from '../../../contract/labels.ts';\nimport type { ROOT } from '../../../node-shared/paths.ts';\nexport const page: [typeof LABELS, typeof ROOT] = [LABELS, []];\n",
        'web-demo/src/node/build.ts': "import { ROOT } from '../../../node-shared/paths.ts';\nexport const built = ROOT;\n",
        'deploy/check.ts': "import { helper } from '../test/helpers/helper.ts';\nexport const checked = helper;\n",
        'test/helpers/helper.ts': "import { fit } from '../../training/fit.ts';\nimport { app } from '../../serve/app.ts';\nexport const helper = [fit, app];\n",
      });
      const expected: Violation[] = [
        { rule: 'contract-is-self-contained', from: 'contract/reads-files.ts', to: 'fs' },
        { rule: 'contract-is-self-contained', from: 'contract/uses-imaging.ts', to: 'imaging/decode.ts' },
        { rule: 'contract-is-self-contained', from: 'contract/uses-package.ts', to: 'node_modules/onnxruntime-web/index.js' },
        { rule: 'only-tests-import-test', from: 'deploy/check.ts', to: 'test/helpers/helper.ts' },
        { rule: 'export-not-serve-training', from: 'export/convert.ts', to: 'serve/app.ts' },
        { rule: 'export-not-serve-training', from: 'export/convert.ts', to: 'training/fit.ts' },
        { rule: 'imaging-imports-only-contract', from: 'imaging/decode.ts', to: 'node-shared/paths.ts' },
        { rule: 'node-shared-not-applications', from: 'node-shared/uses-training.ts', to: 'training/fit.ts' },
        { rule: 'serve-not-training-export', from: 'serve/trains.ts', to: 'training/fit.ts' },
        { rule: 'browser-imports-only-contract', from: 'web-demo/src/browser/main.ts', to: 'node-shared/paths.ts' },
        { rule: 'browser-onnxruntime-web-types-only', from: 'web-demo/src/browser/bundles-ort.ts', to: 'node_modules/onnxruntime-web/index.js' },
      ];
      const byPlace = (a: Violation, b: Violation) => `${a.from} ${a.to}`.localeCompare(`${b.from} ${b.to}`);
      assert.deepEqual(ruleViolations(await cruiseTree(root, CRUISED_PATHS)).sort(byPlace), expected.sort(byPlace));
    });

    it('finds a cycle between top-level folders that no module cycle shows', async () => {
      const root = writeTree({
        'contract/labels.ts': "export const LABELS = ['a'];\n",
        'serve/app.ts': "import { fit } from '../training/fit.ts';\nexport const app = fit;\n",
        'serve/log.ts': "import { LABELS } from '../contract/labels.ts';\nexport const log = LABELS;\n",
        'training/fit.ts': "import { LABELS } from '../contract/labels.ts';\nexport const fit = LABELS;\n",
        'training/report.ts': "import { log } from '../serve/log.ts';\nexport const report = log;\n",
      });
      const result = await cruiseTree(root, ['contract', 'serve', 'training']);
      assert.deepEqual(folderCycles(result.modules), [
        { folders: ['training', 'serve'], edges: ['serve/app.ts -> training/fit.ts', 'training/report.ts -> serve/log.ts'] },
      ]);
    });
  });
});
