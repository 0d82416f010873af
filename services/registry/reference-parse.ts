/**
 * Reads reference data (`models push --reference FILE`): rows of model
 * inputs as CSV or JSON lines, checked against the model's inputs. Each row
 * is the flattened first-row values of the inputs in declaration order — the
 * order of PredictionSample.input_summary.
 */
import { CsvError, splitCsvLine } from '../../libs/csv/index.js';
import { InvalidArgumentError } from '../../libs/errors/index.js';
import type { TensorSpec } from '../../libs/proto/index.js';

/** Values per sample the routers summarize (sample-recorder.ts): the features drift is tracked on. */
export const MAX_FEATURES = 32;

export type ReferenceFormat = 'csv' | 'jsonl';
const FORMATS: readonly string[] = ['csv', 'jsonl'];

/** Default cap on a push's reference data. */
export const MAX_REFERENCE_BYTES = 64 * 1024 * 1024;

/** `value` as a reference format; INVALID_ARGUMENT (field `header.reference_format`) unless `csv` or `jsonl`. */
export function referenceFormat(value: string): ReferenceFormat {
  if (!FORMATS.includes(value)) {
    throw new InvalidArgumentError('header.reference_format', value === '' ? 'must be csv or jsonl when reference data is sent' : `"${value.slice(0, 40)}" is not csv or jsonl`);
  }
  return value as ReferenceFormat;
}

/** Where one input's values sit in a row. */
export interface InputSlot {
  name: string;
  datatype: string;
  /** Dimensions of one row (the shape without its leading row dimension). */
  rowDims: number[];
  perRow: number;
  offset: number;
}

export interface ReferenceLayout {
  inputs: InputSlot[];
  /** Values in a full row: every input's per-row values. */
  width: number;
  /** Values profiled per row: min(width, 32). */
  features: number;
}

/** Inclusive ranges of the integer datatypes (values beyond 2^53 are refused). */
const INT_RANGE: Record<string, readonly [number, number]> = {
  BOOL: [0, 1],
  UINT8: [0, 255],
  INT8: [-128, 127],
  UINT16: [0, 65535],
  INT16: [-32768, 32767],
  UINT32: [0, 4294967295],
  INT32: [-2147483648, 2147483647],
  UINT64: [0, Number.MAX_SAFE_INTEGER],
  INT64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
};
const FLOAT_TYPES = new Set(['FP32', 'FP64']);

/**
 * How reference rows map onto the model's inputs. Every input needs a
 * leading row dimension (dynamic, or 1) and fixed dimensions after it, and a
 * numeric datatype other than FP16. Throws INVALID_ARGUMENT (field
 * `reference`) otherwise.
 */
export function referenceLayout(inputs: readonly TensorSpec[]): ReferenceLayout {
  const slots: InputSlot[] = [];
  let offset = 0;
  for (const t of inputs) {
    if (!FLOAT_TYPES.has(t.datatype) && !(t.datatype in INT_RANGE)) {
      throw new InvalidArgumentError('reference', `input "${t.name}" is ${t.datatype}; reference data needs FP32, FP64, integer or BOOL inputs`);
    }
    const [rowDim, ...rowDims] = t.shape;
    if (rowDim === undefined || (rowDim !== -1 && rowDim !== 1) || rowDims.some((d) => d <= 0)) {
      throw new InvalidArgumentError('reference', `input "${t.name}" has shape [${t.shape.join(',')}]; reference data needs a leading row dimension and fixed dimensions after it`);
    }
    const perRow = rowDims.reduce((a, b) => a * b, 1);
    slots.push({ name: t.name, datatype: t.datatype, rowDims, perRow, offset });
    offset += perRow;
  }
  if (offset === 0) throw new InvalidArgumentError('reference', 'the model has no inputs');
  return { inputs: slots, width: offset, features: Math.min(offset, MAX_FEATURES) };
}

/** `<tensor>[<i>]` for the first `count` values of a row. */
export function defaultNames(layout: ReferenceLayout, count: number): string[] {
  const names: string[] = [];
  for (const s of layout.inputs) for (let i = 0; i < s.perRow && names.length < count; i++) names.push(`${s.name}[${i}]`);
  return names;
}

/** What the parser hands over for each row. */
export interface RowSink {
  /** `row` is reused for the next row: copy what you keep. */
  (row: Float64Array): void;
}

export interface ParsedReference {
  /** One name per value of a row. */
  names: string[];
  /** Values per row: the layout's width, or 32 when the model takes more (features only). */
  width: number;
  rows: number;
}

