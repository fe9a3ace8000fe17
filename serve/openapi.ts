/**
 * The OpenAPI 3 document of the server. Where the models are loaded, the class names of each task are filled in
 * from their metadata (as enums), so the document describes the models actually served.
 */
import { DEFAULT_MAX_FACES, DEFAULT_MIN_SCORE } from '../contract/face/photo.ts';
import { UNCERTAIN_BELOW } from '../contract/prediction.ts';
import { IMAGE_FIELD } from './body.ts';
import type { ServeConfig } from './config.ts';
import type { ModelsReport } from './models.ts';

const json = (schema: object): object => ({ 'application/json': { schema } });
const ref = (name: string): object => ({ $ref: `#/components/schemas/${name}` });

/** The error responses of `statuses`, described as for one image unless `own` says otherwise. */
function errorResponses(statuses: number[], own: Record<number, string> = {}): Record<string, object> {
  const why: Record<number, string> = {
    400: 'A query parameter unknown or out of range (invalid_parameter), empty body, multipart without an "image" file (or with an "image" text field), malformed or cut-off upload, a path that is not valid percent-encoding.',
    404: 'Unknown route.',
    405: 'Wrong method for this route (see the Allow header).',
    408: 'The upload did not complete within the time limit.',
    413: 'Body over the size limit, image over the pixel limit (read from its header), or too many images.',
    415: 'Content-Type or Content-Encoding not accepted, or bytes that are not a supported image format.',
    422: 'A truncated or corrupted image, or one smaller than the minimum size.',
    503: 'Queue full, time limit reached, models loading or shutting down; see Retry-After.',
  };
  return Object.fromEntries(statuses.map((status) => [String(status), { description: own[status] ?? why[status], content: json(ref('Error')) }]));
}

function taskSchema(task: string, labels: readonly string[] | undefined, nameField: string, hasYears: boolean): object {
  const names = labels === undefined ? { type: 'string' } : { type: 'string', enum: labels };
  const properties: Record<string, object> = {
    [nameField]: { ...names, description: 'The most probable class, named as the model metadata says.' },
    index: { type: 'integer', minimum: 0, description: 'Index of that class in `probabilities`.' },
    probabilities: { type: 'array', items: { type: 'number' }, ...(labels === undefined ? {} : { minItems: labels.length, maxItems: labels.length }), description: 'One per class, in metadata order; models/MODEL_CARD.md measures how often answers given with each probability are right.' },
  };
  properties.classes = {
    type: 'object',
    additionalProperties: { type: 'number' },
    ...(labels === undefined ? {} : { required: [...labels], properties: Object.fromEntries(labels.map((name) => [name, { type: 'number' }])) }),
    description: 'Each class\'s probability under its name, the same numbers as `probabilities`.',
  };
  properties.uncertain = { type: 'boolean', description: `Whether the top probability is under ${UNCERTAIN_BELOW}: the probabilities are calibrated, so such an answer is right about that often or less.` };
  if (hasYears) properties.years = { type: 'number', description: 'Age in years, where the age model predicts it: the mean of its distribution over ages, which can fall outside the most probable group.' };
  return { type: 'object', description: `The ${task} prediction.`, required: [nameField, 'index', 'probabilities', 'classes', 'uncertain'], properties };
}

