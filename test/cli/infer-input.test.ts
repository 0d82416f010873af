import { describe, expect, it } from 'vitest';
import { flatten, parseInput, tensorsFromObject } from '../../services/cli/infer-input.js';
import { UsageError } from '../../services/cli/output.js';
import { renderTable } from '../../services/cli/table.js';

const meta = [{ name: 'features', datatype: 'FP32', shape: [-1, 3] }];

describe('infer --input parsing', () => {
  it('takes shape and values from a nested array', () => {
    expect(flatten([[1, 2, 3], [4, 5, 6]], 'x')).toEqual({ shape: [2, 3], data: [1, 2, 3, 4, 5, 6] });
    expect(flatten(7, 'x')).toEqual({ shape: [], data: [7] });
  });

  it('refuses ragged arrays and non-numbers as usage errors', () => {
    expect(() => flatten([[1, 2], [3]], 'x')).toThrow(UsageError);
    expect(() => flatten([['a']], 'x')).toThrow(/expected a number or boolean/);
    expect(() => parseInput('{nope')).toThrow(/--input is not valid JSON/);
    expect(() => parseInput('42')).toThrow(UsageError);
  });

  it('object form: datatype from metadata, a missing batch dimension added', () => {
    const parsed = parseInput('{"features":[1,2,3]}');
    expect(parsed.form).toBe('object');
    if (parsed.form !== 'object') return;
    expect(tensorsFromObject(parsed.values, meta)).toEqual([{ name: 'features', datatype: 'FP32', shape: [1, 3], data: [1, 2, 3] }]);
    expect(() => tensorsFromObject({ other: [1] }, meta)).toThrow(/no input "other" \(inputs: features\)/);
  });

  it('tensor form: checks shape against the values and integer datatypes', () => {
    const ok = parseInput('[{"name":"ids","datatype":"int64","shape":[2],"data":[[1],[2]]}]');
    expect(ok).toEqual({ form: 'tensors', tensors: [{ name: 'ids', datatype: 'INT64', shape: [2], data: [1, 2] }] });
    expect(() => parseInput('[{"name":"x","datatype":"FP32","shape":[2,2],"data":[1,2,3]}]')).toThrow(/holds 4 values but 3 were given/);
    expect(() => parseInput('[{"name":"x","datatype":"INT32","data":[1.5]}]')).toThrow(/must be integers/);
    expect(() => parseInput('[{"name":"x","datatype":"FP8","data":[1]}]')).toThrow(/not supported/);
  });
});

describe('tables', () => {
  it('aligns columns, numbers to the right', () => {
    expect(renderTable(['NAME', 'N'], [['a', '5'], ['long-name', '123']])).toBe(['NAME         N', 'a            5', 'long-name  123'].join('\n'));
  });
});
