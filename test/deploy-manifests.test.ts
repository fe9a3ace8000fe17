/**
 * The container image and the Kubernetes manifests, checked without a cluster or a container runtime: every object
 * is schema-valid (kubernetes-models), and what the Dockerfile and the manifests tell the server is what the server
 * reads (serve/config.ts's option table), on the port it listens on and paths it answers (a server started here).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { Service } from 'kubernetes-models/v1/Service';
import { parse, parseAllDocuments } from 'yaml';
import { startTestServer, type TestServer } from './helpers/serve-harness.ts';
import { REPO_ROOT } from '../node-shared/paths.ts';
import { loadConfig, OPTIONS, type ServeConfig } from '../serve/config.ts';

const K8S_DIR = join(REPO_ROOT, 'deploy', 'k8s');
const GPU_OVERLAY_DIR = join(K8S_DIR, 'overlays', 'gpu');
const DOCKERFILE = join(REPO_ROOT, 'Dockerfile');
const DOCKERIGNORE = join(REPO_ROOT, '.dockerignore');
const SERVER_ENV_NAMES = new Set(Object.values(OPTIONS).map((option) => option.env));

// ---------------------------------------------------------------------------------------------------------------
// Kustomize, the subset these manifests use; a field outside it fails rather than being skipped.

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  // Each kind's own fields, checked by its kubernetes-models class.
  [field: string]: unknown;
}
interface JsonPatchOp {
  op: string;
  path: string;
  value?: unknown;
}
interface Kustomization {
  resources?: string[];
  images?: { name: string; newName?: string; newTag?: string }[];
  patches?: { path: string; target: { kind: string; name: string } }[];
}
const KUSTOMIZATION_FIELDS = ['apiVersion', 'kind', 'resources', 'images', 'patches'];

function readYamlDocuments(file: string): unknown[] {
  return parseAllDocuments(readFileSync(file, 'utf8')).map((doc) => {
    if (doc.errors.length > 0) throw new Error(`${relative(REPO_ROOT, file)}: ${doc.errors[0].message}`);
    return doc.toJS();
  });
}

/** What `kubectl kustomize DIR` prints, as objects: resources (files and folders), JSON 6902 patches, then image tags. */
function kustomize(dir: string): K8sObject[] {
  const file = join(dir, 'kustomization.yaml');
  assert.ok(existsSync(file), `${relative(REPO_ROOT, dir)} has no kustomization.yaml`);
  const kustomization = parse(readFileSync(file, 'utf8')) as Kustomization & Record<string, unknown>;
  const where = relative(REPO_ROOT, file);
  for (const field of Object.keys(kustomization)) {
    assert.ok(KUSTOMIZATION_FIELDS.includes(field), `${where}: field "${field}" is outside what this test builds (${KUSTOMIZATION_FIELDS.join(', ')}); extend kustomize() here`);
  }
  const objects: K8sObject[] = [];
  for (const resource of kustomization.resources ?? []) {
    const path = resolve(dir, resource);
    assert.ok(existsSync(path), `${where} lists ${resource}, which does not exist`);
    if (statSync(path).isDirectory()) objects.push(...kustomize(path));
    else objects.push(...(readYamlDocuments(path) as K8sObject[]));
  }
  for (const patch of kustomization.patches ?? []) {
    const path = resolve(dir, patch.path);
    assert.ok(existsSync(path), `${where} patches with ${patch.path}, which does not exist`);
    const targets = objects.filter((o) => o.kind === patch.target.kind && o.metadata.name === patch.target.name);
    assert.equal(targets.length, 1, `${where}: patch ${patch.path} targets ${patch.target.kind}/${patch.target.name}, which matches ${targets.length} objects`);
    for (const op of parse(readFileSync(path, 'utf8')) as JsonPatchOp[]) applyPatch(targets[0], op, patch.path);
  }
  for (const image of kustomization.images ?? []) {
    for (const container of objects.flatMap(podContainers)) {
      const [name, tag] = splitImage(container.image);
      if (name === image.name) container.image = `${image.newName ?? name}:${image.newTag ?? tag}`;
    }
  }
  return objects;
}

