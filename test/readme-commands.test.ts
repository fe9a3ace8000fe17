/**
 * Every command README.md shows, checked against the code so the README cannot drift from it (#26). The commands
 * are read from README.md itself (its ```sh blocks, and inline code that starts with a program's name) and each must
 * have an entry in README_COMMANDS saying how it is checked: run for real (the ones that take about a minute at
 * most), its flags checked against its `--help` (the ones that take hours or need such a run first), or not run and
 * why. A command README.md gains without an entry here fails the first test. The runs check what README.md claims
 * beside them: the answer's shape against the ```json block, and the Results table's figures against what
 * `npm run evaluate` prints and what `ls -l` lists.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { DEFAULT_UTKFACE, REPO_ROOT } from '../node-shared/paths.ts';
import { OPTIONS as SERVE_OPTIONS } from '../serve/config.ts';

/** How one README command is checked. */
type Check =
  /** run as written (a placeholder such as photo.jpg swapped for a real file), by the test named in `by` */
  | { check: 'run'; by: string }
  /** run with `--help` in place of its arguments; every --flag it uses must be in the usage printed */
  | { check: 'flags'; why: string }
  | { check: 'not run'; why: string };

const SERVER_TEST = 'npm start serves the models and answers the README\'s curl line';

/** Every command README.md shows, keyed by its exact text (a trailing `# comment` removed). */
const README_COMMANDS: Record<string, Check> = {
  'npm ci': { check: 'not run', why: 'install (docs/install.md; test/install.test.ts checks the lockfile)' },
  'npm start': { check: 'run', by: SERVER_TEST },
  'npm test': { check: 'not run', why: 'the test suite, this file among it' },
  "curl -s --data-binary @photo.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:3000/v1/predict": { check: 'run', by: SERVER_TEST },
  'npm run predict -- photo.jpg --annotate out.png': { check: 'run', by: 'npm run predict answers a UTKFace photo and draws it' },
  'npm run predict': { check: 'not run', why: 'a script named in the layout table; run above with its arguments' },
  'npm run demo': { check: 'run', by: 'npm run demo serves the page and the models' },
  'npm run train -- --task all': { check: 'flags', why: 'hours of training' },
  'npm run train -- --resume runs/<run>': { check: 'flags', why: 'needs a run of hours to resume' },
  'npm run evaluate -- --model models': { check: 'run', by: 'npm run evaluate prints the Results table\'s figures' },
  'npm run export -- --all --out-dir models-new': { check: 'flags', why: 'needs a training run in runs/latest' },
  'npm start -- --models models-new': { check: 'flags', why: 'needs the export above (npm start itself is run)' },
  'npm run evaluate:photos -- --crops 1000': { check: 'flags', why: 'minutes: a server answering 1,000 photos' },
  'npm run evaluate:photos -- --scenes .cache/scenes-whole': { check: 'flags', why: 'minutes: a server answering 200 scenes, made first by the command below' },
  'npx tsx training/cli/make-scenes.ts --out .cache/scenes-whole --count 200 --seed 1 --split test': { check: 'flags', why: 'a minute or two of drawing scenes from test-split faces (pixels that stay out of git)' },
  'npm run evaluate:photos -- --scenes .cache/scenes-whole-s2': { check: 'flags', why: 'minutes: a server answering 600 scenes, made first by the command below' },
  'npx tsx training/cli/make-scenes.ts --out .cache/scenes-whole-s2 --count 600 --seed 2 --split test': { check: 'flags', why: 'a few minutes of drawing scenes from test-split faces (pixels that stay out of git)' },
  'ls -l models/*.onnx': { check: 'run', by: 'ls -l models/*.onnx adds up to the Results table\'s size' },
  'podman build -t face-attributes .': { check: 'not run', why: 'a container build: minutes, and podman' },
  'docker build': { check: 'not run', why: 'a container build: minutes, and docker' },
  'kubectl apply -k deploy/k8s': { check: 'not run', why: 'needs a cluster (test/deploy-manifests.test.ts checks the manifests)' },
  'npm run test:container': { check: 'not run', why: 'needs podman or docker and HAProxy, minutes' },
};

/** Inline code that starts with one of these is a command; the rest (paths, flags, field names) is not. */
const COMMAND_PROGRAMS = new Set(['npm', 'npx', 'node', 'tsx', 'curl', 'podman', 'docker', 'kubectl', 'ls', 'kill', 'sh', 'bash', 'git']);

const README = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
const FENCED_BLOCK = /^```(\w*)\n([\s\S]*?)^```$/gm;

