import { TensorProto, TensorProto_DataLocation } from '../proto/gen/onnx/onnx.js';
import { ElemType } from './elem-type.js';
import type { Fixture } from './fixture.js';
import { GraphBuilder, encodeModel } from './graph-builder.js';

const X = { name: 'x', elemType: ElemType.FLOAT, dims: ['batch', 1] } as const;
const Y = { name: 'y', elemType: ElemType.FLOAT, dims: ['batch', 1] } as const;

function xToY(name: string): GraphBuilder {
  return new GraphBuilder(name).input(X.name, X.elemType, X.dims).output(Y.name, Y.elemType, Y.dims);
}

/** Why {@link brokenModel} fails to load. */
export type BrokenReason = 'type-mismatch' | 'unknown-op';

/**
 * Bytes that decode as a valid ModelProto but that ONNX Runtime refuses at
 * session creation. 'type-mismatch' (default) adds a float32 input to an int64
 * constant, which only type inference catches; 'unknown-op' uses an op type
 * that does not exist in the default domain.
 */
export function brokenModel({ reason = 'type-mismatch' }: { reason?: BrokenReason } = {}): Fixture {
  const g = xToY(`broken_${reason}`);
  if (reason === 'type-mismatch') {
    g.initializer('c', ElemType.INT64, [1], new BigInt64Array([1n])).node('Add', ['x', 'c'], ['y']);
  } else {
    g.node('NoSuchOperator', ['x'], ['y']);
  }
  return { bytes: g.toModel(), inputs: [X], outputs: [Y] };
}

/**
 * A model whose only node is op `Exfiltrate` from the custom domain
 * `com.evil` (declared in opset_import as version 1). ONNX Runtime has no
 * kernel for it unless a custom-op library is registered, which the mesh
 * must never do for pushed models.
 */
export function customOpModel(): Fixture {
  const g = xToY('custom_op').node('Exfiltrate', ['x'], ['y'], {}, { domain: 'com.evil' });
  return { bytes: g.toModel({ customOpsetDomains: { 'com.evil': 1 } }), inputs: [X], outputs: [Y] };
}

/**
 * A model (y = x + w) whose initializer `w` is float32 [1] stored outside the
 * model: data_location EXTERNAL, external_data location = `location`, offset
 * 0, length 4. With a path such as '../../etc/passwd' it probes whether the
 * loader reads files it was never given.
 */
export function externalDataModel(location: string): Fixture {
  const model = xToY('external_data').node('Add', ['x', 'w'], ['y']).toModelProto();
  model.graph!.initializer.push(
    TensorProto.fromPartial({
      name: 'w',
      dims: [1],
      dataType: ElemType.FLOAT,
      dataLocation: TensorProto_DataLocation.EXTERNAL,
      externalData: [
        { key: 'location', value: location },
        { key: 'offset', value: '0' },
        { key: 'length', value: '4' },
      ],
    }),
  );
  return { bytes: encodeModel(model), inputs: [X], outputs: [Y] };
}