/** RFC 6902 add and replace, on objects and arrays: what the overlays use. */
function applyPatch(target: K8sObject, { op, path, value }: JsonPatchOp, file: string): void {
  assert.ok(op === 'add' || op === 'replace', `${file}: op "${op}" is outside what this test applies (add, replace)`);
  const keys = path.split('/').slice(1).map((key) => key.replaceAll('~1', '/').replaceAll('~0', '~'));
  const last = keys.pop() as string;
  let parent: Record<string, unknown> = target;
  for (const key of keys) {
    const next = parent[key];
    assert.ok(typeof next === 'object' && next !== null, `${file}: ${path} goes through "${key}", which the target does not have`);
    parent = next as Record<string, unknown>;
  }
  if (op === 'replace') assert.ok(last in parent, `${file}: replace ${path}, which the target does not have`);
  parent[last] = structuredClone(value);
}

function splitImage(image: string | undefined): [string, string] {
  const match = /^(.*?)(?::([^:/]+))?$/.exec(image ?? '');
  return [match?.[1] ?? '', match?.[2] ?? 'latest'];
}

interface Container {
  name: string;
  image?: string;
  args?: string[];
  env?: { name: string; value?: string }[];
  ports?: { name?: string; containerPort: number }[];
  resources?: { requests?: Record<string, string | number>; limits?: Record<string, string | number> };
  readinessProbe?: { httpGet?: { path?: string; port: string | number } };
  livenessProbe?: { httpGet?: { path?: string; port: string | number } };
  lifecycle?: { preStop?: { exec?: { command?: string[] } } };
}
interface PodTemplate {
  metadata: { labels: Record<string, string>; annotations?: Record<string, string> };
  spec: { containers: Container[]; terminationGracePeriodSeconds?: number };
}

function podTemplate(object: K8sObject): PodTemplate | undefined {
  return object.kind === 'Deployment' ? (object.spec as { template: PodTemplate }).template : undefined;
}
function podContainers(object: K8sObject): Container[] {
  return podTemplate(object)?.spec.containers ?? [];
}

// ---------------------------------------------------------------------------------------------------------------
// The Dockerfile, as instructions.

interface Instruction {
  keyword: string;
  args: string;
}

function readDockerfile(): Instruction[] {
  const joined = readFileSync(DOCKERFILE, 'utf8').replace(/\\\n/g, ' ');
  return joined
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => {
      const space = line.search(/\s/);
      return { keyword: line.slice(0, space).toUpperCase(), args: line.slice(space + 1).trim() };
    });
}

/** The instructions of the last stage: the image that ships. */
function runtimeStage(instructions: Instruction[]): Instruction[] {
  const froms = instructions.flatMap((i, index) => (i.keyword === 'FROM' ? [index] : []));
  return instructions.slice(froms.at(-1));
}

function lastOf(stage: Instruction[], keyword: string): Instruction | undefined {
  return stage.filter((i) => i.keyword === keyword).at(-1);
}

function dockerEnv(stage: Instruction[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const { args } of stage.filter((i) => i.keyword === 'ENV')) {
    for (const pair of args.split(/\s+/)) {
      const eq = pair.indexOf('=');
      assert.ok(eq > 0, `Dockerfile ENV "${args}": write it as NAME=value pairs`);
      env[pair.slice(0, eq)] = pair.slice(eq + 1);
    }
  }
  return env;
}

function execForm(instruction: Instruction | undefined, what: string): string[] {
  assert.ok(instruction !== undefined, `the Dockerfile's last stage has no ${what}`);
  const parsed = JSON.parse(instruction.args) as unknown;
  assert.ok(Array.isArray(parsed), `Dockerfile ${what} must be in exec form (a JSON array), so that signals reach the process`);
  return parsed as string[];
}

// ---------------------------------------------------------------------------------------------------------------

