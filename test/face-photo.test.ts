import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { blazefaceInput, padDetectorInput, type DetectedFace, type OutputTensor } from '../contract/face/blazeface.ts';
import { DEFAULT_CROP_PASS, detectFaces, detectorProblem, firstDetectorInput, needsCropPass, type RunDetector } from '../contract/face/photo.ts';
import { FACE_TEMPLATE } from '../contract/face/template.ts';
import { cropTruth, matchDetections, type FoundFace } from '../training/data/faces.ts';

const ROWS_16 = 512;
const ROWS_8 = 384;
const COORDS = 16;
/** Anchor 600's centre is (208, 48) in the 256 input. */
const ANCHOR_600 = 600;

/** The four outputs with one face at anchor 600 of `size` input pixels, or none. */
function outputs(face: { size: number } | null): OutputTensor[] {
  const scores = new Float32Array(ROWS_16 + ROWS_8).fill(-100);
  const boxes = new Float32Array((ROWS_16 + ROWS_8) * COORDS);
  if (face !== null) {
    scores[ANCHOR_600] = 5;
    boxes.set([0, 0, face.size, face.size, -10, -5, 10, -5, 0, 0, 0, 10, -20, 0, 20, 0], ANCHOR_600 * COORDS);
  }
  return [
    { dims: [1, ROWS_16, 1], data: scores.slice(0, ROWS_16) },
    { dims: [1, ROWS_8, 1], data: scores.slice(ROWS_16) },
    { dims: [1, ROWS_16, COORDS], data: boxes.slice(0, ROWS_16 * COORDS) },
    { dims: [1, ROWS_8, COORDS], data: boxes.slice(ROWS_16 * COORDS) },
  ];
}

/** A detector that answers each call in turn from `answers`, recording the inputs it was given. */
function scriptedDetector(answers: OutputTensor[][]): { run: RunDetector; inputs: Float32Array[] } {
  const inputs: Float32Array[] = [];
  return {
    inputs,
    run: async (input) => {
      inputs.push(input);
      const answer = answers[inputs.length - 1];
      if (answer === undefined) throw new Error(`the detector was run ${inputs.length} times; expected ${answers.length}`);
      return answer;
    },
  };
}

function smoothImage(width: number, height: number): { width: number; height: number; channels: 3; data: Uint8Array } {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) for (let c = 0; c < 3; c++) data[(y * width + x) * 3 + c] = 128 + 100 * Math.sin(x / 17 + c) * Math.cos(y / 23);
  return { width, height, channels: 3, data };
}

const search = { minScore: 0.5, maxFaces: 20 };

describe('padDetectorInput', () => {
  it('gives what blazefaceInput gives at the larger padding, transform exactly, pixels within 1e-5 on a smooth image', () => {
    for (const [width, height] of [[200, 200], [320, 180]]) {
      const image = smoothImage(width, height);
      const first = blazefaceInput(image);
      const direct = blazefaceInput(image, { padding: 2 });
      const derived = padDetectorInput(first.input, first.transform, 2);
      assert.deepEqual(derived.transform, direct.transform);
      const worst = derived.input.reduce((most, v, i) => Math.max(most, Math.abs(v - direct.input[i])), 0);
      assert.ok(worst <= 1e-5, `${width}x${height}: largest difference ${worst}`);
    }
  });

  it('fills the new border with black (-1) and refuses a padding under 1', () => {
    const first = blazefaceInput({ width: 4, height: 4, channels: 1, data: new Uint8Array(16).fill(255) }, { inputSize: 4 });
    const { input } = padDetectorInput(first.input, first.transform, 2);
    assert.deepEqual([...input.slice(0, 3)], [-1, -1, -1]);
    // Input pixel (1, 1) takes image pixel 0's footprint, all white.
    assert.deepEqual([...input.slice((1 * 4 + 1) * 3, (1 * 4 + 1) * 3 + 3)], [1, 1, 1]);
    assert.throws(() => padDetectorInput(first.input, first.transform, 0.5), /padding 0.5 is invalid/);
  });
});

