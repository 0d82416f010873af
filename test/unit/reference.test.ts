import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../../libs/errors/index.js';
import type { TensorSpec } from '../../libs/proto/index.js';
import { parseReference, referenceFormat, referenceLayout, type ReferenceFormat } from '../../services/registry/reference-parse.js';
import { splitCsvLine as splitCsv } from '../../libs/csv/index.js';
import { ReferenceSample, outputProfiles } from '../../services/registry/reference-profile.js';

const fp32 = (name: string, ...shape: number[]): TensorSpec => ({ name, datatype: 'FP32', shape });
const one = [fp32('features', -1, 4)];

function parse(text: string, format: ReferenceFormat, inputs: TensorSpec[] = one) {
  const rows: number[][] = [];
  const r = parseReference(text, format, referenceLayout(inputs), (row) => rows.push([...row]));
  return { ...r, data: rows };
}

/** The INVALID_ARGUMENT thrown by `fn`: its field and message. */
function refusal(fn: () => unknown): { field: string; message: string } {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidArgumentError);
    return { field: (err as InvalidArgumentError).field, message: (err as Error).message };
  }
  throw new Error('expected INVALID_ARGUMENT');
}

describe('reference layout', () => {
  it('flattens the inputs in declaration order; features are the first 32 values', () => {
    const l = referenceLayout([fp32('a', -1, 2, 3), { name: 'b', datatype: 'INT64', shape: [-1, 4] }, fp32('c', -1)]);
    expect(l.inputs.map((s) => [s.name, s.offset, s.perRow])).toEqual([
      ['a', 0, 6],
      ['b', 6, 4],
      ['c', 10, 1],
    ]);
    expect(l.width).toBe(11);
    expect(l.features).toBe(11);
    expect(referenceLayout([fp32('x', 1, 40)])).toMatchObject({ width: 40, features: 32 });
  });

  it('refuses inputs it cannot map rows onto', () => {
    expect(refusal(() => referenceLayout([fp32('x', -1, -1)])).field).toBe('reference');
    expect(refusal(() => referenceLayout([fp32('x', 4, 3)])).field).toBe('reference');
    expect(refusal(() => referenceLayout([{ name: 'h', datatype: 'FP16', shape: [-1, 2] }])).field).toBe('reference');
  });

  it('formats: csv and jsonl only, naming header.reference_format', () => {
    expect(referenceFormat('csv')).toBe('csv');
    expect(referenceFormat('jsonl')).toBe('jsonl');
    expect(refusal(() => referenceFormat('parquet')).field).toBe('header.reference_format');
    expect(refusal(() => referenceFormat('')).field).toBe('header.reference_format');
  });
});

describe('CSV reference', () => {
  it('takes a header of feature names and numeric rows (BOM, CRLF, blank lines, quotes)', () => {
    const r = parse('\ufeffamount,"age, years",score,n\r\n1,2,3,4\r\n\r\n-1.5, 2e3 ,0,7\r\n', 'csv');
    expect(r.names).toEqual(['amount', 'age, years', 'score', 'n']);
    expect(r.rows).toBe(2);
    expect(r.data).toEqual([
      [1, 2, 3, 4],
      [-1.5, 2000, 0, 7],
    ]);
  });

  it('splits quoted fields with commas and doubled quotes', () => {
    expect(splitCsv('a,"b,c","d ""e"""')).toEqual(['a', 'b,c', 'd "e"']);
    expect(splitCsv('1,,3')).toEqual(['1', '', '3']);
  });

  it('names the bad line', () => {
    const cases: [string, RegExp][] = [
      ['1,2,3,4\n5,6,7,8\n', /^reference: line 1: expected a header row/],
      ['a,b,c\n1,2,3\n', /^reference: line 1: 3 columns in the header/],
      ['a,b,c,d\n1,2,3,4\n1,x,3,4\n', /^reference: line 3: column 2 \(b\)/],
      ['a,b,c,d\n1,2,3,4\n\n1,2,3\n', /^reference: line 4: 3 values/],
      ['a,b,c,d\n1,2,,4\n', /^reference: line 2: column 3/],
      ['a,b,c,d\n1,2,Infinity,4\n', /^reference: line 2: column 3/],
      ['a,a,c,d\n1,2,3,4\n', /^reference: line 1: feature name "a" appears twice/],
      ['a,b,c,d\n', /^reference: no rows after the header/],
      ['', /^reference: no rows/],
    ];
    for (const [text, re] of cases) {
      const r = refusal(() => parse(text, 'csv'));
      expect(r.field).toBe('reference');
      expect(r.message).toMatch(re);
    }
  });

  it('integer and BOOL inputs take whole numbers in range', () => {
    const inputs: TensorSpec[] = [{ name: 'n', datatype: 'INT32', shape: [-1, 1] }, { name: 'b', datatype: 'BOOL', shape: [-1, 1] }];
    expect(parse('n,b\n3,1\n-7,0\n', 'csv', inputs).data).toEqual([
      [3, 1],
      [-7, 0],
    ]);
    expect(refusal(() => parse('n,b\n3,1\n2.5,0\n', 'csv', inputs)).message).toMatch(/^reference: line 3: value 1 \(n\)/);
    expect(refusal(() => parse('n,b\n3,2\n', 'csv', inputs)).message).toMatch(/^reference: line 2: value 2 \(b\) must be 0 or 1/);
  });

  it('a model wider than 32 values takes full rows or exactly the 32 profiled features', () => {
    const wide = [fp32('x', -1, 40)];
    const header = (n: number) => Array.from({ length: n }, (_, i) => `f${i}`).join(',');
    const row = (n: number) => Array.from({ length: n }, (_, i) => i).join(',');
    expect(parse(`${header(40)}\n${row(40)}\n`, 'csv', wide).width).toBe(40);
    expect(parse(`${header(32)}\n${row(32)}\n`, 'csv', wide).width).toBe(32);
    expect(refusal(() => parse(`${header(33)}\n${row(33)}\n`, 'csv', wide)).message).toMatch(/^reference: line 1: 33 columns/);
  });
});

