/**
 * `npm run test:container`: the image as it ships, under failure. Builds the Dockerfile on a local Debian base, runs
 * two replicas behind HAProxy on 127.0.0.1, and under a bounded load of UTKFace photos first kills one replica, then
 * restarts both in turn (SIGTERM and drain, start, ready). Passes when no request fails in either phase.
 *
 * Needs root (apt-get, debootstrap, rootful podman) and installs podman, debootstrap, runc and haproxy when missing.
 * Not part of `npm test`. The base image is kept between runs; containers, HAProxy and temporary files are not.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { DEFAULT_UTKFACE, REPO_ROOT } from '../node-shared/paths.ts';

const BASE_IMAGE = 'localhost/face-attributes-base:trixie-node20';
const IMAGE = 'localhost/face-attributes:container-test';
const DEBIAN_SUITE = 'trixie'; // its nodejs is 20, the version package.json's engines names
const DEBIAN_MIRROR = 'http://deb.debian.org/debian';
/** The npm Node 20's official images bundle; Debian's npm 9 cannot read this lockfile's aliased overrides. */
const NPM_VERSION = '10.8.2';
const HOST_PACKAGES: Record<string, string> = { podman: 'podman', debootstrap: 'debootstrap', runc: 'runc', haproxy: 'haproxy' };

const BALANCER_PORT = 18080;
const REPLICAS = [
  { name: 'face-attributes-test-1', port: 18081 },
  { name: 'face-attributes-test-2', port: 18082 },
];
/** Each replica's drain limit, and how long `podman stop` waits past it before SIGKILL. */
const SHUTDOWN_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_S = 20;
const READY_TIMEOUT_MS = 120_000;
const HEALTH_CHECK_INTERVAL_MS = 500;
/** A busy replica answers /readyz late; it leaves the pool after HEALTH_CHECK_FALL checks failed or late by this. */
const HEALTH_CHECK_TIMEOUT_MS = 2_000;
const HEALTH_CHECK_FALL = 3;

const PHOTO_COUNT = 200;
const CONCURRENT_REQUESTS = 4;
const MAX_REQUESTS_PER_PHASE = 5_000;
const MAX_PHASE_MS = 180_000;
const REQUEST_TIMEOUT_MS = 30_000;
/** Load before the first disruption and after the last, so that each phase covers steady state on both sides. */
const LOAD_MARGIN_MS = 2_000;

const execFileAsync = promisify(execFile);

interface Workspace {
  dir: string;
  /** podman's engine settings: runc (crun fails on rlimits under hybrid cgroups) and explicit ulimits */
  containersConf: string;
  haproxySocket: string;
  haproxy?: ChildProcess;
  /** HAProxy's stderr: its server state changes, for a failed run's report. */
  haproxyOutput: string[];
}

// ---------------------------------------------------------------------------------------------------------------
// Commands

async function sh(ws: Workspace | undefined, command: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
  try {
    const { stdout } = await execFileAsync(command, args, {
      env: { ...process.env, ...(ws === undefined ? {} : { CONTAINERS_CONF: ws.containersConf }), ...env },
      maxBuffer: 64 * 1024 * 1024,
    });
    return stdout;
  } catch (error) {
    const { stdout = '', stderr = '' } = error as { stdout?: string; stderr?: string };
    throw new Error(`${command} ${args.join(' ')} failed:\n${`${stdout}\n${stderr}`.trim().slice(-3000)}`, { cause: error });
  }
}

const podman = (ws: Workspace, ...args: string[]): Promise<string> => sh(ws, 'podman', args);