const SCHEMAS: Record<string, { new (data: never): { validate(): void } }> = {
  'apps/v1 Deployment': Deployment,
  'v1 Service': Service,
  'autoscaling/v2 HorizontalPodAutoscaler': HorizontalPodAutoscaler,
  'policy/v1 PodDisruptionBudget': PodDisruptionBudget,
};

/** Kubernetes CPU quantities ("2", "1500m", 0.5) in cores. */
function cpuCores(quantity: string | number | undefined): number {
  assert.ok(quantity !== undefined, 'a cpu quantity is missing');
  const text = String(quantity);
  return text.endsWith('m') ? Number(text.slice(0, -1)) / 1000 : Number(text);
}

function theDeployment(objects: K8sObject[]): K8sObject {
  const deployments = objects.filter((o) => o.kind === 'Deployment');
  assert.equal(deployments.length, 1, `expected one Deployment; got ${deployments.length}`);
  return deployments[0];
}

function serverContainer(objects: K8sObject[]): Container {
  const containers = podContainers(theDeployment(objects));
  assert.equal(containers.length, 1, 'the Deployment runs the server alone');
  return containers[0];
}

function containerEnv(container: Container): Record<string, string> {
  return Object.fromEntries((container.env ?? []).map(({ name, value }) => [name, value ?? '']));
}

/** The server's config as this container starts it: its flags and environment, nothing from this process. */
function containerConfig(container: Container): ServeConfig {
  return loadConfig(container.args ?? [], containerEnv(container));
}

function preStopSleepSeconds(container: Container): number {
  const command = container.lifecycle?.preStop?.exec?.command ?? [];
  assert.equal(command[0], 'sleep', `the preStop hook must pause with sleep so endpoints update before the drain; it runs ${JSON.stringify(command)}`);
  return Number(command[1]);
}