/**
 * Parses `text` as `format` and hands each row to `sink`. Rows carry either
 * the model's full input (`layout.width` values) or, when that is more than
 * 32, exactly the first 32 (the profiled features; the model cannot then be
 * run on them). Blank lines are skipped. Throws INVALID_ARGUMENT (field
 * `reference`, message starting `line N:`) for the first bad line.
 */
export function parseReference(text: string, format: ReferenceFormat, layout: ReferenceLayout, sink: RowSink): ParsedReference {
  const p = format === 'csv' ? new CsvParser(layout) : new JsonlParser(layout);
  let lineNo = 0;
  let start = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  while (start <= text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    lineNo++;
    let line = text.slice(start, end);
    if (line.endsWith('\r')) line = line.slice(0, -1);
    start = end + 1;
    if (line.trim() === '') continue;
    try {
      const row = p.line(line);
      if (row) {
        checkTypes(layout, row);
        sink(row);
      }
    } catch (err) {
      if (err instanceof RowError) throw new InvalidArgumentError('reference', `line ${lineNo}: ${err.message}`);
      throw err;
    }
  }
  if (!p.names) throw new InvalidArgumentError('reference', 'no rows');
  if (p.rows === 0) throw new InvalidArgumentError('reference', `no rows after the ${format === 'csv' ? 'header' : 'first line'}`);
  return { names: p.names, width: p.names.length, rows: p.rows };
}

/** A problem with one line; parseReference adds the line number. */
class RowError extends Error {}

function acceptedWidths(layout: ReferenceLayout): string {
  return layout.width > MAX_FEATURES ? `${layout.width} (the full input) or ${MAX_FEATURES} (the profiled features)` : String(layout.width);
}

function checkWidth(layout: ReferenceLayout, n: number, what: string): void {
  if (n !== layout.width && !(layout.width > MAX_FEATURES && n === MAX_FEATURES)) {
    throw new RowError(`${n} ${what}; the model takes ${acceptedWidths(layout)} values per row (${layout.inputs.map((s) => `${s.name}[${s.perRow}]`).join(', ')})`);
  }
}

function featureName(name: string, seen: Set<string>): string {
  const n = name.trim();
  if (n === '') throw new RowError('empty feature name');
  if (n.length > 128) throw new RowError(`feature name longer than 128 characters`);
  if (/[\u0000-\u001f\u007f]/.test(n)) throw new RowError('feature names must not contain control characters');
  if (seen.has(n)) throw new RowError(`feature name "${n}" appears twice`);
  seen.add(n);
  return n;
}

/** Integer and BOOL inputs take whole numbers in their range. */
function checkTypes(layout: ReferenceLayout, row: Float64Array): void {
  for (const s of layout.inputs) {
    const range = INT_RANGE[s.datatype];
    if (!range) continue;
    const end = Math.min(s.offset + s.perRow, row.length);
    for (let i = s.offset; i < end; i++) {
      const v = row[i]!;
      if (!Number.isInteger(v) || v < range[0] || v > range[1]) {
        throw new RowError(`value ${i + 1} (${s.name}) must be ${s.datatype === 'BOOL' ? '0 or 1' : `a whole number in [${range[0]}, ${range[1]}]`} for ${s.datatype}`);
      }
    }
  }
}

function toNumber(v: unknown, where: () => string): number {
  const n = typeof v === 'boolean' ? (v ? 1 : 0) : typeof v === 'number' ? v : NaN;
  if (!Number.isFinite(n)) throw new RowError(`${where()} is not a finite number`);
  return n;
}

interface LineParser {
  names: string[] | null;
  rows: number;
  /** The row of this line, or null for a header line. */
  line(line: string): Float64Array | null;
}

/** CSV with a header row of feature names; values are numbers (RFC 4180 quoting allowed). */
class CsvParser implements LineParser {
  names: string[] | null = null;
  rows = 0;
  private row = new Float64Array(0);
  constructor(private readonly layout: ReferenceLayout) {}

  line(line: string): Float64Array | null {
    let fields: string[];
    try {
      fields = splitCsvLine(line);
    } catch (err) {
      throw err instanceof CsvError ? new RowError(err.message) : err;
    }
    if (!this.names) {
      if (fields.every((f) => f.trim() !== '' && Number.isFinite(Number(f)))) {
        throw new RowError('expected a header row of feature names, found numbers');
      }
      checkWidth(this.layout, fields.length, 'columns in the header');
      const seen = new Set<string>();
      this.names = fields.map((f) => featureName(f, seen));
      this.row = new Float64Array(fields.length);
      return null;
    }
    if (fields.length !== this.names.length) throw new RowError(`${fields.length} values, the header has ${this.names.length} columns`);
    for (let i = 0; i < fields.length; i++) {
      const f = fields[i]!.trim();
      const v = f === '' ? NaN : Number(f);
      if (!Number.isFinite(v)) throw new RowError(`column ${i + 1} (${this.names[i]}) is not a finite number`);
      this.row[i] = v;
    }
    this.rows++;
    return this.row;
  }
}

