/**
 * onnx-builder: real ONNX model bytes made in code, for tests and the demo,
 * so nothing binary is checked in and every fixture documents what it computes.
 */
export { ElemType, type TensorData, ortTypeOf } from './elem-type.js';
export {
  GraphBuilder,
  encodeModel,
  tensorProto,
  type AttrValue,
  type Dim,
  type ModelOptions,
  type NodeOptions,
  type TensorSpec,
} from './graph-builder.js';
export type { Fixture, IoSpec } from './fixture.js';
export { mulberry32, type Rng } from './prng.js';
export { mlpModel, wideMlpModel, type DenseLayer, type MlpModel, type MlpOptions } from './mlp-model.js';
export { twoInOutModel, int64Model, fp64Model, boolModel } from './typed-models.js';
export { slowModel, type SlowModel } from './slow-model.js';
export { brokenModel, customOpModel, externalDataModel, type BrokenReason } from './hostile-models.js';
export { FRAUD_FEATURES, type LabeledRows } from './fraud-data.js';
export { trainFraudModel, type FraudModel, type FraudTrainingOptions } from './fraud-model.js';
export { rocAuc } from '../stats/index.js';
export { cnnModel, type CnnOptions } from './cnn-model.js';
export { encoderModel, type EncoderOptions } from './encoder-model.js';
export { standardizerModel } from './standardizer-model.js';
export { quantizeInt8, defaultInt8Plan, inputGram, int8Sites, weightsToFp16, pruneWeights, type TransformResult, type PruneResult, type Int8Options, type Int8Mode, type Int8Site, type Fp16Options } from './weight-transforms.js';
export { composePipeline, composeEnsemble, type ComposePart, type EnsembleCombine, type StepMap } from './compose.js';
export { floatValues, toHalfBits } from './tensor-values.js';
