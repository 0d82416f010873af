import { oip } from '../../libs/proto/index.js';
import { datatype, rawToTyped } from '../../libs/tensor/index.js';

/**
 * Whether a shadow version's answer agrees with production's, judged on the
 * first output: for outputs with several columns per row (class scores),
 * the same top class in every row; otherwise every value within `tolerance`.
 * Runs only for mirrored requests, after production has answered.
 */
export function agrees(production: Uint8Array, shadow: Uint8Array, tolerance: number): boolean {
  let a: oip.ModelInferResponse;
  let b: oip.ModelInferResponse;
  try {
    a = oip.ModelInferResponse.decode(production);
    b = oip.ModelInferResponse.decode(shadow);
  } catch {
    return false;
  }
  const ta = a.outputs[0];
  const tb = b.outputs.find((t) => t.name === ta?.name) ?? b.outputs[0];
  const ra = a.rawOutputContents[0];
  const rb = tb ? b.rawOutputContents[b.outputs.indexOf(tb)] : undefined;
  if (!ta || !tb || !ra || !rb || ta.datatype !== tb.datatype || ta.shape.join() !== tb.shape.join()) return false;
  const dt = datatype(ta.datatype);
  if (!dt) return Buffer.compare(ra, rb) === 0;
  const x = rawToTyped(dt, ra);
  const y = rawToTyped(dt, rb);
  const cols = ta.shape.length > 1 ? ta.shape[ta.shape.length - 1]! : 1;
  if (cols > 1) {
    for (let row = 0; row < x.length / cols; row++) {
      let ia = 0;
      let ib = 0;
      for (let j = 1; j < cols; j++) {
        if (Number(x[row * cols + j]) > Number(x[row * cols + ia])) ia = j;
        if (Number(y[row * cols + j]) > Number(y[row * cols + ib])) ib = j;
      }
      if (ia !== ib) return false;
    }
    return true;
  }
  for (let i = 0; i < x.length; i++) if (Math.abs(Number(x[i]) - Number(y[i])) > tolerance) return false;
  return true;
}
