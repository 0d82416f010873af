import { ElemType } from './elem-type.js';
import type { Fixture } from './fixture.js';
import { GraphBuilder } from './graph-builder.js';

/**
 * Two inputs of different types and two outputs, for request/response
 * mapping tests. Inputs `a` float32 [batch, 4] and `b` int64 [batch, 4];
 * outputs `sum` float32 [batch, 4] = a + float(b) and `count` int64
 * [batch, 1] = row sums of b.
 */
export function twoInOutModel(): Fixture {
  const g = new GraphBuilder('two_in_out')
    .input('a', ElemType.FLOAT, ['batch', 4])
    .input('b', ElemType.INT64, ['batch', 4])
    .output('sum', ElemType.FLOAT, ['batch', 4])
    .output('count', ElemType.INT64, ['batch', 1])
    // Since opset 13 ReduceSum takes its axes as an int64 input, not an attribute.
    .initializer('axes', ElemType.INT64, [1], new BigInt64Array([1n]))
    .node('Cast', ['b'], ['b_float'], { to: { int: ElemType.FLOAT } })
    .node('Add', ['a', 'b_float'], ['sum'])
    .node('ReduceSum', ['b', 'axes'], ['count'], { keepdims: { int: 1 } });
  return {
    bytes: g.toModel(),
    inputs: [
      { name: 'a', elemType: ElemType.FLOAT, dims: ['batch', 4] },
      { name: 'b', elemType: ElemType.INT64, dims: ['batch', 4] },
    ],
    outputs: [
      { name: 'sum', elemType: ElemType.FLOAT, dims: ['batch', 4] },
      { name: 'count', elemType: ElemType.INT64, dims: ['batch', 1] },
    ],
  };
}

/** Input `x` int64 [batch, 3] → output `y` int64 [batch, 3] = x * 2. */
export function int64Model(): Fixture {
  const g = new GraphBuilder('int64_double')
    .input('x', ElemType.INT64, ['batch', 3])
    .output('y', ElemType.INT64, ['batch', 3])
    .initializer('two', ElemType.INT64, [], new BigInt64Array([2n]))
    .node('Mul', ['x', 'two'], ['y']);
  return {
    bytes: g.toModel(),
    inputs: [{ name: 'x', elemType: ElemType.INT64, dims: ['batch', 3] }],
    outputs: [{ name: 'y', elemType: ElemType.INT64, dims: ['batch', 3] }],
  };
}

/** Input `x` float64 [batch, 2] → output `y` float64 [batch, 2] = x + 1.5. */
export function fp64Model(): Fixture {
  const g = new GraphBuilder('fp64_offset')
    .input('x', ElemType.DOUBLE, ['batch', 2])
    .output('y', ElemType.DOUBLE, ['batch', 2])
    .initializer('offset', ElemType.DOUBLE, [], new Float64Array([1.5]))
    .node('Add', ['x', 'offset'], ['y']);
  return {
    bytes: g.toModel(),
    inputs: [{ name: 'x', elemType: ElemType.DOUBLE, dims: ['batch', 2] }],
    outputs: [{ name: 'y', elemType: ElemType.DOUBLE, dims: ['batch', 2] }],
  };
}

/**
 * Input `x` bool [batch, 3] → outputs `y` bool [batch, 3] = not x and
 * `yi` int32 [batch, 3] = x as 0/1.
 */
export function boolModel(): Fixture {
  const g = new GraphBuilder('bool_not')
    .input('x', ElemType.BOOL, ['batch', 3])
    .output('y', ElemType.BOOL, ['batch', 3])
    .output('yi', ElemType.INT32, ['batch', 3])
    .node('Not', ['x'], ['y'])
    .node('Cast', ['x'], ['yi'], { to: { int: ElemType.INT32 } });
  return {
    bytes: g.toModel(),
    inputs: [{ name: 'x', elemType: ElemType.BOOL, dims: ['batch', 3] }],
    outputs: [
      { name: 'y', elemType: ElemType.BOOL, dims: ['batch', 3] },
      { name: 'yi', elemType: ElemType.INT32, dims: ['batch', 3] },
    ],
  };
}
