/** The config of `npm run demo`: flags override the environment, which overrides the documented defaults. */
import { resolve } from 'node:path';
import { MODELS_DIR } from './build.ts';

export interface DemoConfig {
  /** TCP port; 0 picks a free one. Flag --port, environment DEMO_PORT; default 8080 */
  port: number;
  /** interface to listen on. Flag --host, environment DEMO_HOST; default 127.0.0.1 */
  host: string;
  /** folder with manifest.json and the .onnx files. Flag --models, environment DEMO_MODELS_DIR; default models/ */
  modelsDir: string;
}

export class DemoConfigError extends Error {
  override name = 'DemoConfigError';
}

const OPTIONS: { readonly [K in keyof DemoConfig]: { flag: string; env: string } } = {
  port: { flag: '--port', env: 'DEMO_PORT' },
  host: { flag: '--host', env: 'DEMO_HOST' },
  modelsDir: { flag: '--models', env: 'DEMO_MODELS_DIR' },
};

function parse(key: keyof DemoConfig, raw: string, source: string): string | number {
  if (key === 'port') {
    const port = Number(raw);
    if (raw.trim() === '' || !Number.isInteger(port) || port < 0 || port > 65535) throw new DemoConfigError(`${source} must be a whole number from 0 to 65535; got "${raw}"`);
    return port;
  }
  if (raw === '') throw new DemoConfigError(`${source} must not be empty`);
  return key === 'modelsDir' ? resolve(raw) : raw;
}

export function loadDemoConfig(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): DemoConfig {
  const config: Record<string, string | number> = { port: 8080, host: '127.0.0.1', modelsDir: MODELS_DIR };
  const keys = Object.keys(OPTIONS) as (keyof DemoConfig)[];
  const knownEnv = keys.map((key) => OPTIONS[key].env);
  const unknownEnv = Object.keys(env).find((name) => name.startsWith('DEMO_') && !knownEnv.includes(name));
  if (unknownEnv !== undefined) throw new DemoConfigError(`Unknown environment variable ${unknownEnv}; expected one of: ${knownEnv.join(', ')}`);
  for (const key of keys) {
    const raw = env[OPTIONS[key].env];
    if (raw !== undefined) config[key] = parse(key, raw, OPTIONS[key].env);
  }
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split(/=(.*)/s, 2);
    const key = keys.find((k) => OPTIONS[k].flag === flag);
    if (key === undefined) throw new DemoConfigError(`Unknown argument "${argv[i]}"; expected one of: ${keys.map((k) => OPTIONS[k].flag).join(', ')}, --help`);
    const raw = inline ?? argv[++i];
    if (raw === undefined) throw new DemoConfigError(`Option ${flag} needs a value`);
    config[key] = parse(key, raw, flag);
  }
  return config as unknown as DemoConfig;
}
