/** `infermesh infer NAME --input JSON`: one OIP inference call through the router, optionally with its timing. */
import { InferenceApi, type InputTensor, type OutputTensor } from '../../libs/client/index.js';
import type { oip } from '../../libs/proto/index.js';
import type { GlobalOptions } from './addresses.js';
import { inputText, parseInput, tensorsFromObject } from './infer-input.js';
import { printJson, printText, remote } from './output.js';
import { formatMsFine, formatNumber, renderTable } from './table.js';

export interface InferCommandOptions extends GlobalOptions {
  /** JSON text, or `@path` to read it from a file. */
  input: string;
  version?: string;
  output?: string[];
  id?: string;
  timeoutMs?: number;
  /** Also show the router's timing parameters. */
  timing?: boolean;
}

/** Where one request's time went, as the router reports it in the response parameters; ms, null when absent. */
export interface Timing {
  total_ms: number | null;
  router_ms: number | null;
  network_ms: number | null;
  queue_ms: number | null;
  compute_ms: number | null;
  /** Set when the request was traced. */
  trace_id: string | null;
}

/** Values shown per output in a table; --json always has all of them. */
const SHOWN_VALUES = 16;

export async function inferCommand(name: string, o: InferCommandOptions): Promise<void> {
  const parsed = parseInput(await inputText(o.input));
  const api = new InferenceApi(o.router, o.timeoutMs ?? 10_000);
  try {
    let inputs: InputTensor[];
    if (parsed.form === 'tensors') {
      inputs = parsed.tensors;
    } else {
      // The object form leaves the datatype (and a missing batch dimension) to the model's metadata.
      const meta = await remote('router', o.router, () => api.metadata(name, o.version ?? ''));
      inputs = tensorsFromObject(parsed.values, meta.inputs);
    }
    const { response, outputs } = await remote('router', o.router, () =>
      api.infer(name, inputs, { version: o.version, id: o.id, outputs: o.output, timeoutMs: o.timeoutMs }),
    );
    const timing = o.timing ? timingOf(response) : undefined;
    if (o.json) {
      printJson({
        model_name: response.modelName,
        model_version: response.modelVersion,
        id: response.id,
        outputs: outputs.map((t) => ({ name: t.name, datatype: t.datatype, shape: t.shape, data: t.data })),
        ...(timing ? { timing } : {}),
      });
      return;
    }
    printText(`model ${response.modelName}  version ${response.modelVersion}${response.id ? `  id ${response.id}` : ''}`);
    printText(renderTable(['OUTPUT', 'DATATYPE', 'SHAPE', 'VALUES'], outputs.map(outputRow), ['left', 'left', 'left', 'left']));
    if (timing) printText(`\n${timingTable(timing)}`);
  } finally {
    api.close();
  }
}

/** Reads the router's `infermesh.*_us` and `infermesh.trace_id` response parameters. */
export function timingOf(response: oip.ModelInferResponse): Timing {
  const ms = (key: string): number | null => {
    const c = response.parameters[`infermesh.${key}_us`]?.parameterChoice;
    return c && (c.$case === 'int64Param' || c.$case === 'uint64Param') ? c.value / 1000 : null;
  };
  const t = response.parameters['infermesh.trace_id']?.parameterChoice;
  return {
    total_ms: ms('total'),
    router_ms: ms('router'),
    network_ms: ms('network'),
    queue_ms: ms('queue'),
    compute_ms: ms('compute'),
    trace_id: t?.$case === 'stringParam' && t.value ? t.value : null,
  };
}

/** One row: TOTAL_MS … COMPUTE_MS and TRACE_ID, `-` where the router said nothing. */
export function timingTable(t: Timing): string {
  const ms = (v: number | null) => (v === null ? '-' : formatMsFine(v));
  return renderTable(
    ['TOTAL_MS', 'ROUTER_MS', 'NETWORK_MS', 'QUEUE_MS', 'COMPUTE_MS', 'TRACE_ID'],
    [[ms(t.total_ms), ms(t.router_ms), ms(t.network_ms), ms(t.queue_ms), ms(t.compute_ms), t.trace_id ?? '-']],
    ['right', 'right', 'right', 'right', 'right', 'left'],
  );
}

function outputRow(t: OutputTensor): string[] {
  const shown = t.data.slice(0, SHOWN_VALUES).map((v) => (typeof v === 'number' ? formatNumber(v) : String(v)));
  const more = t.data.length > SHOWN_VALUES ? ` … (${t.data.length - SHOWN_VALUES} more)` : '';
  return [t.name, t.datatype, `[${t.shape.join(',')}]`, `${shown.join(' ')}${more}`];
}