describe('JSON-lines reference', () => {
  it('arrays of numbers: names <tensor>[<i>]', () => {
    const r = parse('[1,2,3,4]\n[5,6,7,true]\n', 'jsonl');
    expect(r.names).toEqual(['features[0]', 'features[1]', 'features[2]', 'features[3]']);
    expect(r.data).toEqual([
      [1, 2, 3, 4],
      [5, 6, 7, 1],
    ]);
  });

  it('objects of feature → number: names and order from the first line', () => {
    const r = parse('{"d":1,"c":2,"b":3,"a":4}\n{"a":40,"b":30,"c":20,"d":10}\n', 'jsonl');
    expect(r.names).toEqual(['d', 'c', 'b', 'a']);
    expect(r.data[1]).toEqual([10, 20, 30, 40]);
  });

  it('objects of input → values (nested arrays flattened), inputs in declaration order', () => {
    const inputs = [fp32('a', -1, 2, 2), fp32('b', -1, 1)];
    const r = parse('{"b":[9],"a":[[1,2],[3,4]]}\n', 'jsonl', inputs);
    expect(r.names).toEqual(['a[0]', 'a[1]', 'a[2]', 'a[3]', 'b[0]']);
    expect(r.data).toEqual([[1, 2, 3, 4, 9]]);
  });

  it('names the bad line', () => {
    const cases: [string, RegExp][] = [
      ['[1,2,3,4]\n[1,2,3\n', /^reference: line 2: not valid JSON/],
      ['[1,2,3,4]\n{"a":1,"b":2,"c":3,"d":4}\n', /^reference: line 2: an object of feature → number, but the first line is an array/],
      ['{"a":1,"b":2,"c":3,"d":4}\n{"a":1,"b":2,"c":3,"e":4}\n', /^reference: line 2: feature "d" is missing/],
      ['{"a":1,"b":2,"c":3,"d":"x"}\n', /^reference: line 1: feature "d" is not a finite number/],
      ['[1,2,3]\n', /^reference: line 1: 3 values/],
      ['\n\n{"features":[1,2,3]}\n', /^reference: line 3: input "features" has 3 values/],
      ['{"other":[1,2,3,4]}\n', /^reference: line 1: "other" is not an input/],
      ['{"features":[1,2,3,4],"x":1}\n', /^reference: line 1: mixes arrays/],
      ['42\n', /^reference: line 1: expected an array of numbers or an object/],
    ];
    for (const [text, re] of cases) {
      const r = refusal(() => parse(text, 'jsonl'));
      expect(r.field).toBe('reference');
      expect(r.message).toMatch(re);
    }
  });
});

describe('reference sample', () => {
  it('exact moments over every row, bins from a bounded uniform sample', () => {
    const s = new ReferenceSample(2, 3, 100);
    const row = new Float64Array(3);
    for (let i = 0; i < 1000; i++) {
      row.set([i, i % 2, 0.1]);
      s.add(row);
    }
    expect(s.rows).toBe(1000);
    const [f0, f1] = s.featureProfiles(['i', 'parity']);
    expect(f0!.mean).toBeCloseTo(499.5, 9);
    expect(f0!.min).toBe(0);
    expect(f0!.max).toBe(999);
    expect(f0!.stddev).toBeCloseTo(Math.sqrt((1000 * 1000 - 1) / 12), 6);
    expect(f0!.quantiles).toHaveLength(100);
    // The kept 100 rows are a uniform sample: their values spread over the whole range.
    expect(f0!.quantiles[0]!).toBeLessThan(100);
    expect(f0!.quantiles[99]!).toBeGreaterThan(900);
    expect(f1!.edges).toEqual([0.5]);
    expect(f1!.fractions[0]!).toBeGreaterThan(0.3);
    expect(f1!.fractions[0]!).toBeLessThan(0.7);
    const picked = s.pick(30);
    expect(picked).toHaveLength(30);
    expect(new Set(picked.map((r) => r[0])).size).toBe(30);
    expect(s.pick(1000)).toHaveLength(100);
  });

  it('profiles values as float32, as the routers summarize them', () => {
    const s = new ReferenceSample(1, 1);
    s.add(Float64Array.of(0.1));
    expect(s.featureProfiles(['x'])[0]!.quantiles).toEqual([Math.fround(0.1)]);
  });

  it('output columns: non-finite values left out, an all-missing column gets no bins', () => {
    const [a, b] = outputProfiles(['score[0]', 'score[1]'], [Float64Array.of(0.2, NaN, 0.4), Float64Array.of(NaN, NaN, NaN)]);
    expect(a!.quantiles).toEqual([Math.fround(0.2), Math.fround(0.4)]);
    expect(b!.fractions).toEqual([]);
  });
});