function fencedBlocks(language: string): string[] {
  return [...README.matchAll(FENCED_BLOCK)].filter((match) => match[1] === language).map((match) => match[2]);
}

/** The command lines of the ```sh blocks, and the inline code outside the blocks that is a command. */
function readmeCommands(): string[] {
  const fromBlocks = fencedBlocks('sh').flatMap((block) =>
    block
      .split('\n')
      .map((line) => line.replace(/\s+#.*$/, '').trim())
      .filter((line) => line !== '' && !line.startsWith('#')),
  );
  const prose = README.replace(FENCED_BLOCK, '');
  const inline = [...prose.matchAll(/`([^`\n]+)`/g)].map((match) => match[1].trim()).filter((code) => COMMAND_PROGRAMS.has(code.split(/\s+/)[0]));
  return [...new Set([...fromBlocks, ...inline])];
}

/** A command line as a shell would split it: words, with '...' quoting (all README.md uses). */
function shellWords(line: string): string[] {
  return [...line.matchAll(/'([^']*)'|(\S+)/g)].map((match) => match[1] ?? match[2]);
}

/** npm as the README runs it; under `npm test` the npm running the tests, so none is needed on PATH. */
const NPM: [string, ...string[]] = process.env.npm_execpath?.endsWith('npm-cli.js') ? [process.execPath, process.env.npm_execpath] : ['npm'];

function commandArgv(words: string[]): [string, string[]] {
  const [program, ...args] = words;
  if (program === 'npm') return [NPM[0], [...NPM.slice(1), ...args]];
  return [program, args];
}

/** The README command with each placeholder swapped, failing where README.md no longer has the placeholder. */
function withPlaceholders(command: string, swaps: Record<string, string>): string[] {
  return shellWords(command).map((word) => {
    for (const [placeholder, value] of Object.entries(swaps)) if (word.includes(placeholder)) return word.replace(placeholder, value);
    return word;
  });
}

function assertHasPlaceholders(command: string, placeholders: string[]): void {
  for (const placeholder of placeholders) assert.ok(command.includes(placeholder), `README's \`${command}\` no longer holds ${placeholder}; update this test's swaps`);
}

function runToEnd(words: string[], env: NodeJS.ProcessEnv = process.env): { status: number | null; stdout: string; stderr: string } {
  const [program, args] = commandArgv(words);
  return spawnSync(program, args, { cwd: REPO_ROOT, env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
}

interface Running {
  child: ChildProcess;
  output: string[];
  exit: Promise<number | null>;
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  /** SIGKILLs the command's process group: whatever npm left behind. */
  killGroup(): void;
}

/** A command that keeps running (a server), in a process group of its own, its output read line by line. */
function startCommand(words: string[], env: NodeJS.ProcessEnv): Running {
  const [program, args] = commandArgv(words);
  const child = spawn(program, args, { cwd: REPO_ROOT, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const output: string[] = [];
  const watchers: { pattern: RegExp; resolve: (match: RegExpExecArray) => void }[] = [];
  const onText = (chunk: Buffer): void => {
    for (const line of chunk.toString('utf8').split('\n').filter((l) => l !== '')) {
      output.push(line);
      for (const watcher of watchers) {
        const match = watcher.pattern.exec(line);
        if (match !== null) watcher.resolve(match);
      }
    }
  };
  child.stdout?.on('data', onText);
  child.stderr?.on('data', onText);
  const exit = new Promise<number | null>((resolve, reject) => {
    child.on('exit', (code) => resolve(code));
    child.on('error', reject);
  });
  const waitFor = (pattern: RegExp, timeoutMs = 60_000): Promise<RegExpExecArray> =>
    new Promise((resolve, reject) => {
      for (const line of output) {
        const match = pattern.exec(line);
        if (match !== null) return resolve(match);
      }
      const timer = setTimeout(() => reject(new Error(`\`${words.join(' ')}\`: no line matching ${pattern} within ${timeoutMs} ms; output:\n${output.join('\n')}`)), timeoutMs);
      watchers.push({ pattern, resolve: (match) => (clearTimeout(timer), resolve(match)) });
      void exit.then((code) => reject(new Error(`\`${words.join(' ')}\` exited (${code}) before a line matching ${pattern}; output:\n${output.join('\n')}`)));
    });
  const killGroup = (): void => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
    } catch {
      // the group is gone already
    }
  };
  return { child, output, exit, waitFor, killGroup };
}