describe('deploy: Kubernetes manifests', () => {
  const base = kustomize(K8S_DIR);
  const gpu = kustomize(GPU_OVERLAY_DIR);

  it('lists a Deployment, a Service, a HorizontalPodAutoscaler and a PodDisruptionBudget, each schema-valid', () => {
    for (const [name, objects] of [['deploy/k8s', base], ['deploy/k8s/overlays/gpu', gpu]] as const) {
      assert.deepEqual(objects.map((o) => o.kind).sort(), ['Deployment', 'HorizontalPodAutoscaler', 'PodDisruptionBudget', 'Service'], name);
      for (const object of objects) {
        const Schema = SCHEMAS[`${object.apiVersion} ${object.kind}`];
        assert.ok(Schema !== undefined, `${name}: ${object.apiVersion} ${object.kind} has no schema here; add it to SCHEMAS`);
        assert.doesNotThrow(() => new Schema(object as never).validate(), `${name}: ${object.kind}/${object.metadata.name} is not schema-valid`);
      }
    }
  });

  it('rejects an invalid object, so the schema check can fail', () => {
    const broken = structuredClone(theDeployment(base));
    (podContainers(broken)[0] as { ports: unknown }).ports = [{ containerPort: 'http' }];
    assert.throws(() => new Deployment(broken as never).validate());
  });

  it('sets only environment variables the server reads, with values it accepts', () => {
    for (const objects of [base, gpu]) {
      const container = serverContainer(objects);
      for (const { name } of container.env ?? []) assert.ok(SERVER_ENV_NAMES.has(name), `${name} is set in the manifests but serve/config.ts reads no such variable`);
      assert.doesNotThrow(() => containerConfig(container));
    }
  });

  it('binds every interface, and points the probes, the scrape annotation and the Service at the port the server listens on', () => {
    const deployment = theDeployment(base);
    const container = serverContainer(base);
    const config = containerConfig(container);
    assert.equal(config.host, '0.0.0.0', 'HOST must be 0.0.0.0: the kubelet and the Service reach the pod from outside it');
    const ports = container.ports ?? [];
    const portOf = (ref: string | number): number | undefined => (typeof ref === 'number' ? ref : ports.find((p) => p.name === ref)?.containerPort);
    assert.ok(ports.some((p) => p.containerPort === config.port), `no containerPort is ${config.port}, the PORT the server listens on`);
    assert.equal(portOf(container.readinessProbe?.httpGet?.port ?? ''), config.port, 'readinessProbe port');
    assert.equal(portOf(container.livenessProbe?.httpGet?.port ?? ''), config.port, 'livenessProbe port');
    const annotations = podTemplate(deployment)?.metadata.annotations ?? {};
    assert.equal(annotations['prometheus.io/scrape'], 'true');
    assert.equal(Number(annotations['prometheus.io/port']), config.port, 'prometheus.io/port');
    const service = base.find((o) => o.kind === 'Service') as K8sObject & { spec: { selector: Record<string, string>; ports: { targetPort: string | number }[] } };
    for (const { targetPort } of service.spec.ports) assert.equal(portOf(targetPort), config.port, 'Service targetPort');
  });

  it('selects the Deployment\'s pods from the Service, the PodDisruptionBudget and the autoscaler', () => {
    const deployment = theDeployment(base);
    const labels = podTemplate(deployment)?.metadata.labels ?? {};
    const matches = (selector: Record<string, string>): boolean => Object.entries(selector).every(([key, value]) => labels[key] === value);
    const service = base.find((o) => o.kind === 'Service') as K8sObject & { spec: { selector: Record<string, string> } };
    const pdb = base.find((o) => o.kind === 'PodDisruptionBudget') as K8sObject & { spec: { selector: { matchLabels: Record<string, string> }; minAvailable: number } };
    const hpa = base.find((o) => o.kind === 'HorizontalPodAutoscaler') as K8sObject & {
      spec: { scaleTargetRef: { kind: string; name: string }; minReplicas: number; metrics: { type: string; resource?: { name: string } }[] };
    };
    assert.ok(matches(service.spec.selector), 'the Service selects no pod of the Deployment');
    assert.ok(matches(pdb.spec.selector.matchLabels), 'the PodDisruptionBudget selects no pod of the Deployment');
    assert.deepEqual([hpa.spec.scaleTargetRef.kind, hpa.spec.scaleTargetRef.name], ['Deployment', deployment.metadata.name]);
    assert.ok(hpa.spec.metrics.some((m) => m.type === 'Resource' && m.resource?.name === 'cpu'), 'the autoscaler scales on CPU');
    assert.ok(hpa.spec.minReplicas > pdb.spec.minAvailable, 'minReplicas must exceed minAvailable, or no pod can ever be evicted');
  });

  it('requests one CPU per worker process, and limits no lower', () => {
    for (const objects of [base, gpu]) {
      const container = serverContainer(objects);
      const { workers } = containerConfig(container);
      assert.equal(cpuCores(container.resources?.requests?.cpu), workers, `cpu request must be SERVE_WORKERS (${workers}) cores`);
      assert.ok(cpuCores(container.resources?.limits?.cpu) >= workers, 'cpu limit below the request');
      assert.ok(container.resources?.requests?.memory !== undefined && container.resources.limits?.memory !== undefined, 'memory request and limit');
    }
  });

  it('gives the drain time to finish: grace period > preStop pause + SERVE_SHUTDOWN_TIMEOUT_MS', () => {
    const container = serverContainer(base);
    const pauseSeconds = preStopSleepSeconds(container);
    assert.ok(pauseSeconds > 0, 'the preStop pause must be a positive number of seconds');
    const drainSeconds = containerConfig(container).shutdownTimeoutMs / 1000;
    const grace = podTemplate(theDeployment(base))?.spec.terminationGracePeriodSeconds ?? 30;
    assert.ok(grace > pauseSeconds + drainSeconds, `terminationGracePeriodSeconds ${grace} must exceed ${pauseSeconds} s of preStop + ${drainSeconds} s of drain`);
  });

  it('starts the GPU overlay on cuda with a GPU, from its own image, the rest as the base', () => {
    const container = serverContainer(gpu);
    assert.equal(containerConfig(container).device, 'cuda');
    assert.equal(containerConfig(serverContainer(base)).device, 'cpu', 'the base runs on CPU, so the overlay is what changes it');
    assert.ok(Number(container.resources?.limits?.['nvidia.com/gpu']) >= 1, 'the overlay requests nvidia.com/gpu');
    assert.notEqual(container.image, serverContainer(base).image, 'the GPU pods need the image with the CUDA provider');
    assert.deepEqual(container.readinessProbe, serverContainer(base).readinessProbe);
  });

  it('builds what `kubectl kustomize` builds, where kubectl is installed', (t) => {
    const probe = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' });
    if (probe.error !== undefined || probe.status !== 0) {
      t.skip('kubectl is not installed; the manifests were built by this test alone');
      return;
    }
    for (const [dir, ours] of [[K8S_DIR, base], [GPU_OVERLAY_DIR, gpu]] as const) {
      const built = spawnSync('kubectl', ['kustomize', dir], { encoding: 'utf8' });
      assert.equal(built.status, 0, built.stderr);
      const byName = (objects: K8sObject[]): K8sObject[] => [...objects].sort((a, b) => `${a.kind}/${a.metadata.name}`.localeCompare(`${b.kind}/${b.metadata.name}`));
      assert.deepEqual(byName(parseAllDocuments(built.stdout).map((d) => d.toJS() as K8sObject)), byName(ours), relative(REPO_ROOT, dir));
    }
  });
});

