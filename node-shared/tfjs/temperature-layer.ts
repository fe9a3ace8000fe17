/**
 * `Temperature`: rescales a model's class probabilities by a temperature fitted after training (temperature
 * scaling, Guo et al., 2017), so that a probability of 0.8 is right about 80% of the time. Label smoothing tends
 * to leave a model underconfident, and the multitask preset's ethnicity and gender answers were (measured: 73%
 * mean probability for 82% right); a temperature under 1 sharpens them.
 *
 * It works on probabilities rather than logits, since the shipped models average the probabilities of a face
 * and of its mirror image: q_i = p_i^(1/T) / sum_j p_j^(1/T), i.e. softmax(log(p) / T); for one sigmoid unit,
 * q = sigmoid(logit(p) / T). Each q_i grows with p_i, so the most likely class, and accuracy, never change.
 *
 * Registered with tfjs serialization on import, so that a saved model holding it loads again; the exporter turns
 * it into Max, Log, Mul and Softmax (or Sigmoid).
 */
import * as tf from '@tensorflow/tfjs';
import { TEMPERATURE_FLOOR } from '../../contract/temperature.ts';

export interface TemperatureArgs {
  /** above 0: under 1 sharpens the probabilities, over 1 softens them, 1 leaves them as they are */
  temperature: number;
  name?: string;
}

export class Temperature extends tf.layers.Layer {
  static readonly className = 'Temperature';
  readonly temperature: number;

  constructor(args: TemperatureArgs) {
    super({ name: args.name });
    if (!(args.temperature > 0 && Number.isFinite(args.temperature))) throw new RangeError(`temperature must be a positive number; got ${args.temperature}`);
    this.temperature = args.temperature;
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape | tf.Shape[] {
    return inputShape;
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const p = Array.isArray(inputs) ? inputs[0] : inputs;
    if (p.rank !== 2) throw new Error(`Temperature expects probabilities [batch, classes]; got rank ${p.rank}`);
    const scale = 1 / this.temperature;
    return tf.tidy(() => {
      const logP = tf.log(tf.maximum(p, TEMPERATURE_FLOOR));
      if (p.shape[1] === 1) {
        // one sigmoid unit: p is the second class's probability
        const logit = tf.sub(logP, tf.log(tf.maximum(tf.sub(1, p), TEMPERATURE_FLOOR)));
        return tf.sigmoid(tf.mul(logit, scale));
      }
      return tf.softmax(tf.mul(logP, scale));
    });
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), temperature: this.temperature };
  }
}
tf.serialization.registerClass(Temperature);

/**
 * `model` with output i rescaled by `temperatures[i]` (see `Temperature`), the outputs without one unchanged.
 * The weights are the same tensors, not copies.
 */
export function withTemperature(model: tf.LayersModel, temperatures: readonly (number | undefined)[]): tf.LayersModel {
  if (temperatures.length !== model.outputs.length) {
    throw new Error(`${temperatures.length} temperatures for the ${model.outputs.length} outputs of model "${model.name}"; give one per output (undefined leaves it)`);
  }
  const outputs = model.outputs.map((output, i) => {
    const temperature = temperatures[i];
    if (temperature === undefined) return output;
    if (output.sourceLayer instanceof Temperature) throw new Error(`output ${i} of model "${model.name}" already has a temperature (${output.sourceLayer.temperature})`);
    return new Temperature({ temperature, name: `${output.sourceLayer.name}_temperature` }).apply(output) as tf.SymbolicTensor;
  });
  return tf.model({ inputs: model.inputs, outputs: outputs.length === 1 ? outputs[0] : outputs, name: model.name });
}