describe('detectFaces', () => {
  // Larger than a face crop (see the crop-sized case below): twice the detector's input a side.
  const photo = smoothImage(512, 512);
  const photoPixelsPerInputPixel = 512 / 256;

  it('runs the detector once when the unpadded pass finds a face that does not fill the frame', async () => {
    const detector = scriptedDetector([outputs({ size: 40 })]);
    const faces = await detectFaces(photo, detector.run, search);
    assert.equal(detector.inputs.length, 1);
    assert.equal(faces.length, 1);
  });

  it('looks again, padded, when the unpadded pass finds no face, and reports the padded pass in photo pixels', async () => {
    const detector = scriptedDetector([outputs(null), outputs({ size: 40 })]);
    const faces = await detectFaces(photo, detector.run, search);
    assert.equal(detector.inputs.length, 2);
    assert.deepEqual(detector.inputs[1], padDetectorInput(blazefaceInput(photo).input, blazefaceInput(photo).transform, DEFAULT_CROP_PASS.padding).input);
    assert.equal(faces.length, 1);
    // 40 input pixels at the crop pass's scale.
    assert.ok(Math.abs(faces[0].box.width - 40 * DEFAULT_CROP_PASS.padding * photoPixelsPerInputPixel) < 1e-6, `width ${faces[0].box.width}`);
  });

  it('looks again when a face fills the frame, and merges the two passes into one face', async () => {
    const large = Math.ceil(DEFAULT_CROP_PASS.largeFaceFraction * 256) + 2;
    const detector = scriptedDetector([outputs({ size: large }), outputs({ size: large / DEFAULT_CROP_PASS.padding })]);
    const faces = await detectFaces(photo, detector.run, search);
    assert.equal(detector.inputs.length, 2);
    assert.equal(faces.length, 1, JSON.stringify(faces));
  });

  it('drops a face whose centre lies inside a face half as large again, as a part of it', async () => {
    const scores = new Float32Array(ROWS_16 + ROWS_8).fill(-100);
    const boxes = new Float32Array((ROWS_16 + ROWS_8) * COORDS);
    // Anchors 600 and 601 share a centre: a 60-pixel face and a 30-pixel one inside it.
    for (const [anchor, size] of [[600, 60], [601, 30]]) {
      scores[anchor] = 5;
      boxes.set([0, 0, size, size, -10, -5, 10, -5, 0, 0, 0, 10, -20, 0, 20, 0], anchor * COORDS);
    }
    const nested = [
      { dims: [1, ROWS_16, 1], data: scores.slice(0, ROWS_16) },
      { dims: [1, ROWS_8, 1], data: scores.slice(ROWS_16) },
      { dims: [1, ROWS_16, COORDS], data: boxes.slice(0, ROWS_16 * COORDS) },
      { dims: [1, ROWS_8, COORDS], data: boxes.slice(ROWS_16 * COORDS) },
    ];
    const faces = await detectFaces(photo, scriptedDetector([nested]).run, search);
    assert.deepEqual(faces.map((f) => f.box.width), [60 * photoPixelsPerInputPixel]);
  });

  /** Photo pixels per input pixel of a 200x200 photo's pass at the crop side. */
  const cropSidePixels = (200 * DEFAULT_CROP_PASS.cropPadding) / DEFAULT_CROP_PASS.cropInputSize;

  it('takes a photo no larger than the detector input as a face crop: one pass, padded, at the crop side, when it finds a face filling the photo', async () => {
    const crop = smoothImage(200, 200);
    // A face box of 0.9 of the photo's side, in the crop side's input pixels: over the trusted fraction.
    const detector = scriptedDetector([outputs({ size: (0.9 * 200) / cropSidePixels })]);
    const faces = await detectFaces(crop, detector.run, search);
    assert.equal(detector.inputs.length, 1);
    assert.equal(faces.length, 1);
    assert.deepEqual(detector.inputs[0], blazefaceInput(crop, { padding: DEFAULT_CROP_PASS.cropPadding, inputSize: DEFAULT_CROP_PASS.cropInputSize }).input);
    assert.deepEqual(firstDetectorInput(crop).input, detector.inputs[0], 'the input the server prepares in its decode thread');
  });

  it('searches a face crop again at the full side, padded, when the crop side finds no face or none filling the photo, and answers with that pass', async () => {
    const crop = smoothImage(200, 200);
    const fullSide = blazefaceInput(crop, { padding: DEFAULT_CROP_PASS.cropPadding }).input;
    const none = scriptedDetector([outputs(null), outputs(null)]);
    assert.deepEqual(await detectFaces(crop, none.run, search), []);
    assert.equal(none.inputs.length, 2);
    assert.deepEqual(none.inputs[1], fullSide);
    // Half the photo's side at the crop side: under the trusted fraction.
    const small = scriptedDetector([outputs({ size: (0.5 * 200) / cropSidePixels }), outputs({ size: 30 })]);
    const faces = await detectFaces(crop, small.run, search);
    assert.equal(small.inputs.length, 2);
    assert.deepEqual(faces.map((face) => face.box.width), [(30 * 400) / 256]);
  });

  it('runs one pass only when asked for no crop pass', async () => {
    const detector = scriptedDetector([outputs(null)]);
    assert.deepEqual(await detectFaces(photo, detector.run, search, undefined, undefined, null), []);
  });
});

describe('needsCropPass', () => {
  const face = (side: number): DetectedFace => ({ box: { x: 0, y: 0, width: side, height: side }, score: 0.9, landmarks: { rightEye: [0, 0], leftEye: [1, 0], nose: [0, 1], mouth: [0, 2], rightEar: [0, 0], leftEar: [0, 0] } });
  const pass = { padding: 1.5, cropPadding: 2, cropInputSize: 160, cropTrustedFraction: 0.7, largeFaceFraction: 0.5 };

  it('asks for it with no face, or a face whose box side reaches the fraction of the shorter side', () => {
    assert.equal(needsCropPass([], { width: 400, height: 300 }, pass), true);
    assert.equal(needsCropPass([face(150)], { width: 400, height: 300 }, pass), true);
    assert.equal(needsCropPass([face(149)], { width: 400, height: 300 }, pass), false);
  });
});

