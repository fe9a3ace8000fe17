/**
 * What every runtime of a `Temperature` layer (node-shared/tfjs/temperature-layer.ts; the exporter's ONNX nodes) must
 * agree on: probabilities are floored here before their log, so that a softmax that underflowed to 0 stays finite.
 */
export const TEMPERATURE_FLOOR = 1e-12;
