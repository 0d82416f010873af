/** CSV lines as the CLI and the registry read them (RFC 4180 quoting within one line). */

/** A malformed CSV line; callers add where it was. */
export class CsvError extends Error {}

/**
 * Splits one CSV line into fields. A quoted field may hold commas and doubled
 * quotes; text between a closing quote and the next comma (other than white
 * space) and an unterminated quote throw CsvError.
 */
export function splitCsvLine(line: string): string[] {
  const out: string[] = [];
  let i = 0;
  for (;;) {
    if (line[i] === '"') {
      let v = '';
      i++;
      for (;;) {
        const q = line.indexOf('"', i);
        if (q < 0) throw new CsvError('unterminated quoted field');
        v += line.slice(i, q);
        if (line[q + 1] === '"') {
          v += '"';
          i = q + 2;
        } else {
          i = q + 1;
          break;
        }
      }
      const next = line.indexOf(',', i);
      if ((next < 0 ? line.slice(i) : line.slice(i, next)).trim() !== '') throw new CsvError('text after a closing quote');
      out.push(v);
      if (next < 0) return out;
      i = next + 1;
    } else {
      const next = line.indexOf(',', i);
      out.push(next < 0 ? line.slice(i) : line.slice(i, next));
      if (next < 0) return out;
      i = next + 1;
    }
  }
}