type JsonlForm = 'array' | 'features' | 'tensors';

/**
 * JSON lines, every line of the same form as the first: an array of numbers
 * (names `<tensor>[<i>]`), an object of feature name → number (names and
 * their order from the first line's keys), or an object of input name →
 * (nested) array of that input's per-row values.
 */
class JsonlParser implements LineParser {
  names: string[] | null = null;
  rows = 0;
  private form: JsonlForm | null = null;
  private row = new Float64Array(0);
  private readonly inputNames: Set<string>;
  constructor(private readonly layout: ReferenceLayout) {
    this.inputNames = new Set(layout.inputs.map((s) => s.name));
  }

  line(line: string): Float64Array {
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch {
      throw new RowError('not valid JSON');
    }
    const form = formOf(v, this.inputNames);
    if (!this.form) this.start(form, v);
    else if (form !== this.form) throw new RowError(`${describeForm(form)}, but the first line is ${describeForm(this.form)}`);
    if (form === 'array') {
      const a = v as unknown[];
      checkWidth(this.layout, a.length, 'values');
      if (a.length !== this.row.length) throw new RowError(`${a.length} values, the first line has ${this.row.length}`);
      for (let i = 0; i < a.length; i++) this.row[i] = toNumber(a[i], () => `value ${i + 1}`);
    } else if (form === 'features') {
      const o = v as Record<string, unknown>;
      const names = this.names!;
      if (Object.keys(o).length !== names.length) throw new RowError(`${Object.keys(o).length} features, the first line has ${names.length}`);
      for (let i = 0; i < names.length; i++) {
        if (!Object.hasOwn(o, names[i]!)) throw new RowError(`feature "${names[i]}" is missing`);
        this.row[i] = toNumber(o[names[i]!], () => `feature "${names[i]}"`);
      }
    } else {
      const o = v as Record<string, unknown>;
      for (const s of this.layout.inputs) {
        if (!Object.hasOwn(o, s.name)) throw new RowError(`input "${s.name}" is missing`);
        const flat = (o[s.name] as unknown[]).flat(Infinity);
        if (flat.length !== s.perRow) throw new RowError(`input "${s.name}" has ${flat.length} values, the model takes ${s.perRow} per row`);
        for (let i = 0; i < flat.length; i++) this.row[s.offset + i] = toNumber(flat[i], () => `${s.name}[${i}]`);
      }
    }
    this.rows++;
    return this.row;
  }

  private start(form: JsonlForm, v: unknown): void {
    this.form = form;
    if (form === 'array') {
      const n = (v as unknown[]).length;
      checkWidth(this.layout, n, 'values');
      this.names = defaultNames(this.layout, n);
    } else if (form === 'features') {
      const keys = Object.keys(v as object);
      checkWidth(this.layout, keys.length, 'features');
      const seen = new Set<string>();
      this.names = keys.map((k) => featureName(k, seen));
      // Keys are matched exactly on later lines; a name that trims differently would never match.
      if (this.names.some((n, i) => n !== keys[i])) throw new RowError('feature names must not start or end with spaces');
    } else {
      this.names = defaultNames(this.layout, this.layout.width);
    }
    this.row = new Float64Array(this.names.length);
  }
}

function formOf(v: unknown, inputs: Set<string>): JsonlForm {
  if (Array.isArray(v)) return 'array';
  if (v === null || typeof v !== 'object') throw new RowError('expected an array of numbers or an object');
  const values = Object.values(v);
  if (values.length === 0) throw new RowError('empty object');
  if (values.every(Array.isArray)) {
    const extra = Object.keys(v).find((k) => !inputs.has(k));
    if (extra !== undefined) throw new RowError(`"${extra}" is not an input of the model (inputs: ${[...inputs].join(', ')})`);
    return 'tensors';
  }
  if (values.some(Array.isArray)) throw new RowError('mixes arrays (input name → values) and numbers (feature name → value)');
  return 'features';
}

function describeForm(f: JsonlForm): string {
  return f === 'array' ? 'an array' : f === 'features' ? 'an object of feature → number' : 'an object of input → values';
}