export function buildOpenApi(config: ServeConfig, models: ModelsReport | undefined): object {
  const tasks = models?.models ?? [];
  const taskSchemas = Object.fromEntries(
    (tasks.length > 0 ? tasks.map((m) => [m.task, m.labels, m.outputs.some((o) => o.kind === 'years')] as const) : (['age', 'ethnicity', 'gender'] as const).map((t) => [t, undefined, t === 'age'] as const)).map(
      ([task, labels, years]) => [task, taskSchema(task, labels, task === 'age' ? 'group' : 'label', years)],
    ),
  );
  const point = { type: 'array', items: { type: 'number' }, minItems: 2, maxItems: 2, description: '[x, y] in the photo\'s pixels.' };
  const face = {
    type: 'object',
    required: ['box', 'score', 'landmarks'],
    description: 'One face: where it is, then each task\'s answer; or `reason` and no answers where the face is too small or too cut off to judge.',
    properties: {
      box: {
        type: 'object',
        required: ['x', 'y', 'width', 'height'],
        description: 'In the pixels of the photo after its EXIF orientation; with detect=none, the whole image.',
        properties: { x: { type: 'number' }, y: { type: 'number' }, width: { type: 'number' }, height: { type: 'number' } },
      },
      score: { type: 'number', nullable: true, description: "The detector's confidence, 0 to 1; null with detect=none." },
      landmarks: {
        type: 'object',
        nullable: true,
        description: 'The detector\'s keypoints, named for the person (rightEye is on the image\'s left); null with detect=none.',
        properties: Object.fromEntries(['rightEye', 'leftEye', 'nose', 'mouth', 'rightEar', 'leftEar'].map((name) => [name, point])),
      },
      reason: { type: 'string', description: 'Why the face was not judged (too small, too cut off); present only then.' },
      ...taskSchemas,
    },
  };
  const prediction = {
    type: 'object',
    required: ['image', 'faces', 'timingsMs'],
    properties: {
      image: { type: 'object', required: ['width', 'height'], description: 'The photo\'s size after its EXIF orientation.', properties: { width: { type: 'integer' }, height: { type: 'integer' } } },
      faces: { type: 'array', items: face, description: 'The faces found, largest box first; empty when there is none.' },
      timingsMs: {
        type: 'object',
        required: ['decode', 'detect', 'align', 'inference', 'total'],
        properties: {
          decode: { type: 'number', description: 'Decoding (shrunk to at most 1024 pixels a side) and preparing the model inputs, in a decode thread.' },
          detect: { type: 'number', description: 'Running the face detector and reading its answer, in the decode thread (not counted in decode); 0 with detect=none.' },
          align: { type: 'number', description: 'Cutting each face out as the models were trained to see it.' },
          inference: { type: 'number', description: 'The onnxruntime batches the faces ran in.' },
          total: { type: 'number', description: "From the request's arrival to the answer." },
        },
      },
    },
  };
  const faceParameters = [
    { name: 'detect', in: 'query', schema: { type: 'string', enum: ['faces', 'none'], default: 'faces' }, description: 'faces: find every face and answer for each; none: the whole image is one face, already cropped as UTKFace faces are.' },
    { name: 'maxFaces', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 100, default: DEFAULT_MAX_FACES }, description: 'At most this many faces, the largest.' },
    { name: 'minScore', in: 'query', schema: { type: 'number', minimum: 0, maximum: 1, default: DEFAULT_MIN_SCORE }, description: "Faces the detector is less sure of are not reported." },
  ];
  const imageUpload = {
    required: true,
    content: {
      'image/*': { schema: { type: 'string', format: 'binary' } },
      'multipart/form-data': { schema: { type: 'object', required: [IMAGE_FIELD], properties: { [IMAGE_FIELD]: { type: 'string', format: 'binary' } } } },
    },
  };
  return {
    openapi: '3.0.3',
    info: {
      title: 'Face attributes',
      version: '1',
      description: `Age group, ethnicity and gender from a face photo. Limits: body ${config.maxBodyBytes} bytes, ${config.maxPixels} pixels, sides of at least ${config.minImageSide} pixels, ${config.maxBatchImages} images per batch, ${config.requestTimeoutMs} ms per request.`,
    },
    paths: {
      '/v1/predict': {
        post: {
          summary: 'Find the faces in one image and predict for each',
          description: `The body is the image (any image/* type; the format is read from the bytes) or multipart/form-data with one file field named "${IMAGE_FIELD}".`,
          parameters: faceParameters,
          requestBody: imageUpload,
          responses: { '200': { description: 'The predictions.', content: json(ref('Prediction')) }, ...errorResponses([400, 408, 413, 415, 422, 503]) },
        },
      },
      '/v1/predict/batch': {
        post: {
          summary: 'Find the faces in several images and predict for each',
          parameters: faceParameters,
          description: `multipart/form-data with one file field named "${IMAGE_FIELD}" per image; the answer is an array in the same order, each item a prediction or its own error.`,
          requestBody: { required: true, content: { 'multipart/form-data': { schema: { type: 'object', properties: { [IMAGE_FIELD]: { type: 'array', items: { type: 'string', format: 'binary' } } } } } } },
          responses: {
            '200': { description: 'One item per image.', content: json({ type: 'array', items: { oneOf: [ref('Prediction'), ref('Error')] } }) },
            // An image that is too large, too small, corrupt or of another format is an item of the 200 answer.
            ...errorResponses([400, 408, 413, 415, 503], {
              413: 'Body over the size limit, or more images than --max-batch-images (an image over the pixel limit is its own item error).',
              415: 'Content-Type other than multipart/form-data, or a Content-Encoding (an image of an unsupported format is its own item error).',
            }),
          },
        },
      },
      '/v1/models': { get: { summary: 'The models served: metadata, sha256, execution provider', responses: { '200': { description: 'The models.', content: json(ref('Models')) }, ...errorResponses([503]) } } },
      '/healthz': { get: { summary: 'Liveness', responses: { '200': { description: 'The process is serving.', content: json({ type: 'object', properties: { status: { type: 'string' } } }) } } } },
      '/readyz': { get: { summary: 'Readiness: models loaded', responses: { '200': { description: 'Ready.', content: json({ type: 'object', properties: { status: { type: 'string' } } }) }, ...errorResponses([503]) } } },
      '/metrics': { get: { summary: 'Prometheus metrics', responses: { '200': { description: 'Text exposition format 0.0.4.', content: { 'text/plain': { schema: { type: 'string' } } } } } } },
      '/openapi.json': { get: { summary: 'This document', responses: { '200': { description: 'OpenAPI 3.', content: json({ type: 'object' }) } } } },
    },
    components: {
      schemas: {
        Prediction: prediction,
        Error: {
          type: 'object',
          required: ['error'],
          properties: { error: { type: 'object', required: ['code', 'message'], properties: { code: { type: 'string' }, message: { type: 'string' } } } },
        },
        Models: {
          type: 'object',
          required: ['provider', 'models', 'sessions'],
          properties: {
            provider: { type: 'string', enum: ['cpu', 'cuda'], description: 'The execution provider in use.' },
            providerNote: { type: 'string', description: 'Why auto fell back to the CPU, where it did.' },
            runtime: { type: 'string' },
            models: {
              type: 'array',
              items: {
                type: 'object',
                required: ['task', 'file', 'sha256', 'labels', 'input', 'metadata'],
                properties: {
                  task: { type: 'string' },
                  file: { type: 'string' },
                  sha256: { type: 'string' },
                  labels: { type: 'array', items: { type: 'string' } },
                  input: { type: 'object' },
                  outputs: { type: 'array', items: { type: 'object' } },
                  metadata: { type: 'object', description: 'The metadata_props the model carries.' },
                },
              },
            },
            sessions: {
              type: 'array',
              description: 'The onnxruntime sessions: models that read the same input run as one merged graph, their shared layers computed once.',
              items: {
                type: 'object',
                required: ['tasks'],
                properties: {
                  tasks: { type: 'array', items: { type: 'string' } },
                  nodes: { type: 'object', description: 'For a merged graph: its nodes, and the separate graphs\' together.', properties: { separate: { type: 'integer' }, merged: { type: 'integer' } } },
                },
              },
            },
          },
        },
      },
    },
  };
}
