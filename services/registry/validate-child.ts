/**
 * Runs in a disposable child process: loads a model in ONNX Runtime and
 * reports its inputs and outputs; then, when asked, profiles reference data
 * against it (parse, check, run the rows through the model). A model that
 * crashes ONNX Runtime, or a reference that exhausts memory, kills only this
 * process, never the registry.
 */
import * as ort from 'onnxruntime-node';
import { InvalidArgumentError } from '../../libs/errors/index.js';
import { parseReference, referenceLayout, MAX_FEATURES } from './reference-parse.js';
import { ReferenceSample, outputProfiles } from './reference-profile.js';
import { MODEL_RUN_ROWS, runReference } from './reference-run.js';
import type { FeatureProfile } from '../../libs/proto/index.js';
import type { ChildReferenceRequest, ChildReferenceResult, ReferenceRowSample } from './validate.js';

/** Reference rows kept per version for `infermesh optimize`'s accuracy gate (at most 1 M values). */
const GATE_SAMPLE_ROWS = 2_000;
const GATE_SAMPLE_VALUES = 1_000_000;

interface Spec {
  name: string;
  type: string;
  shape: (number | string)[];
  isTensor: boolean;
}

let session: ort.InferenceSession | null = null;

process.on('message', (msg: { bytes: Uint8Array } | { reference: ChildReferenceRequest }) => {
  if ('bytes' in msg) void load(msg.bytes);
  else void profile(msg.reference);
});

async function load(bytes: Uint8Array): Promise<void> {
  try {
    session = await ort.InferenceSession.create(Buffer.from(bytes), {
      intraOpNumThreads: 1,
      interOpNumThreads: 1,
      graphOptimizationLevel: 'basic',
    });
    const pick = (m: readonly ort.InferenceSession.ValueMetadata[]): Spec[] =>
      m.map((v) => (v.isTensor ? { name: v.name, type: v.type, shape: [...v.shape], isTensor: true } : { name: v.name, type: '', shape: [], isTensor: false }));
    process.send!({ ok: true, inputs: pick(session.inputMetadata), outputs: pick(session.outputMetadata) });
  } catch (err) {
    process.send!({ ok: false, reason: String((err as Error)?.message ?? err) }, () => process.exit(0));
  }
}

async function profile(req: ChildReferenceRequest): Promise<void> {
  let result: ChildReferenceResult;
  try {
    result = await profileReference(req);
  } catch (err) {
    result =
      err instanceof InvalidArgumentError
        ? { ok: false, field: err.field, reason: err.message.slice(err.field.length + 2) }
        : { ok: false, field: 'reference', reason: `the model failed on the reference rows: ${String((err as Error)?.message ?? err)}`, runtime: true };
  }
  process.send!(result, () => process.exit(0));
}

async function profileReference(req: ChildReferenceRequest): Promise<ChildReferenceResult> {
  const layout = referenceLayout(req.inputs);
  let sample: ReferenceSample | null = null;
  const parsed = parseReference(Buffer.from(req.data).toString('utf8'), req.format, layout, (row) => {
    (sample ??= new ReferenceSample(layout.features, row.length)).add(row);
  });
  const s = sample as ReferenceSample | null;
  if (!s) throw new InvalidArgumentError('reference', 'no rows');
  const features = s.featureProfiles(parsed.names.slice(0, MAX_FEATURES));
  // Rows of only the profiled features (a model wider than 32 values) cannot be run.
  let outputs: FeatureProfile[] = [];
  let kept: ReferenceRowSample | undefined;
  if (parsed.width === layout.width) {
    const picked = s.pick(MODEL_RUN_ROWS);
    const run = await runReference(session!, layout, req.outputs, picked, req.batchable);
    outputs = outputProfiles(run.names, run.columns);
    // The first rows of a uniform pick are a uniform sample too: kept for optimization gates.
    const keep = Math.min(picked.length, GATE_SAMPLE_ROWS, Math.floor(GATE_SAMPLE_VALUES / Math.max(1, layout.width)));
    const values = new Float64Array(keep * layout.width);
    for (let r = 0; r < keep; r++) values.set(picked[r]!.subarray(0, layout.width), r * layout.width);
    kept = { rows: keep, width: layout.width, values };
  }
  return { ok: true, rows: s.rows, features, outputs, ...(kept ? { sample: kept } : {}) };
}
