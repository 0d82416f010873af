import { ElemType } from './elem-type.js';
import type { Fixture } from './fixture.js';
import { FRAUD_FEATURES, type LabeledRows, generateTransactions } from './fraud-data.js';
import { GraphBuilder } from './graph-builder.js';
import { rocAuc } from '../stats/index.js';

/** Options for {@link trainFraudModel}. */
export interface FraudTrainingOptions {
  /** Training transactions. Default 20000. */
  readonly rows?: number;
  /** Seed of the training data; held-out data uses other seeds. Default 7. */
  readonly seed?: number;
  /** Full-batch gradient descent steps. Default 500. */
  readonly epochs?: number;
  /** Step size on standardized features. Default 0.5. */
  readonly learningRate?: number;
}

/** The trained demo model and what a demo or test needs around it. */
export interface FraudModel extends Fixture {
  readonly featureNames: readonly string[];
  /** Weights on raw (unstandardized) features, rounded to float32 as stored in the model. */
  readonly weights: readonly number[];
  readonly bias: number;
  /** Share of training rows labelled fraud. */
  readonly fraudRate: number;
  /** Accuracy at threshold 0.5 on 10000 held-out rows. */
  readonly accuracy: number;
  /** ROC AUC on the same held-out rows. */
  readonly auc: number;
  /** The model's fraud probability for one raw feature row, in plain JS. */
  predict(row: readonly number[]): number;
  /** `n` realistic feature rows for demo traffic (about 3 % of them fraud). */
  sampleRows(n: number, seed?: number): number[][];
  /** `n` fresh rows with their hidden-rule labels, for evaluation. */
  sampleLabeledRows(n: number, seed?: number): LabeledRows;
}

const sigmoid = (z: number): number => 1 / (1 + Math.exp(-z));

interface Standardized {
  readonly x: Float64Array;
  readonly mean: Float64Array;
  readonly std: Float64Array;
}

function standardize(rows: readonly number[][], width: number): Standardized {
  const n = rows.length;
  const mean = new Float64Array(width);
  const std = new Float64Array(width);
  for (const r of rows) for (let j = 0; j < width; j++) mean[j]! += r[j]! / n;
  for (const r of rows) for (let j = 0; j < width; j++) std[j]! += (r[j]! - mean[j]!) ** 2 / n;
  // A constant column would divide by zero; leave it unscaled.
  for (let j = 0; j < width; j++) std[j] = Math.sqrt(std[j]!) || 1;
  const x = new Float64Array(n * width);
  rows.forEach((r, i) => {
    for (let j = 0; j < width; j++) x[i * width + j] = (r[j]! - mean[j]!) / std[j]!;
  });
  return { x, mean, std };
}

/** Full-batch gradient descent on mean log-loss; returns [weights..., bias]. */
function gradientDescent(x: Float64Array, labels: readonly number[], width: number, epochs: number, lr: number): Float64Array {
  const n = labels.length;
  const theta = new Float64Array(width + 1);
  const grad = new Float64Array(width + 1);
  for (let epoch = 0; epoch < epochs; epoch++) {
    grad.fill(0);
    for (let i = 0; i < n; i++) {
      let z = theta[width]!;
      for (let j = 0; j < width; j++) z += theta[j]! * x[i * width + j]!;
      const err = sigmoid(z) - labels[i]!;
      for (let j = 0; j < width; j++) grad[j]! += err * x[i * width + j]!;
      grad[width]! += err;
    }
    for (let j = 0; j <= width; j++) theta[j]! -= (lr * grad[j]!) / n;
  }
  return theta;
}

/**
 * Trains the demo fraud detector: synthetic card transactions labelled by a
 * hidden logistic rule, a logistic regression fitted by batch gradient
 * descent on standardized features, and the standardization folded into the
 * weights so the ONNX model takes raw features. Model: input `features`
 * float32 [batch, 8] (columns {@link FRAUD_FEATURES}) → MatMul + Add + Sigmoid
 * → output `fraud_probability` float32 [batch, 1]. Deterministic per options.
 */
export function trainFraudModel(options: FraudTrainingOptions = {}): FraudModel {
  const { rows = 20_000, seed = 7, epochs = 500, learningRate = 0.5 } = options;
  const width = FRAUD_FEATURES.length;
  const train = generateTransactions(rows, seed);
  const { x, mean, std } = standardize(train.rows, width);
  const theta = gradientDescent(x, train.labels, width, epochs, learningRate);

  // z = Σ θj (xj − μj)/σj + θb  =  Σ (θj/σj) xj + (θb − Σ θj μj/σj)
  const weights = Array.from({ length: width }, (_, j) => Math.fround(theta[j]! / std[j]!));
  let bias = theta[width]!;
  for (let j = 0; j < width; j++) bias -= (theta[j]! * mean[j]!) / std[j]!;
  bias = Math.fround(bias);
  const predict = (row: readonly number[]): number => sigmoid(row.reduce((z, v, j) => z + v * weights[j]!, bias));

  // Seeds far from the training seed so held-out and demo rows are fresh.
  const sampleLabeledRows = (n: number, s = seed + 1_000_003): LabeledRows => generateTransactions(n, s);
  const heldOut = sampleLabeledRows(10_000, seed + 2_000_003);
  const scores = heldOut.rows.map(predict);
  const correct = scores.filter((p, i) => (p >= 0.5 ? 1 : 0) === heldOut.labels[i]).length;

  const g = new GraphBuilder('fraud_logreg')
    .input('features', ElemType.FLOAT, ['batch', width])
    .output('fraud_probability', ElemType.FLOAT, ['batch', 1])
    .initializer('weights', ElemType.FLOAT, [width, 1], Float32Array.from(weights))
    .initializer('bias', ElemType.FLOAT, [1], Float32Array.of(bias))
    .node('MatMul', ['features', 'weights'], ['logit_raw'])
    .node('Add', ['logit_raw', 'bias'], ['logit'])
    .node('Sigmoid', ['logit'], ['fraud_probability']);

  return {
    bytes: g.toModel({
      domain: 'dev.infermesh.demo',
      metadata: { feature_names: FRAUD_FEATURES.join(','), training_rows: String(rows), training_seed: String(seed) },
    }),
    inputs: [{ name: 'features', elemType: ElemType.FLOAT, dims: ['batch', width] }],
    outputs: [{ name: 'fraud_probability', elemType: ElemType.FLOAT, dims: ['batch', 1] }],
    featureNames: FRAUD_FEATURES,
    weights,
    bias,
    fraudRate: train.labels.reduce((a, b) => a + b, 0) / rows,
    accuracy: correct / heldOut.labels.length,
    auc: rocAuc(scores, heldOut.labels),
    predict,
    sampleRows: (n, s) => sampleLabeledRows(n, s).rows,
    sampleLabeledRows,
  };
}
