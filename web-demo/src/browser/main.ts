/**
 * The page: loads the models, takes a photo (file picker, drag and drop, paste, webcam capture), finds its faces
 * and shows each one's box and label over the photo; a selected face shows its aligned crop as the models see it
 * and every task's probabilities. The live webcam view labels faces frame by frame. `window.demo` exposes the
 * same prediction to automation, in the server's shape.
 */
import type { Task } from '../../../contract/labels.ts';
import type { InputSpec } from '../../../contract/preprocess.ts';
import { UNCERTAIN_BELOW } from '../../../contract/prediction.ts';
import { PageConfigError, readPageConfig, DEFAULT_PAGE_CONFIG, type PageConfig } from './config.ts';
import { decodePhoto, ImageSizeError, NotAnImageError, readFrame } from './decode.ts';
import { Classifier, DETECT_MODES, type DetectMode, type FacePrediction, type ModelInput, type PhotoPrediction, type TaskPrediction } from './models.ts';
import { loadRuntime, runtimeInfo, webGpuAdapterAvailable, webGpuAvailable, type Backend, type RuntimeInfo } from './runtime.ts';

/** What `window.demo.ready` resolves to. */
export interface DemoInfo extends RuntimeInfo {
  models: { task: string; file: string; labels: string[]; input: InputSpec }[];
  /** the sessions that run them: each one's tasks, and for a merged graph its nodes and the separate graphs' */
  graphs: { tasks: string[]; nodes?: { separate: number; merged: number } }[];
  /** the face detectors the manifest lists (the first one finds the faces) */
  detectors: { name: string; file: string; input: { height: number; width: number } }[];
}

export interface PredictOptions {
  /** 'faces' (default): find the faces; 'none': the whole image is one face, as the server's `?detect=none` */
  detect?: DetectMode;
}

/** The automation API (documented in web-demo/README.md). */
export interface DemoApi {
  /** resolves when the models are loaded; rejects with the reason if they cannot be */
  ready: Promise<DemoInfo>;
  /** the answer for an image, in the shape of the server's POST /v1/predict answer; does not change the page */
  predict(image: Blob, options?: PredictOptions): Promise<PhotoPrediction>;
}

declare global {
  interface Window {
    demo: DemoApi;
  }
}

/** Headings of the tasks; the class labels themselves come from each model's metadata. */
const TASK_TITLES: Readonly<Record<Task, string>> = { age: 'Age group', ethnicity: 'Ethnicity', gender: 'Gender' };
const BACKEND_NAMES: Readonly<Record<Backend, string>> = { wasm: 'WebAssembly (CPU)', webgpu: 'WebGPU' };
/** How long the live region stays empty before a new line, so that a line equal to the last one is read again. */
const ANNOUNCE_DELAY_MS = 100;
/** Webcam frames are read at most this many pixels a side: the detector reads 256, and a face a fifth of the frame keeps its eyes 12 px apart. */
const CAMERA_WORKING_SIDE = 640;
/** The webcam's frame rate and time per frame are over this many of the latest frames. */
const CAMERA_STATS_FRAMES = 30;
/** How often the frame rate line is rewritten. */
const CAMERA_STATS_INTERVAL_MS = 500;

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
  faceCrop: element('face-crop', HTMLInputElement),
  cameraStart: element('camera-start', HTMLButtonElement),
  cameraView: element('camera-view', HTMLElement),
  cameraVideo: element('camera-video', HTMLVideoElement),
  cameraOverlay: element('camera-overlay', HTMLCanvasElement),
  cameraStats: element('camera-stats', HTMLElement),
  cameraCapture: element('camera-capture', HTMLButtonElement),
  cameraStop: element('camera-stop', HTMLButtonElement),
  message: element('message', HTMLElement),
  announcer: element('announcer', HTMLElement),
  resultsEmpty: element('results-empty', HTMLElement),
  resultsPanel: element('results-panel', HTMLElement),
  results: element('results', HTMLElement),
  facesSummary: element('faces-summary', HTMLElement),
  photoFrame: element('photo-frame', HTMLElement),
  sourceImage: element('source-image', HTMLImageElement),
  faceBoxes: element('face-boxes', HTMLElement),
  faceDetail: element('face-detail', HTMLElement),
  faceTitle: element('face-title', HTMLElement),
  faceReason: element('face-reason', HTMLElement),
  cropFigure: element('crop-figure', HTMLElement),
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
    detectors: classifier.detectors.map((d) => ({ name: d.name, file: d.file, input: { height: d.input.height, width: d.input.width } })),
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

