/**
 * The page: loads the models, takes an image (file picker, drag and drop, paste, webcam), and shows the model
 * input and every task's probabilities. `window.demo` exposes the same prediction to automation.
 */
import type { Task } from '../../../contract/labels.ts';
import type { InputSpec } from '../../../contract/preprocess.ts';
import { PageConfigError, readPageConfig, DEFAULT_PAGE_CONFIG, type PageConfig } from './config.ts';
import { decodeImageBlob, ImageSizeError, NotAnImageError, readPixels } from './decode.ts';
import { Classifier, type ModelInput, type Prediction, type TaskPrediction } from './models.ts';
import { loadRuntime, runtimeInfo, webGpuAdapterAvailable, webGpuAvailable, type Backend, type RuntimeInfo } from './runtime.ts';

/** What `window.demo.ready` resolves to. */
export interface DemoInfo extends RuntimeInfo {
  models: { task: string; file: string; labels: string[]; input: InputSpec }[];
  /** the sessions that run them: each one's tasks, and for a merged graph its nodes and the separate graphs' */
  graphs: { tasks: string[]; nodes?: { separate: number; merged: number } }[];
}

/** The automation API (documented in web-demo/README.md). */
export interface DemoApi {
  /** resolves when the models are loaded; rejects with the reason if they cannot be */
  ready: Promise<DemoInfo>;
  /** the prediction for an image, in the shape of the server's POST /v1/predict answer; does not change the page */
  predict(image: Blob): Promise<Prediction>;
}

declare global {
  interface Window {
    demo: DemoApi;
  }
}

/** Headings of the tasks; the class labels themselves come from each model's metadata. */
const TASK_TITLES: Readonly<Record<Task, string>> = { age: 'Age group', ethnicity: 'Ethnicity', gender: 'Gender' };
const BACKEND_NAMES: Readonly<Record<Backend, string>> = { wasm: 'WebAssembly (CPU)', webgpu: 'WebGPU' };
/** The webcam guide's side, as a fraction of the frame's shorter side: a face should fill what the model sees. */
const GUIDE_FRACTION = 0.7;
/** How long the live region stays empty before a new line, so that a line equal to the last one is read again. */
const ANNOUNCE_DELAY_MS = 100;

function element<T extends HTMLElement>(id: string, type: new () => T): T {
  const found = document.getElementById(id);
  if (!(found instanceof type)) throw new Error(`The page has no <${type.name}> #${id}`);
  return found;
}

const ui = {
  status: element('status', HTMLElement),
  statusText: element('status-text', HTMLElement),
  backend: element('backend', HTMLSelectElement),
  dropZone: element('drop-zone', HTMLElement),
  fileInput: element('file-input', HTMLInputElement),
  cameraStart: element('camera-start', HTMLButtonElement),
  cameraView: element('camera-view', HTMLElement),
  cameraVideo: element('camera-video', HTMLVideoElement),
  cameraGuide: element('camera-guide', HTMLElement),
  cameraCapture: element('camera-capture', HTMLButtonElement),
  cameraStop: element('camera-stop', HTMLButtonElement),
  message: element('message', HTMLElement),
  announcer: element('announcer', HTMLElement),
  resultsEmpty: element('results-empty', HTMLElement),
  resultsPanel: element('results-panel', HTMLElement),
  results: element('results', HTMLElement),
  sourceImage: element('source-image', HTMLImageElement),
  cropCanvas: element('crop-canvas', HTMLCanvasElement),
  cropCaption: element('crop-caption', HTMLElement),
  tasks: element('tasks', HTMLElement),
  timings: element('timings', HTMLElement),
};

function setStatus(state: 'loading' | 'ready' | 'busy' | 'error', text: string): void {
  ui.status.dataset.state = state;
  ui.statusText.textContent = text;
}

let announceTimer: ReturnType<typeof setTimeout> | undefined;

