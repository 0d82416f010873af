/**
 * Runs in a disposable child process: loads a model in ONNX Runtime and
 * reports its inputs and outputs. A model that crashes ONNX Runtime kills
 * only this process, never the registry.
 */
import * as ort from 'onnxruntime-node';

interface Spec {
  name: string;
  type: string;
  shape: (number | string)[];
  isTensor: boolean;
}

process.once('message', async (msg: { bytes: Uint8Array }) => {
  try {
    const session = await ort.InferenceSession.create(Buffer.from(msg.bytes), {
      intraOpNumThreads: 1,
      interOpNumThreads: 1,
      graphOptimizationLevel: 'basic',
    });
    const pick = (m: readonly ort.InferenceSession.ValueMetadata[]): Spec[] =>
      m.map((v) => (v.isTensor ? { name: v.name, type: v.type, shape: [...v.shape], isTensor: true } : { name: v.name, type: '', shape: [], isTensor: false }));
    process.send!({ ok: true, inputs: pick(session.inputMetadata), outputs: pick(session.outputMetadata) }, () => process.exit(0));
  } catch (err) {
    process.send!({ ok: false, reason: String((err as Error)?.message ?? err) }, () => process.exit(0));
  }
});
