import type { Dim } from './graph-builder.js';
import type { ElemType } from './elem-type.js';

/** One graph input or output of a fixture, as declared in the model. */
export interface IoSpec {
  readonly name: string;
  readonly elemType: ElemType;
  readonly dims: readonly Dim[];
}

/** Model bytes plus what a caller needs to feed them without reading the graph. */
export interface Fixture {
  readonly bytes: Uint8Array;
  readonly inputs: readonly IoSpec[];
  readonly outputs: readonly IoSpec[];
}