/** Says `text` to screen readers through the live region that is always on the page. */
function announce(text: string): void {
  clearTimeout(announceTimer);
  ui.announcer.textContent = '';
  announceTimer = setTimeout(() => (ui.announcer.textContent = text), ANNOUNCE_DELAY_MS);
}

function showMessage(text: string): void {
  ui.message.textContent = text;
  ui.message.hidden = false;
  announce(text);
}

function clearMessage(): void {
  ui.message.hidden = true;
  ui.message.textContent = '';
}

const errorText = (error: unknown): string => (error instanceof Error ? error.message : String(error));
const percent = (p: number): string => `${(p * 100).toFixed(1)}%`;

// ---------------------------------------------------------------------------------------------
// Start-up: config, runtime, models.

let config: PageConfig;
let configError: string | undefined;
try {
  config = readPageConfig(location.search);
} catch (error) {
  if (!(error instanceof PageConfigError)) throw error;
  config = { ...DEFAULT_PAGE_CONFIG };
  configError = `${error.message}. Using the defaults.`;
}
if (config.backend === 'webgpu' && !webGpuAvailable()) {
  configError = 'WebGPU is not available in this browser; using WebAssembly instead.';
  config.backend = 'wasm';
}
if (configError !== undefined) showMessage(configError);

ui.backend.value = config.backend;
if (!webGpuAvailable()) {
  const option = ui.backend.querySelector<HTMLOptionElement>('option[value="webgpu"]');
  if (option !== null) {
    option.disabled = true;
    option.textContent = 'WebGPU (not available in this browser)';
  }
}

async function start(): Promise<{ classifier: Classifier; info: DemoInfo }> {
  if (config.backend === 'webgpu' && !(await webGpuAdapterAvailable())) {
    showMessage('WebGPU gives this page no GPU adapter here; using WebAssembly instead.');
    config.backend = 'wasm';
    ui.backend.value = 'wasm';
  }
  await loadRuntime(config.backend, new URL('ort/', document.baseURI).href, config.threads);
  const classifier = await Classifier.load(new URL(config.models, document.baseURI));
  await classifier.warmUp();
  const info: DemoInfo = {
    ...runtimeInfo(),
    models: classifier.models.map((m) => ({ task: m.task, file: m.file, labels: [...m.metadata.labels], input: { ...m.metadata.input } })),
    graphs: classifier.graphs.map((g) => ({ tasks: g.members.map((m) => m.model.task), ...(g.nodes === undefined ? {} : { nodes: { ...g.nodes } }) })),
  };
  return { classifier, info };
}

const started = start();
const classifierReady = started.then((s) => s.classifier);
const ready = started.then((s) => s.info);
// Both are awaited where they are used, and the page reports a failure itself, so neither is left unhandled.
classifierReady.catch(() => {});
ready.catch(() => {});

function showReady(info: DemoInfo): void {
  const threads = `${info.threads} thread${info.threads === 1 ? '' : 's'}`;
  const isolation = info.crossOriginIsolated ? '' : ' (the page is not cross-origin isolated, so no threads)';
  setStatus('ready', `Ready: ${info.models.length} models on ${BACKEND_NAMES[info.backend]}, ${threads}${isolation}`);
  const graphs = info.graphs.map((g) => (g.tasks.length > 1 ? `${g.tasks.join(' + ')} merged into one graph` : g.tasks[0])).join('; ');
  ui.status.title = `onnxruntime-web ${info.version}; ${info.models.map((m) => `${m.task}: ${m.input.width}x${m.input.height}x${m.input.channels}`).join(', ')}; sessions: ${graphs}`;
}

// Said once, at start-up: after each answer the line goes back to the same "Ready", which is not news.
ready.then(
  (info) => {
    showReady(info);
    announce(ui.statusText.textContent ?? '');
  },
  (error: unknown) => {
    setStatus('error', `The models could not be loaded: ${errorText(error)}`);
    announce(ui.statusText.textContent ?? '');
  },
);