describe('deploy: Dockerfile', () => {
  const instructions = readDockerfile();
  const runtime = runtimeStage(instructions);

  it('takes its base image as ARG BASE, in every stage', () => {
    const firstFrom = instructions.findIndex((i) => i.keyword === 'FROM');
    assert.ok(instructions.slice(0, firstFrom).some((i) => i.keyword === 'ARG' && /^BASE=\S+/.test(i.args)), 'ARG BASE=<default image> before the first FROM');
    for (const from of instructions.filter((i) => i.keyword === 'FROM')) assert.match(from.args, /^\$\{?BASE\}?(\s|$)/, `FROM ${from.args}`);
  });

  it('installs production dependencies without install scripts, and builds the web demo with a package.json script', () => {
    const packageJson = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    const runs = instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args);
    const install = runs.find((r) => /\bnpm ci\b/.test(r));
    assert.ok(install !== undefined, 'the image installs dependencies with npm ci, from package-lock.json');
    assert.match(install, /--omit=dev\b/);
    // onnxruntime-node's install script downloads CUDA binaries (.npmrc); the CPU image needs none.
    assert.match(install, /--ignore-scripts\b/);
    const scripts = runs.flatMap((r) => [...r.matchAll(/\bnpm run (\S+)/g)].map((m) => m[1]));
    assert.ok(scripts.length > 0, 'the web demo is built in the image with `npm run <script>`');
    for (const script of scripts) assert.ok(script in packageJson.scripts, `npm run ${script}: package.json has no such script`);
  });

  it('runs the server entry that `npm start` runs, as a non-root user under tini', () => {
    const packageJson = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    const startEntry = /\btsx\s+(\S+\.ts)\b/.exec(packageJson.scripts.start)?.[1];
    assert.ok(startEntry !== undefined, `package.json "start" runs no .ts file through tsx: ${packageJson.scripts.start}`);
    const cmd = execForm(lastOf(runtime, 'CMD'), 'CMD');
    assert.deepEqual(cmd.slice(0, 3), ['node', '--import', 'tsx'], 'CMD runs the TypeScript entry through tsx without npm');
    assert.equal(cmd[3], startEntry, 'CMD runs the entry `npm start` runs');
    assert.ok(existsSync(join(REPO_ROOT, cmd[3])), `${cmd[3]} does not exist`);
    const entrypoint = execForm(lastOf(runtime, 'ENTRYPOINT'), 'ENTRYPOINT');
    assert.equal(entrypoint[0], 'tini', 'tini is PID 1, so SIGTERM reaches node and exits are reaped');
    const user = lastOf(runtime, 'USER')?.args ?? 'root';
    assert.ok(!/^(root|0)(:|$)/.test(user), `the image runs as ${user}; run it as a non-root user`);
    const deploymentUser = (podTemplate(theDeployment(kustomize(K8S_DIR)))?.spec as { securityContext?: { runAsUser?: number } }).securityContext?.runAsUser;
    assert.equal(String(deploymentUser), user.split(':')[0], 'the Deployment\'s runAsUser is the image\'s USER');
  });

  it('sets only environment variables the server reads, binds every interface, and exposes PORT', () => {
    const env = dockerEnv(runtime);
    for (const name of Object.keys(env)) assert.ok(SERVER_ENV_NAMES.has(name), `the Dockerfile sets ${name}, which serve/config.ts does not read`);
    const config = loadConfig([], env);
    assert.equal(config.host, '0.0.0.0', 'ENV HOST=0.0.0.0: the default bind address may be loopback only');
    const exposed = runtime.filter((i) => i.keyword === 'EXPOSE').map((i) => Number.parseInt(i.args, 10));
    assert.deepEqual(exposed, [config.port]);
  });

  it('ships the entry, the models and the lockfile: .dockerignore excludes none of them', () => {
    const ignored = readFileSync(DOCKERIGNORE, 'utf8').split('\n').map((l) => l.trim().replace(/\/$/, '')).filter((l) => l !== '' && !l.startsWith('#'));
    const entry = execForm(lastOf(runtime, 'CMD'), 'CMD')[3];
    const needed = [entry.split('/')[0], relative(REPO_ROOT, OPTIONS.modelsDir.default as string).split('/')[0], 'package-lock.json', '.npmrc'];
    for (const path of needed) assert.ok(!ignored.includes(path), `.dockerignore excludes ${path}, which the image needs`);
    assert.ok(ignored.includes('**/node_modules') || ignored.includes('node_modules'), 'node_modules must come from npm ci in the image, not from the host');
  });
});