/** The flags a command line uses: its words that start with --, the `--` separator aside. */
const flagsOf = (command: string): string[] => shellWords(command).filter((word) => word.startsWith('--') && word !== '--');

/** The command as its usage is asked for: the words up to `--`, then `-- --help`. */
function helpWords(command: string): string[] {
  const words = shellWords(command);
  if (words[0] !== 'npm') {
    // npx tsx script.ts --flag ...: the script's own --help, in place of its arguments.
    const firstFlag = words.findIndex((word) => word.startsWith('-'));
    return [...(firstFlag === -1 ? words : words.slice(0, firstFlag)), '--help'];
  }
  const separator = words.indexOf('--');
  return [...(separator === -1 ? words : words.slice(0, separator)), '--', '--help'];
}

/** A UTKFace crop in which the detector finds a face (test/predict-cli.test.ts uses it too). */
const FACE_PHOTO = join(DEFAULT_UTKFACE, '34_1_0_20170103163016663.jpg.chip.jpg');
const NO_PHOTO = existsSync(FACE_PHOTO) ? false : `the UTKFace photo ${FACE_PHOTO} is absent (UTKFace belongs in ../shared/data/utkface)`;
const NO_UTKFACE = existsSync(DEFAULT_UTKFACE) ? false : `UTKFace is absent from ${DEFAULT_UTKFACE}`;

/** The environment a person's shell would give the command, with the test runner's own npm variables left out. */
function personEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('npm_') && key !== 'INIT_CWD' && key !== 'NODE_TEST_CONTEXT'));
  return { ...env, ...extra };
}

