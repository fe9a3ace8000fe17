/**
 * `npm run demo`: builds the web demo if it is stale, then serves it on its own with the headers it needs
 * (static-server.ts): the page at /, the models at /models/. No inference happens on the server.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { reportUsageError } from '../../../node-shared/cli-args.ts';
import { DIST_DIR, ensureWebDemoBuilt } from './build.ts';
import { DemoConfigError, loadDemoConfig, type DemoConfig } from './demo-config.ts';
import { startStaticServer } from './static-server.ts';

const USAGE = 'Usage: npm run demo -- [--port 8080] [--host 127.0.0.1] [--models models/]';

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  let config: DemoConfig;
  try {
    config = loadDemoConfig(argv);
  } catch (error) {
    if (!(error instanceof DemoConfigError)) throw error;
    reportUsageError(error.message, USAGE);
    process.exit(2);
  }
  const build = await ensureWebDemoBuilt((line) => console.log(line));
  if (build.built) console.log('web-demo/dist built');
  if (!existsSync(join(config.modelsDir, 'manifest.json'))) {
    console.warn(`warning: ${config.modelsDir} has no manifest.json; export the models (npm run export) or pass --models DIR. The page will say it cannot load them.`);
  }
  const server = await startStaticServer({ distDir: DIST_DIR, modelsDir: config.modelsDir, port: config.port, host: config.host });
  console.log(`web demo at ${server.url} (models from ${config.modelsDir}); Ctrl+C stops it`);
  const stop = (): void => {
    void server.close().then(() => process.exit(0));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

await main();
