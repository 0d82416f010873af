/** The outcomes file formats of `infermesh outcomes NAME FILE` (services/cli/outcomes.ts). */
import { describe, expect, it } from 'vitest';
import { parseOutcomes, parseThreshold } from '../../services/cli/outcomes.js';
import { UsageError } from '../../services/cli/output.js';

const fails = (f: () => unknown): string => {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error('expected a UsageError');
};

describe('outcomes files', () => {
  it('reads CSV by its header, in any column order, with quoted fields and blank lines', () => {
    const text = '\n request_id , label,note\r\nabc,1,x\n"d,e ""f""",0,"y"\n\nghi,0.25,\n';
    expect(parseOutcomes(text, 'f.csv')).toEqual([
      { requestId: 'abc', label: 1 },
      { requestId: 'd,e "f"', label: 0 },
      { requestId: 'ghi', label: 0.25 },
    ]);
    expect(parseOutcomes('label,request_id\n1,a\n', 'f.csv')).toEqual([{ requestId: 'a', label: 1 }]);
  });

  it('reads JSON lines, booleans as 0/1', () => {
    const text = '{"request_id":"a","label":1}\n\n{"request_id":"b","label":false,"extra":3}\n';
    expect(parseOutcomes(text, 'f.jsonl')).toEqual([
      { requestId: 'a', label: 1 },
      { requestId: 'b', label: 0 },
    ]);
  });

  it('names the file and line of a bad entry', () => {
    expect(fails(() => parseOutcomes('', 'f'))).toMatch(/^f: no outcomes/);
    expect(fails(() => parseOutcomes('id,label\na,1\n', 'f'))).toMatch(/^f:1: the CSV header must name/);
    expect(fails(() => parseOutcomes('request_id,label\na,1\nb\n', 'f'))).toMatch(/^f:3: 1 fields/);
    expect(fails(() => parseOutcomes('request_id,label\na,\n', 'f'))).toMatch(/^f:2: label must be a finite number/);
    expect(fails(() => parseOutcomes('request_id,label\n,1\n', 'f'))).toMatch(/^f:2: request_id is empty/);
    expect(fails(() => parseOutcomes(`request_id,label\n${'x'.repeat(129)},1\n`, 'f'))).toMatch(/^f:2: request_id is longer than 128/);
    expect(fails(() => parseOutcomes('request_id,label\n"abc,1\n', 'f'))).toMatch(/^f:2: unterminated quoted field/);
    expect(fails(() => parseOutcomes('{"request_id":"a","label":1}\n{"request_id":"b"}\n', 'f'))).toMatch(/^f:2: label must be a number/);
    expect(fails(() => parseOutcomes('{"request_id":"a","label":1}\nnot json\n', 'f'))).toMatch(/^f:2: not a JSON object/);
    expect(fails(() => parseOutcomes('{"request_id":7,"label":1}\n', 'f'))).toMatch(/^f:1: request_id must be a string/);
  });

  it('checks --threshold', () => {
    expect(parseThreshold(undefined)).toBe(0);
    expect(parseThreshold('0.3')).toBe(0.3);
    for (const t of ['0', '1', '-1', 'abc', '', '1e3']) expect(fails(() => parseThreshold(t))).toMatch(/^--threshold/);
  });
});
