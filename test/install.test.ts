import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';

const root = new URL('../', import.meta.url);
const readJson = (name: string): unknown => JSON.parse(readFileSync(new URL(name, root), 'utf8'));

interface PackageJson {
  allowScripts?: Record<string, boolean>;
}
interface PackageLock {
  packages: Record<string, { hasInstallScript?: boolean }>;
}

/** The packages of the lockfile that have an install script, by name. */
function packagesWithInstallScripts(): string[] {
  const lock = readJson('package-lock.json') as PackageLock;
  return Object.entries(lock.packages)
    .filter(([, entry]) => entry.hasInstallScript === true)
    .map(([path]) => path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length));
}

/** The package names allowScripts decides on: its keys without a version (npm approve-scripts pins `name@1.2.3`). */
function decidedNames(allowScripts: Record<string, boolean>): string[] {
  return Object.keys(allowScripts).map((key) => key.replace(/(?<=.)@.*$/, ''));
}

describe('install (npm ci reaches only the npm registry)', () => {
  it('decides, in allowScripts, on every dependency that has an install script', () => {
    // npm announces that a later release will skip the install scripts allowScripts does not name; npm 11 lists them.
    const decided = decidedNames((readJson('package.json') as PackageJson).allowScripts ?? {});
    const undecided = packagesWithInstallScripts().filter((name) => !decided.includes(name));
    assert.deepEqual(undecided, [], 'add each to allowScripts in package.json (npm approve-scripts / npm deny-scripts)');
    const stale = decided.filter((name) => !packagesWithInstallScripts().includes(name));
    assert.deepEqual(stale, [], 'allowScripts names packages the lockfile holds no install script for');
  });

  it("skips onnxruntime-node's download of CUDA binaries, for npm before and after allowScripts", () => {
    const allowScripts = (readJson('package.json') as PackageJson).allowScripts ?? {};
    assert.equal(allowScripts['onnxruntime-node'], false, 'npm 11.16 and later: the script is denied');
    const npmrc = readFileSync(new URL('.npmrc', root), 'utf8');
    assert.match(npmrc, /^onnxruntime-node-install=skip$/m, 'npm 10 and 11: the script reads this and skips');
    // The opt-in on a GPU host runs the script itself, so neither setting stands in its way.
    const scripts = (readJson('package.json') as { scripts: Record<string, string> }).scripts;
    assert.match(scripts['setup:cuda'], /ONNXRUNTIME_NODE_INSTALL=cuda12 node script\/install/);
  });

  it('lets the optional tfjs-node packages download libtensorflow where they install', () => {
    const allowScripts = (readJson('package.json') as PackageJson).allowScripts ?? {};
    assert.equal(allowScripts['@tensorflow/tfjs-node'], true);
    assert.equal(allowScripts['@tensorflow/tfjs-node-gpu'], true);
  });
});