describe('deploy: the probe and scrape paths are routes the server answers', () => {
  let server: TestServer;
  const container = serverContainer(kustomize(K8S_DIR));
  const healthcheck = readDockerfile().find((i) => i.keyword === 'HEALTHCHECK')?.args ?? '';

  before(async () => {
    // The manifest's own environment, on a free loopback port, with the shipped models.
    server = await startTestServer({ modelsDir: OPTIONS.modelsDir.default as string, env: containerEnv(container) });
  });
  after(async () => {
    await server?.close();
  });

  const get = (path: string): Promise<Response> => fetch(`${server.url}${path}`);

  it('answers the readiness probe with 200 once ready, and an unknown path with 404', async () => {
    const path = container.readinessProbe?.httpGet?.path;
    assert.ok(path !== undefined, 'readinessProbe.httpGet.path');
    assert.equal((await get(path)).status, 200, `readinessProbe path ${path}`);
    assert.equal((await get(`${path}-not-a-route`)).status, 404, 'a path the server does not serve fails the check above');
  });

  it('answers the liveness probe and the image HEALTHCHECK with 200', async () => {
    const livenessPath = container.livenessProbe?.httpGet?.path;
    const healthcheckPath = /https?:\/\/[^/\s"'`]+(\/[\w/-]*)/.exec(healthcheck)?.[1];
    assert.ok(livenessPath !== undefined, 'livenessProbe.httpGet.path');
    assert.ok(healthcheckPath !== undefined, `no URL path in the Dockerfile HEALTHCHECK: ${healthcheck}`);
    assert.equal((await get(livenessPath)).status, 200, `livenessProbe path ${livenessPath}`);
    assert.equal((await get(healthcheckPath)).status, 200, `HEALTHCHECK path ${healthcheckPath}`);
  });

  it('serves Prometheus text at the prometheus.io/path annotation', async () => {
    const path = podTemplate(theDeployment(kustomize(K8S_DIR)))?.metadata.annotations?.['prometheus.io/path'];
    assert.ok(path !== undefined, 'prometheus.io/path annotation');
    const response = await get(path);
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^text\/plain/);
    assert.match(await response.text(), /^# TYPE \w+ (counter|gauge|histogram)$/m);
  });
});
