/**
 * `HorizontalFlip`: mirrors an NHWC image batch left to right. The multitask preset's shipped models run each
 * face and its mirror image through the same layers and average the two answers (test-time flip): faces are
 * nearly symmetric left to right, so the mirror image is a second view of the same face, at the cost of a
 * second pass and no extra weights.
 *
 * Registered with tfjs serialization on import, so that a saved model holding it loads again; the exporter
 * turns it into an ONNX Gather of the width axis in reverse order.
 */
import * as tf from '@tensorflow/tfjs';

export class HorizontalFlip extends tf.layers.Layer {
  static readonly className = 'HorizontalFlip';

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape | tf.Shape[] {
    return inputShape;
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = Array.isArray(inputs) ? inputs[0] : inputs;
    if (x.rank !== 4) throw new Error(`HorizontalFlip expects an image batch [batch, height, width, channels]; got rank ${x.rank}`);
    return tf.reverse(x, 2);
  }
}
tf.serialization.registerClass(HorizontalFlip);

/** Thrown by `withoutMirror` for a model that does not average a face and its mirror image. */
export class NoMirrorError extends Error {
  override name = 'NoMirrorError';
}

/** Whether `tensor` is computed from a HorizontalFlip's output. */
function isMirrored(tensor: tf.SymbolicTensor, seen = new Map<tf.SymbolicTensor, boolean>()): boolean {
  const known = seen.get(tensor);
  if (known !== undefined) return known;
  const layer = tensor.sourceLayer;
  // (an input layer's node lists its own output as its input)
  seen.set(tensor, false);
  let mirrored = layer instanceof HorizontalFlip;
  if (!mirrored) {
    const node = layer.inboundNodes[tensor.nodeIndex];
    mirrored = node !== undefined && node.inputTensors.some((input) => input !== tensor && isMirrored(input, seen));
  }
  seen.set(tensor, mirrored);
  return mirrored;
}

/**
 * The same model without its mirror pass: every output that is the Average of a direct value and a mirrored one
 * (as `flipTest` builds them), or a temperature of such an Average, becomes the direct value (rescaled by the same
 * temperature, fitted for the mean of the two), with the same weights. For deployments that need the
 * throughput of one pass more than the accuracy of two. Throws NoMirrorError for any output that is not such a mean.
 */
export function withoutMirror(model: tf.LayersModel): tf.LayersModel {
  const outputs = model.outputs.map((output) => {
    // A temperature after the mean (node-shared/tfjs/temperature-layer.ts) stays, applied to the direct value.
    const rescale = output.sourceLayer.getClassName() === 'Temperature' ? output.sourceLayer : undefined;
    const mean = rescale === undefined ? output : rescale.inboundNodes[output.nodeIndex]?.inputTensors[0];
    const layer = mean?.sourceLayer;
    const inputs = mean !== undefined && layer?.getClassName() === 'Average' ? (layer.inboundNodes[mean.nodeIndex]?.inputTensors ?? []) : [];
    const direct = inputs.filter((input) => !isMirrored(input));
    if (inputs.length !== 2 || direct.length !== 1) {
      throw new NoMirrorError(`output "${output.name}" of model "${model.name}" is not the mean of a face and its mirror image; the model has no test-time flip to remove`);
    }
    return rescale === undefined ? direct[0] : (rescale.apply(direct[0]) as tf.SymbolicTensor);
  });
  return tf.model({ inputs: model.inputs, outputs: outputs.length === 1 ? outputs[0] : outputs, name: `${model.name}_one_pass` });
}