function hasCommand(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

// ---------------------------------------------------------------------------------------------------------------
// Host, base image, image

async function installHostTools(): Promise<void> {
  const missing = Object.keys(HOST_PACKAGES).filter((command) => !hasCommand(command));
  if (missing.length === 0) return;
  console.log(`installing ${missing.join(', ')} with apt-get`);
  await sh(undefined, 'apt-get', ['update']);
  await sh(undefined, 'apt-get', ['install', '-y', '--no-install-recommends', ...missing.map((c) => HOST_PACKAGES[c])], { DEBIAN_FRONTEND: 'noninteractive' });
}

/** Debian minbase with Node 20, tini and npm, imported into podman; built only when podman does not have it. */
async function ensureBaseImage(ws: Workspace): Promise<string> {
  const exists = spawnSync('podman', ['image', 'exists', BASE_IMAGE], { env: { ...process.env, CONTAINERS_CONF: ws.containersConf } });
  if (exists.status === 0) return 'cached';
  const started = performance.now();
  const rootfs = join(ws.dir, 'rootfs');
  console.log(`building ${BASE_IMAGE} with debootstrap (${DEBIAN_SUITE}, about a minute)`);
  await sh(ws, 'debootstrap', ['--variant=minbase', '--include=ca-certificates,tini', DEBIAN_SUITE, rootfs, DEBIAN_MIRROR]);
  await sh(ws, 'chroot', [rootfs, 'apt-get', 'install', '-y', '--no-install-recommends', 'nodejs'], { DEBIAN_FRONTEND: 'noninteractive' });
  await sh(ws, 'chroot', [rootfs, 'apt-get', 'clean']);
  rmSync(join(rootfs, 'var', 'lib', 'apt', 'lists'), { recursive: true, force: true });

  // npm as Node's own images ship it: the registry tarball (its dependencies bundled) under /usr/local.
  const tarball = (await sh(ws, 'npm', ['pack', `npm@${NPM_VERSION}`, '--pack-destination', ws.dir, '--silent'])).trim().split('\n').at(-1) as string;
  const npmDir = join(rootfs, 'usr', 'local', 'lib', 'node_modules', 'npm');
  mkdirSync(npmDir, { recursive: true });
  await sh(ws, 'tar', ['-xzf', join(ws.dir, tarball), '-C', npmDir, '--strip-components=1']);
  for (const bin of ['npm', 'npx']) symlinkSync(`../lib/node_modules/npm/bin/${bin}-cli.js`, join(rootfs, 'usr', 'local', 'bin', bin));

  const nodeVersion = (await sh(ws, 'chroot', [rootfs, 'node', '--version'])).trim();
  if (Number(/^v(\d+)/.exec(nodeVersion)?.[1]) < 20) throw new Error(`${DEBIAN_SUITE}'s nodejs is ${nodeVersion}; the server needs Node 20 or later: set DEBIAN_SUITE to a release that has it`);
  await sh(ws, 'sh', ['-c', 'tar -C "$1" -c . | podman import - "$2"', 'import', rootfs, BASE_IMAGE]);
  rmSync(rootfs, { recursive: true, force: true });
  return `built in ${seconds(performance.now() - started)} (node ${nodeVersion}, npm ${NPM_VERSION})`;
}

async function buildImage(ws: Workspace): Promise<{ ms: number; bytes: number; baseBytes: number }> {
  const started = performance.now();
  const args = ['build', '--format', 'docker', '--network', 'host', '--build-arg', `BASE=${BASE_IMAGE}`, '-t', IMAGE, '-f', join(REPO_ROOT, 'Dockerfile')];
  // npm inside the build trusts what this host trusts (a TLS-inspecting proxy's CA, say).
  const extraCa = process.env.NODE_EXTRA_CA_CERTS;
  if (extraCa !== undefined && existsSync(extraCa)) args.push('--secret', `id=extra_ca,src=${extraCa}`);
  const previous = await podman(ws, 'image', 'inspect', '--format', '{{.Id}}', IMAGE).catch(() => '');
  await podman(ws, ...args, REPO_ROOT);
  const ms = performance.now() - started;
  // The last run's image, untagged by this build, would otherwise stay on disk with each run.
  const current = await podman(ws, 'image', 'inspect', '--format', '{{.Id}}', IMAGE);
  if (previous.trim() !== '' && previous.trim() !== current.trim()) await podman(ws, 'rmi', previous.trim()).catch(() => '');
  const size = async (image: string): Promise<number> => Number((await podman(ws, 'image', 'inspect', '--format', '{{.Size}}', image)).trim());
  return { ms, bytes: await size(IMAGE), baseBytes: await size(BASE_IMAGE) };
}

// ---------------------------------------------------------------------------------------------------------------
// Replicas and the balancer

type Replica = (typeof REPLICAS)[number];

async function startReplica(ws: Workspace, replica: Replica): Promise<number> {
  const started = performance.now();
  await podman(
    ws, 'run', '--detach', '--name', replica.name, '--network', 'host', '--stop-timeout', String(STOP_TIMEOUT_S),
    // Host networking, so the replica binds loopback only.
    '--env', 'HOST=127.0.0.1', '--env', `PORT=${replica.port}`, '--env', 'SERVE_WORKERS=1', '--env', 'SERVE_DECODE_THREADS=1',
    '--env', `SERVE_SHUTDOWN_TIMEOUT_MS=${SHUTDOWN_TIMEOUT_MS}`, IMAGE,
  );
  await waitReady(ws, replica);
  return performance.now() - started;
}

async function restartReplica(ws: Workspace, replica: Replica): Promise<number> {
  const started = performance.now();
  await podman(ws, 'start', replica.name);
  await waitReady(ws, replica);
  await waitBalancerSees(ws, replica, 'UP');
  return performance.now() - started;
}

async function waitReady(ws: Workspace, replica: Replica): Promise<void> {
  const deadline = performance.now() + READY_TIMEOUT_MS;
  while (performance.now() < deadline) {
    const status = await fetch(`http://127.0.0.1:${replica.port}/readyz`, { signal: AbortSignal.timeout(2_000) }).then((r) => r.status, () => 0);
    if (status === 200) return;
    await sleep(100);
  }
  const logs = await podman(ws, 'logs', '--tail', '30', replica.name).catch((error: Error) => error.message);
  throw new Error(`${replica.name} was not ready within ${READY_TIMEOUT_MS} ms; its log:\n${logs}`);
}

/** Idempotent predictions, so the balancer retries on another replica: refused, reset, empty, 502/503/504. */
function haproxyConfig(ws: Workspace): string {
  return `global
    stats socket ${ws.haproxySocket} mode 600 level admin
    # retries resend the request from this buffer: it must hold a whole photo
    tune.bufsize 131072
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server ${REQUEST_TIMEOUT_MS}ms
    timeout check ${HEALTH_CHECK_TIMEOUT_MS}ms
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response junk-response 502 503 504
    option http-buffer-request
frontend predict
    bind 127.0.0.1:${BALANCER_PORT}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter ${HEALTH_CHECK_INTERVAL_MS} fall ${HEALTH_CHECK_FALL} rise 2
${REPLICAS.map((r) => `    server ${r.name} 127.0.0.1:${r.port} check`).join('\n')}
`;
}

async function startBalancer(ws: Workspace): Promise<void> {
  const config = join(ws.dir, 'haproxy.cfg');
  writeFileSync(config, haproxyConfig(ws));
  await sh(ws, 'haproxy', ['-c', '-q', '-f', config]);
  const output = ws.haproxyOutput;
  ws.haproxy = spawn('haproxy', ['-db', '-f', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  ws.haproxy.stdout?.on('data', (chunk: Buffer) => output.push(chunk.toString()));
  ws.haproxy.stderr?.on('data', (chunk: Buffer) => output.push(chunk.toString()));
  ws.haproxy.on('exit', (code) => {
    if (code !== null && code !== 0) console.error(`haproxy exited with code ${code}:\n${output.join('').slice(-2000)}`);
  });
  for (const replica of REPLICAS) await waitBalancerSees(ws, replica, 'UP');
}

/** One command on HAProxy's runtime socket; its answer. */
function askBalancer(ws: Workspace, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(ws.haproxySocket);
    const chunks: Buffer[] = [];
    socket.on('connect', () => socket.end(`${command}\n`));
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', () => resolve(Buffer.concat(chunks).toString()));
    socket.on('error', reject);
  });
}

/** `show stat` as rows keyed by column name. */
async function balancerStats(ws: Workspace): Promise<Record<string, string>[]> {
  const [header, ...rows] = (await askBalancer(ws, 'show stat')).trim().split('\n');
  const columns = header.replace(/^# /, '').split(',');
  return rows.map((row) => Object.fromEntries(row.split(',').map((value, i) => [columns[i], value])));
}

async function waitBalancerSees(ws: Workspace, replica: Replica, status: 'UP' | 'DOWN'): Promise<void> {
  const deadline = performance.now() + READY_TIMEOUT_MS;
  while (performance.now() < deadline) {
    const row = (await balancerStats(ws).catch(() => [])).find((r) => r.svname === replica.name);
    if (row?.status.startsWith(status)) return;
    await sleep(100);
  }
  throw new Error(`HAProxy did not see ${replica.name} ${status} within ${READY_TIMEOUT_MS} ms`);
}

/** The backend's retries and redispatches so far. */
async function balancerRetries(ws: Workspace): Promise<{ retries: number; redispatches: number }> {
  const backend = (await balancerStats(ws)).find((r) => r.pxname === 'replicas' && r.svname === 'BACKEND');
  return { retries: Number(backend?.wretr ?? 0), redispatches: Number(backend?.wredis ?? 0) };
}

// ---------------------------------------------------------------------------------------------------------------
// Load

/** A JPEG as sent: fetch() takes only ArrayBuffer-backed bytes. */
type Photo = Uint8Array<ArrayBuffer>;

interface PhaseResult {
  name: string;
  sent: number;
  failed: number;
  /** failures by kind: "HTTP 503", "ECONNRESET", "TimeoutError" */
  failures: Map<string, number>;
  retries: number;
  redispatches: number;
  ms: number;
  notes: string[];
}

/** Photos of faces, spread across the folder (it is sorted by age), that the server answers with 200. */
async function selectPhotos(): Promise<{ photos: Photo[]; refused: number }> {
  const files = readdirSync(DEFAULT_UTKFACE).filter((f) => /\.jpe?g$/i.test(f)).sort();
  const step = Math.max(1, Math.floor(files.length / PHOTO_COUNT));
  const candidates = files.filter((_, i) => i % step === 0).slice(0, PHOTO_COUNT).map((f) => new Uint8Array(readFileSync(join(DEFAULT_UTKFACE, f))));
  const photos: Photo[] = [];
  for (const photo of candidates) if ((await predict(photo)) === 'ok') photos.push(photo);
  if (photos.length === 0) throw new Error(`the server refused all ${candidates.length} photos from ${DEFAULT_UTKFACE}; try one by hand with curl`);
  return { photos, refused: candidates.length - photos.length };
}

/** 'ok', or what went wrong. */
async function predict(photo: Photo): Promise<string> {
  try {
    const response = await fetch(`http://127.0.0.1:${BALANCER_PORT}/v1/predict`, {
      method: 'POST',
      headers: { 'content-type': 'image/jpeg' },
      body: photo,
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    await response.arrayBuffer();
    return response.status === 200 ? 'ok' : `HTTP ${response.status}`;
  } catch (error) {
    const cause = (error as { cause?: { code?: string } }).cause;
    return cause?.code ?? (error as Error).name;
  }
}

/** Sends photos through the balancer, CONCURRENT_REQUESTS at a time, while `disrupt` runs and LOAD_MARGIN_MS on each side. */
async function underLoad(ws: Workspace, name: string, photos: Photo[], disrupt: (notes: string[]) => Promise<void>): Promise<PhaseResult> {
  const before = await balancerRetries(ws);
  const result: PhaseResult = { name, sent: 0, failed: 0, failures: new Map(), retries: 0, redispatches: 0, ms: 0, notes: [] };
  const started = performance.now();
  let stopping = false;
  const client = async (): Promise<void> => {
    while (!stopping && result.sent < MAX_REQUESTS_PER_PHASE && performance.now() - started < MAX_PHASE_MS) {
      const photo = photos[result.sent % photos.length];
      result.sent++;
      const outcome = await predict(photo);
      if (outcome === 'ok') continue;
      result.failed++;
      result.failures.set(outcome, (result.failures.get(outcome) ?? 0) + 1);
    }
  };
  const clients = Array.from({ length: CONCURRENT_REQUESTS }, client);
  try {
    await sleep(LOAD_MARGIN_MS);
    await disrupt(result.notes);
    await sleep(LOAD_MARGIN_MS);
  } finally {
    stopping = true;
    await Promise.all(clients);
  }
  if (performance.now() - started >= MAX_PHASE_MS || result.sent >= MAX_REQUESTS_PER_PHASE) result.notes.push('load stopped early at its bound');
  result.ms = performance.now() - started;
  const after = await balancerRetries(ws);
  result.retries = after.retries - before.retries;
  result.redispatches = after.redispatches - before.redispatches;
  return result;
}

async function killPhase(ws: Workspace, photos: Photo[]): Promise<PhaseResult> {
  const victim = REPLICAS[0];
  const result = await underLoad(ws, `kill ${victim.name}`, photos, async (notes) => {
    await podman(ws, 'kill', '--signal', 'KILL', victim.name);
    await waitBalancerSees(ws, victim, 'DOWN');
    notes.push(`${victim.name} SIGKILLed; HAProxy marked it down`);
  });
  // Back to two replicas before the next phase; not part of this one.
  await restartReplica(ws, victim);
  return result;
}

async function rollingRestartPhase(ws: Workspace, photos: Photo[]): Promise<PhaseResult> {
  return underLoad(ws, 'rolling restart', photos, async (notes) => {
    for (const replica of REPLICAS) {
      const stopStarted = performance.now();
      await podman(ws, 'stop', '--time', String(STOP_TIMEOUT_S), replica.name);
      const stopMs = performance.now() - stopStarted;
      await waitBalancerSees(ws, replica, 'DOWN');
      const exitCode = Number((await podman(ws, 'inspect', '--format', '{{.State.ExitCode}}', replica.name)).trim());
      // 0 is node's own exit after draining; 143 would mean SIGTERM killed it, 137 that the drain outlasted --time.
      if (exitCode !== 0) throw new Error(`${replica.name} exited with ${exitCode} after SIGTERM; expected 0 (drained and exited)`);
      const readyMs = await restartReplica(ws, replica);
      notes.push(`${replica.name}: SIGTERM to exit 0 in ${seconds(stopMs)}, start to ready in the balancer ${seconds(readyMs)}`);
    }
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Report and clean-up

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

function megabytes(bytes: number): string {
  return `${(bytes / 1e6).toFixed(0)} MB`;
}

function printPhase(phase: PhaseResult): void {
  const failures = [...phase.failures].map(([kind, count]) => `${kind} x${count}`).join(', ');
  console.log(`  ${phase.name.padEnd(38)} sent ${String(phase.sent).padStart(5)}  failed ${String(phase.failed).padStart(3)}${failures === '' ? '' : ` (${failures})`}  in ${seconds(phase.ms)}; balancer retries ${phase.retries}, redispatches ${phase.redispatches}`);
  for (const note of phase.notes) console.log(`      ${note}`);
}

function cleanUp(ws: Workspace): void {
  const env = { ...process.env, CONTAINERS_CONF: ws.containersConf };
  spawnSync('podman', ['rm', '--force', '--time', '0', ...REPLICAS.map((r) => r.name)], { env, stdio: 'ignore' });
  if (ws.haproxy?.exitCode === null) ws.haproxy.kill('SIGTERM');
  rmSync(ws.dir, { recursive: true, force: true });
}

function createWorkspace(): Workspace {
  const dir = mkdtempSync(join(tmpdir(), 'face-attributes-container-test-'));
  const containersConf = join(dir, 'containers.conf');
  writeFileSync(
    containersConf,
    ['[containers]', 'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]', '[engine]', 'runtime = "runc"', 'cgroup_manager = "cgroupfs"', 'events_logger = "file"', ''].join('\n'),
  );
  return { dir, containersConf, haproxySocket: join(dir, 'haproxy.sock'), haproxyOutput: [] };
}

async function main(): Promise<void> {
  if (!existsSync(DEFAULT_UTKFACE)) {
    console.log(`container test skipped: no face photos at ${DEFAULT_UTKFACE}; put UTKFace JPEGs there to run it`);
    return;
  }
  if (process.getuid?.() !== 0) throw new Error('the container test needs root (apt-get, debootstrap, rootful podman); run it as root or with sudo');
  await installHostTools();
  const ws = createWorkspace();
  const onSignal = (signal: NodeJS.Signals): void => {
    cleanUp(ws);
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    spawnSync('podman', ['rm', '--force', '--time', '0', ...REPLICAS.map((r) => r.name)], { env: { ...process.env, CONTAINERS_CONF: ws.containersConf }, stdio: 'ignore' });
    const base = await ensureBaseImage(ws);
    console.log(`base ${BASE_IMAGE}: ${base}`);
    const image = await buildImage(ws);
    console.log(`image ${IMAGE}: built in ${seconds(image.ms)}`);
    const startMs = await Promise.all(REPLICAS.map((replica) => startReplica(ws, replica)));
    const healthcheck = await podman(ws, 'healthcheck', 'run', REPLICAS[0].name).then(() => 'healthy', (error: Error) => error.message);
    await startBalancer(ws);
    const { photos, refused } = await selectPhotos();
    const phases = [await killPhase(ws, photos), await rollingRestartPhase(ws, photos)];

    console.log('\ncontainer test (npm run test:container)');
    console.log(`  image size                             ${megabytes(image.bytes)} (base ${megabytes(image.baseBytes)}, the server and its dependencies ${megabytes(image.bytes - image.baseBytes)})`);
    console.log(`  start to ready (podman run to /readyz)  ${startMs.map(seconds).join(', ')} (two replicas started together)`);
    console.log(`  image HEALTHCHECK                      ${healthcheck}`);
    console.log(`  load                                   ${CONCURRENT_REQUESTS} concurrent POST /v1/predict through HAProxy, ${photos.length} UTKFace photos${refused > 0 ? ` (${refused} refused by the server, left out)` : ''}`);
    for (const phase of phases) printPhase(phase);
    const failed = phases.filter((p) => p.failed > 0);
    if (failed.length > 0) {
      throw new Error(`requests failed during: ${failed.map((p) => p.name).join(', ')}; expected none. HAProxy said:\n${ws.haproxyOutput.join('').slice(-3000)}`);
    }
    console.log('  PASS: no request failed');
  } finally {
    cleanUp(ws);
  }
}

main().catch((error: unknown) => {
  console.error(`container test FAILED: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
});