window.demo = {
  ready,
  async predict(image: Blob): Promise<Prediction> {
    if (!(image instanceof Blob)) throw new TypeError(`demo.predict(image) takes a Blob or File; got ${Object.prototype.toString.call(image)}`);
    const startedAt = performance.now();
    const classifier = await classifierReady;
    return (await classifier.predict(() => decodeImageBlob(image), startedAt)).prediction;
  },
};

// ---------------------------------------------------------------------------------------------
// Showing a prediction.

function drawModelInput(canvas: HTMLCanvasElement, input: ModelInput): void {
  const { width, height, channels } = input.spec;
  canvas.width = width;
  canvas.height = height;
  const image = new ImageData(width, height);
  for (let i = 0; i < width * height; i++) {
    for (let c = 0; c < 3; c++) image.data[i * 4 + c] = input.bytes[i * channels + (channels === 1 ? 0 : c)];
    image.data[i * 4 + 3] = 255;
  }
  canvas.getContext('2d')?.putImageData(image, 0, 0);
}

const topLabel = (prediction: TaskPrediction): string => prediction.group ?? prediction.label ?? String(prediction.index);
const expectedAge = (years: number): string => `expected age ${Math.round(years)} years`;
const EXPECTED_AGE_TITLE = 'The mean of the predicted distribution over ages: it can fall outside the most likely age group shown';

/** Text that only screen readers get, between parts that CSS alone sets apart (else they read "21-4075.9%"). */
function separator(text: string): HTMLElement {
  const hidden = document.createElement('span');
  hidden.className = 'visually-hidden';
  hidden.textContent = text;
  return hidden;
}

/** One line for screen readers, e.g. "Age group: 21-40, 75.9%, expected age 34 years. Ethnicity: White, 71.4%." */
function summary(classifier: Classifier, prediction: Prediction): string {
  return classifier.models
    .map(({ task }) => {
      const answer = prediction[task] as TaskPrediction;
      const years = answer.years === undefined ? '' : `, ${expectedAge(answer.years)}`;
      return `${TASK_TITLES[task as Task] ?? task}: ${topLabel(answer)}, ${percent(answer.probabilities[answer.index])}${years}.`;
    })
    .join(' ');
}

function taskCard(task: string, prediction: TaskPrediction, labels: readonly string[]): HTMLElement {
  const card = document.createElement('section');
  card.className = 'task';
  const headingId = `task-${task}`;
  card.setAttribute('aria-labelledby', headingId);
  card.dataset.task = task;
  const heading = document.createElement('h3');
  heading.id = headingId;
  heading.textContent = TASK_TITLES[task as Task] ?? task;
  const answer = document.createElement('p');
  answer.className = 'answer';
  const label = document.createElement('span');
  label.textContent = topLabel(prediction);
  const confidence = document.createElement('small');
  confidence.textContent = percent(prediction.probabilities[prediction.index]);
  // Each part stays whole (CSS); <wbr> lets the line wrap between them.
  answer.append(label, separator(', '), document.createElement('wbr'), confidence);
  if (prediction.years !== undefined) {
    const years = document.createElement('small');
    years.textContent = expectedAge(prediction.years);
    years.title = EXPECTED_AGE_TITLE;
    answer.append(separator(', '), document.createElement('wbr'), years);
  }
  const list = document.createElement('ul');
  list.className = 'bars';
  list.setAttribute('aria-label', `${heading.textContent}: probability of each class`);
  prediction.probabilities.forEach((p, i) => {
    const item = document.createElement('li');
    if (i === prediction.index) item.className = 'top';
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = labels[i] ?? String(i);
    const track = document.createElement('span');
    track.className = 'track';
    track.setAttribute('aria-hidden', 'true');
    const fill = document.createElement('span');
    fill.className = 'fill';
    fill.style.width = `${Math.max(0, Math.min(1, p)) * 100}%`;
    track.append(fill);
    const value = document.createElement('span');
    value.className = 'pct';
    value.textContent = percent(p);
    item.append(name, separator(': '), track, value);
    list.append(item);
  });
  card.append(heading, answer, list);
  return card;
}

