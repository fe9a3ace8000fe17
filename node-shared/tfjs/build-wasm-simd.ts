/**
 * Assembles ./wasm-simd-kernels.wat into ./wasm-simd-binary.ts (the bytes, base64), which the training
 * kernels load. wabt is not a dependency of the project; install it for this once:
 *
 *   npm install --no-save wabt@1.0.39 && npx tsx node-shared/tfjs/build-wasm-simd.ts
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

interface WabtModule {
  parseWat(filename: string, source: string, features: Record<string, boolean>): {
    validate(): void;
    toBinary(options: object): { buffer: Uint8Array };
    destroy(): void;
  };
}

const watPath = fileURLToPath(new URL('./wasm-simd-kernels.wat', import.meta.url));
const outPath = fileURLToPath(new URL('./wasm-simd-binary.ts', import.meta.url));

// a string variable, so that TypeScript does not need wabt's types to compile
const wabtName: string = 'wabt';
const wabtFactory = ((await import(wabtName)) as { default: () => Promise<WabtModule> }).default;
const wabt = await wabtFactory();
const module = wabt.parseWat('wasm-simd-kernels.wat', readFileSync(watPath, 'utf8'), { simd: true });
module.validate();
const bytes = module.toBinary({}).buffer;
module.destroy();
const base64 = Buffer.from(bytes).toString('base64');
const lines = base64.match(/.{1,100}/g) ?? [];
writeFileSync(
  outPath,
  `// Generated from ./wasm-simd-kernels.wat by ./build-wasm-simd.ts (wabt 1.0.39); do not edit.\n` +
    `export const WASM_SIMD_KERNELS_BASE64 =\n${lines.map((line) => `  '${line}'`).join(' +\n')};\n`,
);
console.log(`${outPath}: ${bytes.length} bytes`);