describe('README.md commands', () => {
  it('classifies every command README.md shows (a new one must be added to README_COMMANDS), and only those', () => {
    const shown = readmeCommands();
    const unclassified = shown.filter((command) => README_COMMANDS[command] === undefined);
    assert.deepEqual(unclassified, [], `README.md shows commands that test/readme-commands.test.ts does not classify: add each to README_COMMANDS as run, flags or not run, and why:\n${unclassified.join('\n')}`);
    const gone = Object.keys(README_COMMANDS).filter((command) => !shown.includes(command));
    assert.deepEqual(gone, [], `README_COMMANDS lists commands README.md no longer shows; remove them:\n${gone.join('\n')}`);
    for (const command of ['npm start', "curl -s --data-binary @photo.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:3000/v1/predict", 'npm run evaluate -- --model models']) {
      assert.equal(README_COMMANDS[command]?.check, 'run', `${command} is one README.md's claims rest on: it is run`);
    }
  });

  describe('commands that take hours, or need such a run first: each flag they use is in their --help', () => {
    for (const [command, how] of Object.entries(README_COMMANDS).filter(([, how]) => how.check === 'flags')) {
      it(`${command}  (${how.check === 'flags' ? how.why : ''})`, () => {
        const flags = flagsOf(command);
        assert.ok(flags.length > 0, `${command} uses no flag: check it another way`);
        const help = runToEnd(helpWords(command), personEnv());
        assert.equal(help.status, 0, `\`${helpWords(command).join(' ')}\` exits 0; stderr:\n${help.stderr}`);
        for (const flag of flags) {
          assert.match(help.stdout, new RegExp(`(^|[\\s\\[|,(])${flag}(?![\\w-])`, 'm'), `\`${command}\` uses ${flag}, which \`${helpWords(command).join(' ')}\` does not list:\n${help.stdout}`);
        }
      });
    }
  });

  describe(SERVER_TEST, { skip: NO_PHOTO }, () => {
    const curlLine = Object.keys(README_COMMANDS).find((command) => command.startsWith('curl '));
    let server: Running | undefined;
    let port = 0;

    before(async () => {
      // README says 127.0.0.1:3000, the defaults; the test listens on a free port instead, through PORT.
      server = startCommand(['npm', 'start'], personEnv({ PORT: '0', HOST: '127.0.0.1' }));
      port = Number((await server.waitFor(/listening on http:\/\/127\.0\.0\.1:(\d+)/))[1]);
      await server.waitFor(/\bready in \d+ ms/);
    });
    after(() => server?.killGroup());

    it('listens where README.md says by default (127.0.0.1:3000) and says "ready" when /readyz is 200', async () => {
      assert.equal(SERVE_OPTIONS.port.default, 3000);
      assert.equal(SERVE_OPTIONS.host.default, '127.0.0.1');
      assert.equal((await fetch(`http://127.0.0.1:${port}/readyz`)).status, 200);
    });

    it('answers the curl line with a face, in the shape of the README\'s ```json block', () => {
      assert.ok(curlLine !== undefined, 'README.md has a curl line');
      assertHasPlaceholders(curlLine, ['@photo.jpg', '127.0.0.1:3000']);
      const words = withPlaceholders(curlLine, { '@photo.jpg': `@${FACE_PHOTO}`, '127.0.0.1:3000': `127.0.0.1:${port}` });
      // -w appends the status to what curl prints, the only word added to the README's line.
      const result = runToEnd([...words, '-w', '\n%{http_code}']);
      assert.equal(result.status, 0, `curl exits 0; stderr:\n${result.stderr}`);
      const status = result.stdout.slice(result.stdout.lastIndexOf('\n') + 1);
      const body = result.stdout.slice(0, result.stdout.lastIndexOf('\n'));
      assert.equal(status, '200', body);
      const answer = JSON.parse(body) as { image: { width: number; height: number }; faces: unknown[] };
      assert.deepEqual(answer.image, { width: 200, height: 200 });
      assert.ok(answer.faces.length >= 1, 'the detector finds the face in a UTKFace crop');
      const [documented] = fencedBlocks('json');
      assert.ok(documented !== undefined, 'README.md shows the answer in a ```json block');
      assertDocumentedShape(parseElidedJson(documented), answer, 'answer');
    });

    it('exits 0 on SIGTERM (to npm, as Ctrl-C or a container runtime sends it)', async () => {
      assert.ok(server !== undefined);
      server.child.kill('SIGTERM');
      assert.equal(await server.exit, 0, server.output.join('\n'));
    });
  });

  describe('npm run predict answers a UTKFace photo and draws it', { skip: NO_PHOTO }, () => {
    let scratch = '';
    before(async () => {
      scratch = await mkdtemp(join(tmpdir(), 'readme-predict-'));
    });
    after(async () => {
      if (scratch !== '') await rm(scratch, { recursive: true, force: true });
    });

    it('prints the answer (image, faces) and writes out.png at the photo\'s size, exit 0', async () => {
      const command = 'npm run predict -- photo.jpg --annotate out.png';
      assertHasPlaceholders(command, ['photo.jpg', 'out.png']);
      const drawing = join(scratch, 'out.png');
      const result = runToEnd(withPlaceholders(command, { 'photo.jpg': FACE_PHOTO, 'out.png': drawing }), personEnv());
      assert.equal(result.status, 0, result.stderr);
      // npm's own lines ("> face-attributes@... predict") come before the answer.
      const answer = JSON.parse(result.stdout.slice(result.stdout.indexOf('\n{') + 1)) as { image: unknown; faces: unknown[] };
      assert.deepEqual(answer.image, { width: 200, height: 200 });
      assert.ok(answer.faces.length >= 1, 'the detector finds the face');
      const drawn = await sharp(drawing).metadata();
      assert.deepEqual([drawn.format, drawn.width, drawn.height], ['png', 200, 200]);
    });
  });

  it('npm run demo serves the page and the models', async () => {
    const demo = startCommand(['npm', 'run', 'demo'], personEnv({ DEMO_PORT: '0' }));
    try {
      const url = (await demo.waitFor(/web demo at (http:\/\/\S+)/))[1].replace(/\/$/, '');
      const page = await fetch(`${url}/`);
      assert.equal(page.status, 200);
      assert.match(page.headers.get('content-type') ?? '', /text\/html/);
      assert.equal((await fetch(`${url}/models/manifest.json`)).status, 200);
      demo.child.kill('SIGTERM');
      assert.equal(await demo.exit, 0, demo.output.join('\n'));
    } finally {
      demo.killGroup();
    }
  });

  it('npm run evaluate prints the Results table\'s figures', { skip: NO_UTKFACE }, () => {
    const command = 'npm run evaluate -- --model models';
    const result = runToEnd(shellWords(command), personEnv());
    assert.equal(result.status, 0, result.stderr);
    const summary = result.stdout.trimEnd().split('\n').slice(-3);
    const printed = new Map(summary.map((line) => {
      const match = /^(age|ethnicity|gender):\s+(\d+\.\d+)% accuracy(?: \(age group\))?(?:, (\d+\.\d+) years MAE)? \((\d+) faces\)$/.exec(line);
      assert.ok(match !== null, `the last three lines of \`${command}\` are one summary line per task; got:\n${summary.join('\n')}`);
      return [match[1], { accuracy: match[2], mae: match[3], faces: Number(match[4]) }] as const;
    }));
    assert.deepEqual([...printed.keys()], ['age', 'ethnicity', 'gender']);

    const claimed = resultsTableClaims(command);
    assert.ok(claimed.length >= 4, `README's Results table claims four figures for \`${command}\`; found ${claimed.length}`);
    for (const { name, figure } of claimed) {
      const [, task, kind] = /^(age|ethnicity|gender)(?: (group|in years))?/.exec(name) ?? [];
      const value = kind === 'in years' ? printed.get('age')?.mae : printed.get(task)?.accuracy;
      assert.ok(value !== undefined, `no printed figure for the Results table's "${name}"`);
      const decimals = figure.split('.')[1]?.length ?? 0;
      assert.equal(Number(value).toFixed(decimals), figure, `README's Results table says ${name}: ${figure}; \`${command}\` prints ${value}`);
    }
    const faces = /test split of ([\d,]+) UTKFace faces/.exec(README)?.[1];
    assert.ok(faces !== undefined, 'the Results table names the test split\'s size');
    for (const [task, { faces: count }] of printed) assert.equal(count, Number(faces.replace(/,/g, '')), `${task}: README's test split size`);
  });

  it('ls -l models/*.onnx adds up to the Results table\'s size', () => {
    const command = 'ls -l models/*.onnx';
    const result = spawnSync('sh', ['-c', command], { cwd: REPO_ROOT, encoding: 'utf8' });
    assert.equal(result.status, 0, result.stderr);
    const lines = result.stdout.trim().split('\n');
    assert.equal(lines.length, 3, 'three model files');
    const bytes = lines.reduce((sum, line) => sum + Number(line.trim().split(/\s+/)[4]), 0);
    const row = README.split('\n').find((line) => line.includes(`\`${command}\``));
    const figure = row === undefined ? undefined : /\|\s*([\d.]+) MB\s*\|/.exec(row)?.[1];
    assert.ok(figure !== undefined, `the Results table gives a size in MB beside \`${command}\``);
    assert.equal((bytes / 1e6).toFixed(figure.split('.')[1]?.length ?? 0), figure, `the three files hold ${bytes} bytes`);
  });
});

