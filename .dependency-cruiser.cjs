// The dependency rules between the top-level folders; test/dependency-rules.test.ts runs them in npm test.
// Check by hand: npx depcruise --config .dependency-cruiser.cjs contract imaging node-shared training export serve web-demo/src deploy test
// No cycle between top-level folders is checked in the test, on the folder graph, because dependency-cruiser's
// circular rules only see module cycles or cycles between leaf folders (serve -> training/data, training/models -> serve is missed).

/** The folders whose code runs only as a program or a test: nothing below them may import them. */
const APPLICATIONS = '^(training|export|serve|web-demo|deploy|test)/';

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'browser-imports-only-contract',
      comment: 'Browser code (web-demo/src/browser) imports only contract/, its own folder and onnxruntime-web: it is bundled for the page, where nothing else exists.',
      severity: 'error',
      from: { path: '^web-demo/src/browser/' },
      to: { pathNot: ['^contract/', '^web-demo/src/browser/', '^node_modules/onnxruntime-web/'] },
    },
    {
      name: 'browser-onnxruntime-web-types-only',
      comment: 'Browser code imports only the types of onnxruntime-web: the page loads the prebuilt ort module the build copies, so a value import would bundle a second one.',
      severity: 'error',
      from: { path: '^web-demo/src/browser/' },
      to: { path: '^node_modules/onnxruntime-web/', dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'serve-not-training-export',
      comment: 'serve/ runs exported models: it imports neither training/ nor export/, nor web-demo/ or test/.',
      severity: 'error',
      from: { path: '^serve/' },
      to: { path: '^(training|export|web-demo|test)/' },
    },
    {
      name: 'export-not-serve-training',
      comment: 'export/ reads a saved tfjs model and writes ONNX: it imports neither serve/ nor training/.',
      severity: 'error',
      from: { path: '^export/' },
      to: { path: '^(serve|training)/' },
    },
    {
      name: 'contract-is-self-contained',
      comment: 'contract/ imports only contract/: no other folder of ours, no node: builtins, no npm packages, so it bundles for the browser as it is.',
      severity: 'error',
      from: { path: '^contract/' },
      to: { pathNot: '^contract/' },
    },
    {
      name: 'imaging-imports-only-contract',
      comment: 'imaging/ (Node image decoding) imports contract/ and npm or node: packages, none of node-shared/, training/, export/, serve/, web-demo/, deploy/, test/.',
      severity: 'error',
      from: { path: '^imaging/' },
      to: { path: ['^node-shared/', APPLICATIONS] },
    },
    {
      name: 'node-shared-not-applications',
      comment: 'node-shared/ (Node plumbing) may import contract/ and imaging/, none of training/, export/, serve/, web-demo/, deploy/, test/.',
      severity: 'error',
      from: { path: '^node-shared/' },
      to: { path: APPLICATIONS },
    },
    {
      name: 'only-tests-import-test',
      comment: 'Nothing outside test/ imports test/: tests and their helpers are not part of any program.',
      severity: 'error',
      from: { pathNot: '^test/' },
      to: { path: '^test/' },
    },
  ],
  options: {
    // Type-only imports count: a browser file that imports a Node type still couples the two.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^web-demo/dist/' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      mainFields: ['module', 'main', 'types', 'typings'],
    },
  },
};
