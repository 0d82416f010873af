import { readFile } from 'node:fs/promises';
/**
 * Turns the `--input` JSON of `infermesh infer` into OIP input tensors. Two
 * forms: an object `{"<input>": nestedArray, …}` (datatype from the model's
 * metadata, shape from the nesting) or an array of OIP-style tensors
 * `[{"name","datatype","shape","data"}]`. Every problem is a UsageError.
 */
import type { InputTensor } from '../../libs/client/index.js';
import { DATATYPES, datatype, elementCount } from '../../libs/tensor/index.js';
import { CliError, UsageError } from './output.js';

/** The part of a model's metadata the object form needs. */
export interface InputMetadata {
  name: string;
  datatype: string;
  /** -1 for a dynamic dimension. */
  shape: readonly number[];
}

export type ParsedInput = { form: 'tensors'; tensors: InputTensor[] } | { form: 'object'; values: Record<string, unknown> };

type Scalar = number | boolean;

/** Parses the JSON text; says which form it is. */
export function parseInput(text: string): ParsedInput {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`--input is not valid JSON (${(err as Error).message})`);
  }
  if (Array.isArray(value)) return { form: 'tensors', tensors: value.map((t, i) => tensorFromJson(t, i)) };
  if (value !== null && typeof value === 'object') {
    if (Object.keys(value).length === 0) throw new UsageError('--input: the object names no inputs');
    return { form: 'object', values: value as Record<string, unknown> };
  }
  throw new UsageError('--input must be an object {"<input>": array, …} or an array of tensors [{"name","datatype","shape","data"}]');
}

/**
 * Builds tensors for the object form. A value one dimension short of an
 * input whose leading dimension is dynamic is taken as one row (batch 1).
 */
export function tensorsFromObject(values: Record<string, unknown>, inputs: readonly InputMetadata[]): InputTensor[] {
  return Object.entries(values).map(([name, v]) => {
    const meta = inputs.find((i) => i.name === name);
    if (!meta) throw new UsageError(`--input: the model has no input "${name}" (inputs: ${inputs.map((i) => i.name).join(', ') || 'none'})`);
    let { shape, data } = flatten(v, `--input.${name}`);
    if (shape.length + 1 === meta.shape.length && meta.shape[0] === -1) shape = [1, ...shape];
    return checked({ name, datatype: meta.datatype, shape, data }, `--input.${name}`);
  });
}

function tensorFromJson(t: unknown, i: number): InputTensor {
  const where = `--input[${i}]`;
  if (t === null || typeof t !== 'object' || Array.isArray(t)) throw new UsageError(`${where}: expected {"name","datatype","shape","data"}`);
  const o = t as Record<string, unknown>;
  if (typeof o.name !== 'string' || o.name === '') throw new UsageError(`${where}.name: expected a non-empty string`);
  if (typeof o.datatype !== 'string') throw new UsageError(`${where}.datatype: expected one of ${DATATYPES.join(', ')}`);
  const flat = flatten(o.data, `${where}.data`);
  let shape = flat.shape;
  if (o.shape !== undefined) {
    if (!Array.isArray(o.shape) || !o.shape.every((d) => Number.isInteger(d) && (d as number) >= 0)) {
      throw new UsageError(`${where}.shape: expected an array of non-negative integers`);
    }
    shape = o.shape as number[];
  }
  return checked({ name: o.name, datatype: o.datatype.toUpperCase(), shape, data: flat.data }, where);
}

function checked(t: InputTensor, where: string): InputTensor {
  const dt = datatype(t.datatype);
  if (!dt) throw new UsageError(`${where}: datatype ${t.datatype} is not supported (one of ${DATATYPES.join(', ')})`);
  if (elementCount(t.shape) !== t.data.length) {
    throw new UsageError(`${where}: shape [${t.shape.join(',')}] holds ${elementCount(t.shape)} values but ${t.data.length} were given`);
  }
  const isBool = dt.oip === 'BOOL';
  if (!t.data.every((v) => (isBool ? typeof v === 'boolean' || v === 0 || v === 1 : typeof v === 'number'))) {
    throw new UsageError(`${where}: ${t.datatype} values must be ${isBool ? 'booleans' : 'numbers'}`);
  }
  if (!isBool && !dt.oip.startsWith('FP') && !t.data.every((v) => Number.isInteger(v))) {
    throw new UsageError(`${where}: ${t.datatype} values must be integers`);
  }
  return t;
}

/** A (nested, rectangular) array or scalar → its shape and values in row-major order. */
export function flatten(v: unknown, where: string): { shape: number[]; data: Scalar[] } {
  if (typeof v === 'number' || typeof v === 'boolean') return { shape: [], data: [v] };
  if (!Array.isArray(v)) throw new UsageError(`${where}: expected a number, a boolean or a nested array of them`);
  const shape: number[] = [];
  for (let level: unknown = v; Array.isArray(level); level = level[0]) {
    shape.push(level.length);
    if (level.length === 0) break;
  }
  const data: Scalar[] = [];
  const walk = (x: unknown, depth: number, path: string): void => {
    if (depth === shape.length) {
      if (typeof x !== 'number' && typeof x !== 'boolean') throw new UsageError(`${path}: expected a number or boolean, got ${JSON.stringify(x)}`);
      data.push(x);
      return;
    }
    if (!Array.isArray(x) || x.length !== shape[depth]) throw new UsageError(`${path}: the array is not rectangular (expected ${shape[depth]} items here)`);
    x.forEach((y, i) => walk(y, depth + 1, `${path}[${i}]`));
  };
  walk(v, 0, where);
  return { shape, data };
}

/** `--input` as JSON text: the value itself, or the contents of the file named after `@`. */
export async function inputText(input: string): Promise<string> {
  if (!input.startsWith('@')) return input;
  try {
    return await readFile(input.slice(1), 'utf8');
  } catch (err) {
    throw new CliError('NOT_FOUND', `cannot read ${input.slice(1)}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, 2);
  }
}
