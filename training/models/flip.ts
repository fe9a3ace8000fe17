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