/** Shows `url` as the photo (or none), freeing the object URL of the photo it replaces. */
function setSourceImage(url: string | undefined): void {
  const previous = ui.sourceImage.src;
  if (url === undefined) ui.sourceImage.removeAttribute('src');
  else ui.sourceImage.src = url;
  if (previous.startsWith('blob:')) URL.revokeObjectURL(previous);
}

function render(classifier: Classifier, prediction: Prediction, inputs: readonly ModelInput[], sourceUrl: string): void {
  setSourceImage(sourceUrl);
  const first = inputs[0];
  drawModelInput(ui.cropCanvas, first);
  const { width, height, channels } = first.spec;
  const description = `${width}×${height} ${channels === 1 ? 'grayscale' : 'colour'}`;
  ui.cropCaption.textContent = `What the model sees: ${description}`;
  ui.cropCanvas.setAttribute('aria-label', `The model input, ${description}`);
  const cards = classifier.models.map((model) => taskCard(model.task, prediction[model.task] as TaskPrediction, model.metadata.labels));
  ui.tasks.replaceChildren(...cards);
  const t = prediction.timingsMs;
  ui.timings.textContent = `Inference ${t.inference.toFixed(1)} ms · decoding and preprocessing ${t.decode.toFixed(1)} ms · total ${t.total.toFixed(1)} ms`;
  ui.resultsEmpty.hidden = true;
  ui.results.hidden = false;
  announce(summary(classifier, prediction));
  revealResults();
}

/** Takes a rejected image's predecessor off the page, so that its answers cannot be read as the new image's. */
function clearResults(): void {
  setSourceImage(undefined);
  ui.cropCanvas.width = 0;
  ui.cropCanvas.height = 0;
  ui.tasks.replaceChildren();
  ui.timings.textContent = '';
  ui.results.hidden = true;
  ui.resultsEmpty.hidden = false;
}

/** On a narrow screen the answers are below the input: scroll to them, unless the first one is already in view. */
function revealResults(): void {
  const first = ui.tasks.firstElementChild ?? ui.results;
  const { top, bottom } = first.getBoundingClientRect();
  if (top >= 0 && bottom <= window.innerHeight) return;
  const smooth = !window.matchMedia('(prefers-reduced-motion: reduce)').matches;
  ui.resultsPanel.scrollIntoView({ behavior: smooth ? 'smooth' : 'auto', block: 'start' });
}

/** The latest image wins: an answer for an older one is dropped. */
let latest = 0;

async function showPrediction(image: Blob): Promise<void> {
  const ticket = ++latest;
  clearMessage();
  const startedAt = performance.now();
  let classifier: Classifier;
  try {
    classifier = await classifierReady;
  } catch (error) {
    showMessage(`The models could not be loaded, so nothing can be predicted: ${errorText(error)}`);
    return;
  }
  setStatus('busy', 'Predicting…');
  try {
    const { prediction, inputs } = await classifier.predict(() => decodeImageBlob(image), startedAt);
    if (ticket !== latest) return;
    render(classifier, prediction, inputs, URL.createObjectURL(image));
  } catch (error) {
    if (ticket !== latest) return;
    clearResults();
    showMessage(error instanceof NotAnImageError || error instanceof ImageSizeError ? error.message : `Could not predict: ${errorText(error)}`);
  } finally {
    if (ticket === latest) ready.then(showReady, () => {});
  }
}

// ---------------------------------------------------------------------------------------------
// Input: file picker, drag and drop, paste.

