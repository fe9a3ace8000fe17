/** Builds an ONNX graph node by node: unique names, weights as initializers, small constants shared. */
import { DataType, float32Bytes, int64Bytes, type AttributeValue, type NodeProto, type TensorProto } from './onnx-proto.ts';

export class GraphBuilder {
  readonly nodes: NodeProto[] = [];
  readonly initializers: TensorProto[] = [];
  private readonly names = new Set<string>();
  private readonly constants = new Map<string, string>();

  /** `base` if unused, else `base_1`, `base_2`, ... */
  uniqueName(base: string): string {
    const clean = base.replace(/[^A-Za-z0-9_./:-]/g, '_') || 'value';
    let name = clean;
    for (let i = 1; this.names.has(name); i++) name = `${clean}_${i}`;
    this.names.add(name);
    return name;
  }

  /** Claims a name that must stay as given (graph inputs and outputs); throws if it is taken. */
  reserveName(name: string): string {
    if (this.names.has(name)) throw new Error(`ONNX value name "${name}" is used twice`);
    this.names.add(name);
    return name;
  }

  /** Adds a node with one output and returns the output's name (`output` if given, else a new name from `base`). */
  node(opType: string, inputs: readonly string[], base: string, attributes: Record<string, AttributeValue> = {}, output?: string): string {
    const out = output ?? this.uniqueName(`${base}/${opType}`);
    this.nodes.push({ name: this.uniqueName(`${base}/${opType}_node`), opType, inputs, outputs: [out], attributes });
    return out;
  }

  /** A float32 initializer. */
  floatTensor(base: string, dims: readonly number[], values: ArrayLike<number>): string {
    const count = dims.reduce((a, b) => a * b, 1);
    if (values.length !== count) throw new Error(`initializer ${base}: ${values.length} values for shape [${dims.join(', ')}]`);
    const name = this.uniqueName(base);
    this.initializers.push({ name, dims, dataType: DataType.FLOAT, rawData: float32Bytes(values) });
    return name;
  }

  /** A shared int64 vector constant (shapes, pads). */
  int64Vector(values: readonly number[]): string {
    return this.shared(`i64:${values.join(',')}`, () => {
      const name = this.uniqueName(`const_i64_${values.join('_').replace(/-/g, 'm')}`);
      this.initializers.push({ name, dims: [values.length], dataType: DataType.INT64, rawData: int64Bytes(values) });
      return name;
    });
  }

  /** A shared float32 scalar constant (Clip bounds). */
  floatScalar(value: number): string {
    return this.shared(`f32:${value}`, () => {
      const name = this.uniqueName(`const_f32_${String(value).replace(/[-.]/g, '_')}`);
      this.initializers.push({ name, dims: [], dataType: DataType.FLOAT, rawData: float32Bytes([value]) });
      return name;
    });
  }

  private shared(key: string, create: () => string): string {
    let name = this.constants.get(key);
    if (name === undefined) {
      name = create();
      this.constants.set(key, name);
    }
    return name;
  }
}