/** The detect mode `options` asks for, or a TypeError naming what is allowed. */
function detectModeOf(options: PredictOptions | undefined): DetectMode {
  if (options === undefined) return 'faces';
  if (typeof options !== 'object' || options === null) throw new TypeError(`demo.predict(image, options) takes an object such as { detect: 'none' }; got ${String(options)}`);
  const unknown = Object.keys(options).filter((key) => key !== 'detect');
  if (unknown.length > 0) throw new TypeError(`Unknown option "${unknown[0]}" for demo.predict; expected: detect`);
  const detect = options.detect ?? 'faces';
  if (!DETECT_MODES.includes(detect)) throw new TypeError(`detect "${String(detect)}" is not a mode; expected one of: ${DETECT_MODES.join(', ')} (none: the whole image is one face)`);
  return detect;
}

window.demo = {
  ready,
  async predict(image: Blob, options?: PredictOptions): Promise<PhotoPrediction> {
    if (!(image instanceof Blob)) throw new TypeError(`demo.predict(image) takes a Blob or File; got ${Object.prototype.toString.call(image)}`);
    const detect = detectModeOf(options);
    const startedAt = performance.now();
    const classifier = await classifierReady;
    return (await classifier.predict(() => decodePhoto(image), detect, startedAt)).prediction;
  },
};

// ---------------------------------------------------------------------------------------------
// Showing a prediction: the photo with a box and label per face, and the selected face's crop and bars.

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

/** What an uncertain answer says beside its label. */
const UNCERTAIN_TEXT = `uncertain: under ${Math.round(UNCERTAIN_BELOW * 100)}%, close to a guess`;

const topLabel = (prediction: TaskPrediction): string => prediction.group ?? prediction.label ?? String(prediction.index);
const expectedAge = (years: number): string => `expected age ${Math.round(years)} years`;
const EXPECTED_AGE_TITLE = 'The mean of the predicted distribution over ages: it can fall outside the most likely age group shown';

/** A face's tasks, in the models' order; none for a face that was not judged. */
function faceTasks(classifier: Classifier, face: FacePrediction): { task: string; prediction: TaskPrediction; labels: readonly string[] }[] {
  if (face.reason !== undefined) return [];
  return classifier.models.flatMap((model) => {
    const prediction = face[model.task] as TaskPrediction | undefined;
    return prediction === undefined ? [] : [{ task: model.task, prediction, labels: model.metadata.labels }];
  });
}

/** Tasks in the order a face's short label names them: age, gender, then the rest. */
const LABEL_ORDER: readonly string[] = ['age', 'gender'];
const labelRank = (task: string): number => (LABEL_ORDER.includes(task) ? LABEL_ORDER.indexOf(task) : LABEL_ORDER.length);

/** The short label drawn over a face: "34 y (21-40) · male · White", or why it was not judged. */
function faceLabel(classifier: Classifier, face: FacePrediction): string {
  if (face.reason !== undefined) return `not judged: ${face.reason.split(':')[0]}`;
  return faceTasks(classifier, face)
    .sort((a, b) => labelRank(a.task) - labelRank(b.task))
    .map(({ prediction }) => (prediction.years === undefined ? topLabel(prediction) : `${Math.round(prediction.years)} y (${topLabel(prediction)})`))
    .join(' · ');
}

/** Text that only screen readers get, between parts that CSS alone sets apart (else they read "21-4075.9%"). */
function separator(text: string): HTMLElement {
  const hidden = document.createElement('span');
  hidden.className = 'visually-hidden';
  hidden.textContent = text;
  return hidden;
}