/** The Results table's rows beside `command`: "a / b" in the first column against "x / y" in the figure column, one claim each. */
function resultsTableClaims(command: string): { name: string; figure: string }[] {
  return README.split('\n')
    .filter((line) => line.startsWith('|') && line.includes(`\`${command}\``))
    .flatMap((line) => {
      const [what, figures] = line.split('|').slice(1, 3).map((cell) => cell.trim());
      const names = what.split(' / ');
      const values = figures.split(' / ').map((figure) => /^([\d.]+)/.exec(figure)?.[1] ?? figure);
      assert.equal(names.length, values.length, `the Results table row "${line}" pairs each name with a figure`);
      return names.map((name, i) => ({ name, figure: values[i] }));
    });
}

/** The README's answer, its elisions (`[...]`, `{...}`) read as empty, `"...": "..."` kept as a marker. */
function parseElidedJson(text: string): unknown {
  return JSON.parse(text.replace(/\[\.\.\.\]/g, '[]').replace(/\{\.\.\.\}/g, '{}'));
}

/**
 * The real answer has every field README.md shows, with the same type, and no field README.md leaves out unless it
 * marks the object as elided (`"...": "..."` or `{...}`).
 */
function assertDocumentedShape(documented: unknown, actual: unknown, path: string): void {
  if (Array.isArray(documented)) {
    assert.ok(Array.isArray(actual), `${path} is an array`);
    if (documented.length > 0) {
      assert.ok(actual.length > 0, `${path} has an element, as README.md shows`);
      assertDocumentedShape(documented[0], actual[0], `${path}[0]`);
    }
    return;
  }
  if (documented !== null && typeof documented === 'object') {
    assert.ok(actual !== null && typeof actual === 'object' && !Array.isArray(actual), `${path} is an object`);
    const keys = Object.keys(documented).filter((key) => key !== '...');
    if (keys.length === 0) return;
    const actualKeys = Object.keys(actual);
    if ('...' in documented) for (const key of keys) assert.ok(actualKeys.includes(key), `${path}.${key}, shown in README.md, is in the answer`);
    else assert.deepEqual([...actualKeys].sort(), [...keys].sort(), `${path}'s fields are the ones README.md shows`);
    for (const key of keys) assertDocumentedShape((documented as Record<string, unknown>)[key], (actual as Record<string, unknown>)[key], `${path}.${key}`);
    return;
  }
  assert.equal(typeof actual, typeof documented, `${path} is a ${typeof documented}, as README.md shows`);
}