ui.fileInput.addEventListener('change', () => {
  const file = ui.fileInput.files?.[0];
  if (file !== undefined) void showPrediction(file);
  // Choosing the same file again must fire `change` again.
  ui.fileInput.value = '';
});

let dragDepth = 0;
document.addEventListener('dragenter', (event) => {
  event.preventDefault();
  dragDepth++;
  ui.dropZone.classList.add('dragging');
});
document.addEventListener('dragleave', () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) ui.dropZone.classList.remove('dragging');
});
// Anywhere on the page: a dropped file must not make the browser navigate away to it.
document.addEventListener('dragover', (event) => event.preventDefault());
document.addEventListener('drop', (event) => {
  event.preventDefault();
  dragDepth = 0;
  ui.dropZone.classList.remove('dragging');
  const file = event.dataTransfer?.files[0];
  if (file !== undefined) void showPrediction(file);
  else showMessage('Nothing to use in what was dropped: drop an image file.');
});

document.addEventListener('paste', (event) => {
  const items = Array.from(event.clipboardData?.items ?? []);
  const file = items.find((item) => item.kind === 'file')?.getAsFile() ?? null;
  if (file === null) {
    showMessage('The clipboard holds no image to paste. Copy an image (not its address), then paste again.');
    return;
  }
  event.preventDefault();
  void showPrediction(file);
});

// ---------------------------------------------------------------------------------------------
// Webcam: a preview with a square guide; capture takes exactly the square.

let stream: MediaStream | undefined;

function stopCamera(): void {
  for (const track of stream?.getTracks() ?? []) track.stop();
  stream = undefined;
  ui.cameraVideo.srcObject = null;
  ui.cameraView.hidden = true;
  ui.cameraStart.hidden = false;
}

/** The guide square in video pixels, centred. */
function guideSquare(video: HTMLVideoElement): { left: number; top: number; side: number } {
  const side = Math.round(GUIDE_FRACTION * Math.min(video.videoWidth, video.videoHeight));
  return { left: Math.floor((video.videoWidth - side) / 2), top: Math.floor((video.videoHeight - side) / 2), side };
}

ui.cameraStart.addEventListener('click', async () => {
  clearMessage();
  if (navigator.mediaDevices?.getUserMedia === undefined) {
    showMessage('This browser offers no webcam here: a page can use the webcam only over HTTPS or from localhost.');
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'user', width: { ideal: 1280 }, height: { ideal: 720 } }, audio: false });
  } catch (error) {
    const denied = error instanceof DOMException && error.name === 'NotAllowedError';
    showMessage(denied ? 'The webcam was not allowed. Allow it in the browser, or choose a photo instead.' : `The webcam could not be started: ${errorText(error)}`);
    return;
  }
  ui.cameraVideo.srcObject = stream;
  await ui.cameraVideo.play();
  const { videoWidth: width, videoHeight: height } = ui.cameraVideo;
  const { side } = guideSquare(ui.cameraVideo);
  ui.cameraGuide.style.width = `${(side / width) * 100}%`;
  ui.cameraGuide.style.height = `${(side / height) * 100}%`;
  ui.cameraView.hidden = false;
  ui.cameraStart.hidden = true;
  ui.cameraCapture.focus();
});

ui.cameraCapture.addEventListener('click', async () => {
  const video = ui.cameraVideo;
  if (stream === undefined || video.videoWidth === 0) return;
  const { left, top, side } = guideSquare(video);
  const pixels = readPixels(video, left, top, side, side);
  const canvas = new OffscreenCanvas(side, side);
  canvas.getContext('2d')?.putImageData(new ImageData(new Uint8ClampedArray(pixels.data), side, side), 0, 0);
  // Lossless, so the prediction sees exactly the captured pixels.
  await showPrediction(await canvas.convertToBlob({ type: 'image/png' }));
});

ui.cameraStop.addEventListener('click', () => {
  stopCamera();
  ui.cameraStart.focus();
});
