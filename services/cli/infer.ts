/** `infermesh infer NAME --input JSON`: one OIP inference call through the router. */
import { readFile } from 'node:fs/promises';
import { InferenceApi, type InputTensor, type OutputTensor } from '../../libs/client/index.js';
import type { GlobalOptions } from './addresses.js';
import { parseInput, tensorsFromObject } from './infer-input.js';
import { CliError, printJson, printText, remote } from './output.js';
import { formatNumber, renderTable } from './table.js';

export interface InferCommandOptions extends GlobalOptions {
  /** JSON text, or `@path` to read it from a file. */
  input: string;
  version?: string;
  output?: string[];
  id?: string;
  timeoutMs?: number;
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
    if (o.json) {
      printJson({ model_name: response.modelName, model_version: response.modelVersion, id: response.id, outputs: outputs.map((t) => ({ name: t.name, datatype: t.datatype, shape: t.shape, data: t.data })) });
      return;
    }
    printText(`model ${response.modelName}  version ${response.modelVersion}${response.id ? `  id ${response.id}` : ''}`);
    printText(renderTable(['OUTPUT', 'DATATYPE', 'SHAPE', 'VALUES'], outputs.map(outputRow), ['left', 'left', 'left', 'left']));
  } finally {
    api.close();
  }
}

async function inputText(input: string): Promise<string> {
  if (!input.startsWith('@')) return input;
  try {
    return await readFile(input.slice(1), 'utf8');
  } catch (err) {
    throw new CliError('NOT_FOUND', `cannot read ${input.slice(1)}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, 2);
  }
}

function outputRow(t: OutputTensor): string[] {
  const shown = t.data.slice(0, SHOWN_VALUES).map((v) => (typeof v === 'number' ? formatNumber(v) : String(v)));
  const more = t.data.length > SHOWN_VALUES ? ` … (${t.data.length - SHOWN_VALUES} more)` : '';
  return [t.name, t.datatype, `[${t.shape.join(',')}]`, `${shown.join(' ')}${more}`];
}