describe('matchDetections', () => {
  const truth = [cropTruth(200), { ...cropTruth(100), box: { x: 300, y: 0, width: 100, height: 100 }, rightEye: [328, 28] as [number, number], leftEye: [368, 28] as [number, number] }];
  const onFace = (t: (typeof truth)[number], dx = 0): FoundFace => ({ box: { ...t.box, x: t.box.x + dx }, landmarks: { rightEye: [t.rightEye[0] + dx, t.rightEye[1]], leftEye: [t.leftEye[0] + dx, t.leftEye[1]] } });

  it('takes each face once, counting a second detection on it as a duplicate and one on no face as elsewhere', () => {
    const elsewhere: FoundFace = { box: { x: 600, y: 600, width: 50, height: 50 }, landmarks: { rightEye: [610, 610], leftEye: [640, 610] } };
    const matches = matchDetections([onFace(truth[0]), onFace(truth[0], 5), elsewhere, onFace(truth[1])], truth);
    assert.deepEqual(matches, { detectionOf: [0, 3], duplicates: 1, elsewhere: 1 });
  });

  it('matches by eye centre within half the eye distance when the boxes overlap too little', () => {
    const small: FoundFace = { box: { x: 80, y: 40, width: 40, height: 40 }, landmarks: { rightEye: [56.3 + 30, 57.5], leftEye: [135.4 + 30, 57.1] } };
    assert.deepEqual(matchDetections([small], [truth[0]]).detectionOf, [0]);
    const far: FoundFace = { ...small, landmarks: { rightEye: [56.3 + 45, 57.5], leftEye: [135.4 + 45, 57.1] } };
    assert.deepEqual(matchDetections([far], [truth[0]]).detectionOf, [-1]);
  });

  it('places a crop\'s face at the template, scaled to the crop', () => {
    const half = cropTruth(FACE_TEMPLATE.size / 2);
    assert.deepEqual(half.rightEye, [FACE_TEMPLATE.rightEye[0] / 2, FACE_TEMPLATE.rightEye[1] / 2]);
    assert.equal(half.box.width, FACE_TEMPLATE.box.width / 2);
  });
});

describe('detectFaces: maxFaces', () => {
  it('keeps the largest faces, chosen after the parts of faces are dropped, whatever their scores', async () => {
    const rows = ROWS_16 + ROWS_8;
    const scores = new Float32Array(rows).fill(-100);
    const boxes = new Float32Array(rows * COORDS);
    // Anchor 600: a 60-pixel face; 601, the same centre: a 30-pixel part of it, scored higher; 100: a 40-pixel face elsewhere.
    for (const [anchor, size, score] of [[600, 60, 3], [601, 30, 8], [100, 40, 2]]) {
      scores[anchor] = score;
      boxes.set([0, 0, size, size, -10, -5, 10, -5, 0, 0, 0, 10, -20, 0, 20, 0], anchor * COORDS);
    }
    const outputs = [
      { dims: [1, ROWS_16, 1], data: scores.slice(0, ROWS_16) },
      { dims: [1, ROWS_8, 1], data: scores.slice(ROWS_16) },
      { dims: [1, ROWS_16, COORDS], data: boxes.slice(0, ROWS_16 * COORDS) },
      { dims: [1, ROWS_8, COORDS], data: boxes.slice(ROWS_16 * COORDS) },
    ];
    const photo = smoothImage(512, 512);
    const widths = async (maxFaces: number) => (await detectFaces(photo, scriptedDetector([outputs]).run, { minScore: 0.5, maxFaces }, undefined, undefined, null)).map((f) => f.box.width);
    assert.deepEqual(await widths(20), [120, 80], 'the two faces, largest first, without the part');
    assert.deepEqual(await widths(1), [120], 'maxFaces=1 is the largest face, not the best-scored part');
    assert.deepEqual(await widths(2), [120, 80]);
  });
});

describe('detectorProblem', () => {
  const blazeface = { name: 'blazeface-back', file: 'face.onnx', layout: 'nhwc' as const, input: { height: 256, width: 256, channels: 3 } };

  it('takes the shipped kind of detector: square, NHWC, RGB', () => {
    assert.equal(detectorProblem(blazeface), undefined);
  });

  it('refuses, naming the file, a detector these steps would feed the wrong input: NCHW, greyscale or not square', () => {
    assert.match(detectorProblem({ ...blazeface, layout: 'nchw' }) ?? '', /face\.onnx \(detector "blazeface-back"\) reads NCHW/);
    assert.match(detectorProblem({ ...blazeface, input: { height: 256, width: 256, channels: 1 } }) ?? '', /square NHWC RGB/);
    assert.match(detectorProblem({ ...blazeface, input: { height: 256, width: 128, channels: 3 } }) ?? '', /\[256, 128, 3\]/);
  });
});
