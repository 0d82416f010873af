/**
 * The README's role table is the code's (libs/grpc/management-roles.ts):
 * the text between `<!-- roles:start -->` and `<!-- roles:end -->` must be
 * exactly what rolesTableMarkdown() renders. After changing the table, paste
 * `node -e "import('./dist/libs/grpc/index.js').then((m) => console.log(m.rolesTableMarkdown()))"`.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { rolesTableMarkdown } from '../../libs/grpc/index.js';

const README = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../README.md');
const START = '<!-- roles:start -->';
const END = '<!-- roles:end -->';

describe('README role table', () => {
  it('is the one in the code', () => {
    const text = readFileSync(README, 'utf8');
    const from = text.indexOf(START);
    const to = text.indexOf(END);
    expect(from, `README.md needs the role table between ${START} and ${END}`).toBeGreaterThanOrEqual(0);
    expect(to, `README.md needs ${END} after ${START}`).toBeGreaterThan(from);
    expect(text.indexOf(START, from + 1), `one ${START} only`).toBe(-1);
    expect(text.slice(from + START.length, to).trim()).toBe(rolesTableMarkdown());
  });
});
