/** Plain aligned tables for people: two spaces between columns, numbers right-aligned. */

export type Align = 'left' | 'right';

/**
 * Renders `rows` under `headers`. A column is right-aligned when `align`
 * says so, or (by default) when every cell in it looks like a number.
 * Returns the lines joined by newlines, without a trailing newline.
 */
export function renderTable(headers: readonly string[], rows: readonly (readonly string[])[], align?: readonly Align[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const aligns = headers.map((_, i) => align?.[i] ?? (rows.length > 0 && rows.every((r) => isNumeric(r[i] ?? '')) ? 'right' : 'left'));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (aligns[i] === 'right' ? c.padStart(widths[i]!) : i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

/** A two-column table of fields, for one record. */
export function renderFields(fields: readonly (readonly [string, string])[]): string {
  const w = Math.max(...fields.map(([k]) => k.length));
  return fields.map(([k, v]) => `${k.padEnd(w)}  ${v}`.trimEnd()).join('\n');
}

/** A number for a table: integers as-is, others to `digits` significant digits. */
export function formatNumber(v: number, digits = 6): string {
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(digits)));
}

/** Milliseconds with two decimals. */
export function formatMs(v: number): string {
  return v.toFixed(2);
}

/** Milliseconds with three decimals (microsecond resolution), for per-request breakdowns. */
export function formatMsFine(v: number): string {
  return v.toFixed(3);
}

/** A byte count for people: 1536 -> "1.5 KiB". */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = -1;
  do {
    v /= 1024;
    u++;
  } while (v >= 1024 && u < units.length - 1);
  return `${v.toFixed(1)} ${units[u]}`;
}

function isNumeric(s: string): boolean {
  return s !== '' && /^-?[\d.,]+(e[-+]?\d+)?( ?[KMGT]?i?B)?$/i.test(s);
}
