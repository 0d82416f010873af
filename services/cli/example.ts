/**
 * `infermesh models example --out FILE`: writes a sample ONNX model to push,
 * the demo's card-fraud logistic regression (libs/onnx-builder), trained
 * here on synthetic transactions; with `--reference` also rows like its
 * training data (CSV with a header) for `models push --reference`.
 */
import { writeFile } from 'node:fs/promises';
import { FRAUD_FEATURES, trainFraudModel } from '../../libs/onnx-builder/index.js';
import { CliError, printJson, printText } from './output.js';

export interface ExampleOptions {
  out: string;
  /** Training data seed: 7 is the demo's model; another seed gives another version of it. */
  seed: number;
  reference?: string;
  referenceRows: number;
  json?: boolean;
}

/** The example model's one input, as `models show` lists it and `infer --input` takes it. */
export const EXAMPLE_INPUT = 'features';

export async function exampleCommand(o: ExampleOptions): Promise<void> {
  const model = trainFraudModel({ seed: o.seed });
  await write(o.out, model.bytes);
  if (o.reference) {
    const rows = model.sampleRows(o.referenceRows, o.seed + 17);
    await write(o.reference, `${FRAUD_FEATURES.join(',')}\n${rows.map((r) => r.join(',')).join('\n')}\n`);
  }
  const example = model.sampleRows(1, o.seed + 29)[0]!;
  const input = JSON.stringify({ [EXAMPLE_INPUT]: [example] });
  if (o.json) {
    printJson({
      out: o.out,
      bytes: model.bytes.length,
      inputs: [{ name: EXAMPLE_INPUT, datatype: 'FP32', shape: [-1, FRAUD_FEATURES.length], columns: FRAUD_FEATURES }],
      outputs: [{ name: 'fraud_probability', datatype: 'FP32', shape: [-1, 1] }],
      rocAuc: model.auc,
      ...(o.reference ? { reference: o.reference, referenceRows: o.referenceRows } : {}),
      exampleInput: JSON.parse(input) as unknown,
    });
    return;
  }
  printText(
    [
      `wrote ${o.out} (${model.bytes.length} bytes): card-fraud logistic regression, ROC AUC ${model.auc.toFixed(3)} on held-out rows`,
      `  input   ${EXAMPLE_INPUT} FP32 [batch, ${FRAUD_FEATURES.length}]: ${FRAUD_FEATURES.join(', ')}`,
      `  output  fraud_probability FP32 [batch, 1]`,
      ...(o.reference ? [`wrote ${o.reference}: ${o.referenceRows} rows like the training data, with a header (models push --reference)`] : []),
      `next: infermesh models push ${o.out} --name NAME --alias production`,
      `      infermesh infer NAME --input '${input}'`,
    ].join('\n'),
  );
}

async function write(file: string, data: Uint8Array | string): Promise<void> {
  try {
    await writeFile(file, data);
  } catch (err) {
    throw new CliError('FAILED_PRECONDITION', `cannot write ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}