/** One line for screen readers, e.g. "Age group: 21-40, 75.9%, expected age 34 years. Ethnicity: White, 71.4%." */
function summary(classifier: Classifier, face: FacePrediction): string {
  if (face.reason !== undefined) return `Not judged: ${face.reason}.`;
  return faceTasks(classifier, face)
    .map(({ task, prediction }) => {
      const years = prediction.years === undefined ? '' : `, ${expectedAge(prediction.years)}`;
      return `${TASK_TITLES[task as Task] ?? task}: ${topLabel(prediction)}, ${percent(prediction.probabilities[prediction.index])}${years}.`;
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
  if (prediction.uncertain) {
    // The probabilities are calibrated: under UNCERTAIN_BELOW the answer is close to a guess, and says so.
    card.classList.add('uncertain');
    const doubt = document.createElement('small');
    doubt.className = 'doubt';
    doubt.textContent = UNCERTAIN_TEXT;
    answer.append(separator(', '), document.createElement('wbr'), doubt);
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

/** What is on the page: the last answer, its faces' model inputs, and the selected face. */
interface Shown {
  classifier: Classifier;
  prediction: PhotoPrediction;
  inputs: (ModelInput[] | undefined)[];
  selected: number;
}

let shown: Shown | undefined;

const faceName = (index: number, count: number): string => (count === 1 ? 'The face' : `Face ${index + 1} of ${count}`);

/** A box (a button) over the photo per face, placed in percent of the photo's size so that it follows the photo's scaling. */
function faceBoxes(classifier: Classifier, prediction: PhotoPrediction): HTMLElement[] {
  const { width, height } = prediction.image;
  const count = prediction.faces.length;
  return prediction.faces.map((face, i) => {
    const item = document.createElement('li');
    item.className = face.reason === undefined ? 'face-box' : 'face-box not-judged';
    // A box in the right half carries its label on its right edge, so the label stays over the photo.
    if (face.box.x + face.box.width / 2 > width / 2) item.classList.add('label-end');
    item.style.left = `${(face.box.x / width) * 100}%`;
    item.style.top = `${(face.box.y / height) * 100}%`;
    item.style.width = `${(face.box.width / width) * 100}%`;
    item.style.height = `${(face.box.height / height) * 100}%`;
    const button = document.createElement('button');
    button.type = 'button';
    button.dataset.face = String(i);
    button.setAttribute('aria-pressed', 'false');
    const label = document.createElement('span');
    label.className = 'face-label';
    label.textContent = faceLabel(classifier, face);
    // Named in words (the label's "·" and "y" are for the eye); the box's number orders it like the list.
    button.setAttribute('aria-label', `${faceName(i, count)}: ${face.reason === undefined ? faceLabel(classifier, face).replace(/(\d+) y \(/, 'about $1 years (') : `not judged, ${face.reason}`}`);
    button.append(label);
    button.addEventListener('click', () => selectFace(i, true));
    item.append(button);
    return item;
  });
}

/** Shows face `index`'s crop and bars (or why it was not judged), and marks its box. */
function selectFace(index: number, announceIt: boolean): void {
  if (shown === undefined) return;
  shown.selected = index;
  const { classifier, prediction, inputs } = shown;
  const face = prediction.faces[index];
  ui.faceBoxes.querySelectorAll<HTMLButtonElement>('button[data-face]').forEach((button) => button.setAttribute('aria-pressed', String(button.dataset.face === String(index))));
  ui.faceDetail.hidden = false;
  ui.faceTitle.textContent = prediction.faces.length === 1 ? 'The face' : `Face ${index + 1} of ${prediction.faces.length}`;
  const input = inputs[index]?.[0];
  ui.cropFigure.hidden = input === undefined;
  if (input !== undefined) {
    drawModelInput(ui.cropCanvas, input);
    const { width, height, channels } = input.spec;
    const description = `${width}×${height} ${channels === 1 ? 'grayscale' : 'colour'}`;
    const how = face.landmarks === null ? 'the whole photo' : 'aligned by its eyes, nose and mouth';
    ui.cropCaption.textContent = `What the models see: ${description}, ${how}`;
    ui.cropCanvas.setAttribute('aria-label', `The model input, ${description}, ${how}`);
  } else {
    ui.cropCanvas.width = 0;
    ui.cropCanvas.height = 0;
  }
  ui.faceReason.hidden = face.reason === undefined;
  ui.faceReason.textContent = face.reason === undefined ? '' : `Not judged: ${face.reason}.`;
  ui.tasks.replaceChildren(...faceTasks(classifier, face).map(({ task, prediction: p, labels }) => taskCard(task, p, labels)));
  if (announceIt) announce(`${faceName(index, prediction.faces.length)}. ${summary(classifier, face)}`);
}

/** The line above the photo: how many faces, how many judged, or that none was found. */
function facesSummaryText(prediction: PhotoPrediction, detect: DetectMode): string {
  const count = prediction.faces.length;
  if (detect === 'none') return 'The whole photo taken as one face.';
  if (count === 0) return 'No face found in this photo. If the photo is a face crop, tick “The photo is a face crop” to judge the whole image as one face.';
  const notJudged = prediction.faces.filter((face) => face.reason !== undefined).length;
  const found = `${count} face${count === 1 ? '' : 's'} found`;
  const judged = notJudged === 0 ? '' : `; ${notJudged} too small or cut off to judge`;
  const select = count > 1 ? '. Select a face to see what the models see and their probabilities.' : '.';
  return `${found}${judged}${select}`;
}

function render(classifier: Classifier, prediction: PhotoPrediction, inputs: (ModelInput[] | undefined)[], sourceUrl: string, detect: DetectMode): void {
  setSourceImage(sourceUrl);
  shown = { classifier, prediction, inputs, selected: 0 };
  ui.facesSummary.textContent = facesSummaryText(prediction, detect);
  ui.faceBoxes.replaceChildren(...faceBoxes(classifier, prediction));
  ui.faceBoxes.hidden = prediction.faces.length === 0;
  const t = prediction.timingsMs;
  ui.timings.textContent = `Inference ${t.inference.toFixed(1)} ms · face detection ${t.detect.toFixed(1)} ms · alignment ${t.align.toFixed(1)} ms · decoding and preprocessing ${t.decode.toFixed(1)} ms · total ${t.total.toFixed(1)} ms`;
  ui.resultsEmpty.hidden = true;
  ui.results.hidden = false;
  if (prediction.faces.length > 0) {
    selectFace(0, false);
    const count = prediction.faces.length;
    const intro = count === 1 ? '' : `${facesSummaryText(prediction, detect).split('.')[0]}. ${faceName(0, count)}: `;
    announce(`${intro}${summary(classifier, prediction.faces[0])}`);
  } else {
    ui.faceDetail.hidden = true;
    ui.tasks.replaceChildren();
    announce(ui.facesSummary.textContent);
  }
  revealResults();
}

/** Takes a rejected image's predecessor off the page, so that its answers cannot be read as the new image's. */
function clearResults(): void {
  shown = undefined;
  setSourceImage(undefined);
  ui.faceBoxes.replaceChildren();
  ui.cropCanvas.width = 0;
  ui.cropCanvas.height = 0;
  ui.tasks.replaceChildren();
  ui.timings.textContent = '';
  ui.results.hidden = true;
  ui.resultsEmpty.hidden = false;
}

/** On a narrow screen the answers are below the input: scroll to the photo, unless it is already in view. */
function revealResults(): void {
  const { top, bottom } = ui.photoFrame.getBoundingClientRect();
  if (top >= 0 && bottom <= window.innerHeight) return;
  const smooth = !window.matchMedia('(prefers-reduced-motion: reduce)').matches;
  ui.resultsPanel.scrollIntoView({ behavior: smooth ? 'smooth' : 'auto', block: 'start' });
}

/** The latest image wins: an answer for an older one is dropped. */
let latest = 0;
/** The last photo shown, predicted again when "The photo is a face crop" changes. */
let lastImage: Blob | undefined;

const detectMode = (): DetectMode => (ui.faceCrop.checked ? 'none' : 'faces');

async function showPrediction(image: Blob): Promise<void> {
  const ticket = ++latest;
  lastImage = image;
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
  const detect = detectMode();
  try {
    const { prediction, inputs } = await classifier.predict(() => decodePhoto(image), detect, startedAt);
    if (ticket !== latest) return;
    render(classifier, prediction, inputs, URL.createObjectURL(image), detect);
  } catch (error) {
    if (ticket !== latest) return;
    lastImage = undefined;
    clearResults();
    showMessage(error instanceof NotAnImageError || error instanceof ImageSizeError ? error.message : `Could not predict: ${errorText(error)}`);
  } finally {
    if (ticket === latest) ready.then(showReady, () => {});
  }
}

// ---------------------------------------------------------------------------------------------
// Input: file picker, drag and drop, paste, and whether the photo is a face crop.

ui.fileInput.addEventListener('change', () => {
  const file = ui.fileInput.files?.[0];
  if (file !== undefined) void showPrediction(file);
  // Choosing the same file again must fire `change` again.
  ui.fileInput.value = '';
});

ui.faceCrop.addEventListener('change', () => {
  if (lastImage !== undefined) void showPrediction(lastImage);
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
// Webcam: live boxes and labels over the preview, one frame at a time; frames that arrive while one is being
// judged are dropped, never queued, so the boxes show the latest frame the page could judge.

let stream: MediaStream | undefined;
/** Bumped when the camera stops, so a frame in flight does not draw over a stopped view. */
let cameraRun = 0;

interface FrameStats {
  /** when each of the latest judged frames finished (performance.now()) */
  finished: number[];
  /** how long each took, ms */
  took: number[];
  judged: number;
  dropped: number;
  shownAt: number;
}

const median = (values: readonly number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length === 0 ? 0 : sorted[Math.floor(sorted.length / 2)];
};

function showFrameStats(stats: FrameStats): void {
  const now = performance.now();
  if (now - stats.shownAt < CAMERA_STATS_INTERVAL_MS) return;
  stats.shownAt = now;
  const span = stats.finished.length > 1 ? stats.finished[stats.finished.length - 1] - stats.finished[0] : 0;
  const fps = span > 0 ? ((stats.finished.length - 1) * 1000) / span : 0;
  const frameMs = median(stats.took);
  ui.cameraStats.textContent = `${fps.toFixed(1)} frames/s · ${frameMs.toFixed(0)} ms per frame · ${stats.dropped} camera frames dropped`;
  Object.assign(ui.cameraStats.dataset, { fps: fps.toFixed(2), frameMs: frameMs.toFixed(2), judged: String(stats.judged), dropped: String(stats.dropped) });
}

/** Boxes and labels of one frame's faces over the preview, in the video's pixels. */
function drawFrameFaces(classifier: Classifier, prediction: PhotoPrediction): void {
  const canvas = ui.cameraOverlay;
  const { width, height } = prediction.image;
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const context = canvas.getContext('2d');
  if (context === null) return;
  context.clearRect(0, 0, width, height);
  // The boxes drawn, in the video's pixels, for automation to follow (the canvas itself is only pixels).
  canvas.dataset.boxes = JSON.stringify(prediction.faces.map((face) => face.box));
  const line = Math.max(2, Math.round(width / 320));
  const fontPx = Math.max(12, Math.round(width / 40));
  context.font = `600 ${fontPx}px system-ui, sans-serif`;
  context.textBaseline = 'bottom';
  for (const face of prediction.faces) {
    const { x, y, width: w, height: h } = face.box;
    const judged = face.reason === undefined;
    context.lineWidth = line;
    context.strokeStyle = judged ? '#4dabf7' : '#ffd43b';
    context.setLineDash(judged ? [] : [line * 3, line * 2]);
    context.strokeRect(x, y, w, h);
    const text = faceLabel(classifier, face);
    const textWidth = context.measureText(text).width + fontPx * 0.6;
    const top = y - fontPx * 1.4 >= 0 ? y - fontPx * 1.4 : y + h;
    // Kept inside the frame: a face near the right edge carries its label leftwards.
    const left = Math.max(0, Math.min(x - line / 2, width - textWidth));
    context.fillStyle = 'rgba(0, 0, 0, 0.7)';
    context.fillRect(left, top, textWidth, fontPx * 1.4);
    context.fillStyle = '#fff';
    context.fillText(text, left + fontPx * 0.3, top + fontPx * 1.2);
  }
}

/**
 * Judges the camera's latest frame, one at a time: as soon as one is judged, the newest frame presented since is
 * taken, and frames presented in between are dropped (counted), never queued.
 */
function followFaces(classifier: Classifier): void {
  const run = ++cameraRun;
  const video = ui.cameraVideo;
  const stats: FrameStats = { finished: [], took: [], judged: 0, dropped: 0, shownAt: 0 };
  /** frames the camera has presented, and the count when the last judged frame was taken */
  let presented = 0;
  let taken = 0;
  let wake: (() => void) | undefined;
  const onPresented = (_now: number, metadata?: { presentedFrames: number }): void => {
    if (run !== cameraRun) return;
    // The camera's own count, so frames presented between two callbacks count too.
    presented = metadata === undefined ? presented + 1 : metadata.presentedFrames;
    wake?.();
    wake = undefined;
    watch();
  };
  const watch = (): void => {
    if ('requestVideoFrameCallback' in video) video.requestVideoFrameCallback(onPresented);
    else requestAnimationFrame((now) => onPresented(now));
  };
  const judgeLatest = async (): Promise<void> => {
    while (run === cameraRun) {
      if (presented === taken || video.videoWidth === 0) await new Promise<void>((resolve) => (wake = resolve));
      if (run !== cameraRun) return;
      stats.dropped += Math.max(0, presented - taken - 1);
      taken = presented;
      const started = performance.now();
      const { prediction } = await classifier.predict(async () => readFrame(video, CAMERA_WORKING_SIDE), detectMode(), started);
      if (run !== cameraRun) return;
      drawFrameFaces(classifier, prediction);
      const now = performance.now();
      stats.judged++;
      stats.finished.push(now);
      stats.took.push(now - started);
      if (stats.finished.length > CAMERA_STATS_FRAMES) stats.finished.shift();
      if (stats.took.length > CAMERA_STATS_FRAMES) stats.took.shift();
      showFrameStats(stats);
    }
  };
  watch();
  judgeLatest().catch((error: unknown) => {
    if (run !== cameraRun) return;
    cameraRun++;
    showMessage(`The webcam frame could not be judged: ${errorText(error)}`);
  });
}

function stopCamera(): void {
  cameraRun++;
  for (const track of stream?.getTracks() ?? []) track.stop();
  stream = undefined;
  ui.cameraVideo.srcObject = null;
  ui.cameraOverlay.getContext('2d')?.clearRect(0, 0, ui.cameraOverlay.width, ui.cameraOverlay.height);
  ui.cameraStats.textContent = '';
  ui.cameraView.hidden = true;
  ui.cameraStart.hidden = false;
}

ui.cameraStart.addEventListener('click', async () => {
  clearMessage();
  if (navigator.mediaDevices?.getUserMedia === undefined) {
    showMessage('This browser offers no webcam here: a page can use the webcam only over HTTPS or from localhost.');
    return;
  }
  let classifier: Classifier;
  try {
    classifier = await classifierReady;
  } catch (error) {
    showMessage(`The models could not be loaded, so the webcam cannot be judged: ${errorText(error)}`);
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
  ui.cameraView.hidden = false;
  ui.cameraStart.hidden = true;
  ui.cameraStats.textContent = 'Finding faces…';
  ui.cameraCapture.focus();
  followFaces(classifier);
});

ui.cameraCapture.addEventListener('click', async () => {
  const video = ui.cameraVideo;
  if (stream === undefined || video.videoWidth === 0) return;
  const { pixels } = readFrame(video, Math.max(video.videoWidth, video.videoHeight));
  const canvas = new OffscreenCanvas(pixels.width, pixels.height);
  canvas.getContext('2d')?.putImageData(new ImageData(new Uint8ClampedArray(pixels.data), pixels.width, pixels.height), 0, 0);
  // Lossless, so the prediction sees exactly the captured pixels.
  await showPrediction(await canvas.convertToBlob({ type: 'image/png' }));
});

ui.cameraStop.addEventListener('click', () => {
  stopCamera();
  ui.cameraStart.focus();
});
