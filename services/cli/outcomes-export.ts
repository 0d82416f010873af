/**
 * `infermesh outcomes export NAME [--version V] [--since T] --format csv|jsonl
 * [--output FILE]`: the joined rows (request id, time, version, segment,
 * label, features, outputs) streamed from the monitor to stdout or a file,
 * one chunk at a time: a chunk is written (and the writer drained) before
 * the next is read, so memory stays bounded whatever the number of rows.
 * Values are written exactly: float32 features and outputs print as the
 * shortest decimal that reads back as the same double (hence the same float).
 */
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import type { Writable } from 'node:stream';
import { MonitorApi } from '../../libs/client/index.js';
import type { ExportOutcomesChunk, ExportRow } from '../../libs/proto/index.js';
import type { GlobalOptions } from './addresses.js';
import { progress, remote, UsageError } from './output.js';

export interface ExportOptions extends GlobalOptions {
  version?: number;
  since?: string;
  format: string;
  output?: string;
}

const DURATION_RE = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * `--since`: an ISO 8601 time, epoch milliseconds, or a duration back from
 * `now` (`90m`, `24h`, `7d`). Returns epoch ms; UsageError otherwise.
 */
export function parseSince(raw: string | undefined, now = Date.now()): number {
  if (raw === undefined) return 0;
  const s = raw.trim();
  const d = DURATION_RE.exec(s);
  if (d) return Math.max(0, Math.round(now - Number(d[1]) * UNIT_MS[d[2]!]!));
  if (/^\d+$/.test(s)) return Number(s);
  const t = Date.parse(s);
  if (s === '' || Number.isNaN(t) || t < 0) throw new UsageError(`--since must be an ISO time (2026-11-20T10:00:00Z), epoch milliseconds or a duration such as 24h or 7d (got "${raw}")`);
  return t;
}

/** A CSV field, quoted when it holds a comma, quote or line break. */
export function csvField(s: string): string {
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** Writes rows as CSV or JSON lines; the CSV header comes from the first chunk. */
export class RowWriter {
  private width = { features: 0, outputs: 0 };
  private started = false;

  constructor(private readonly format: 'csv' | 'jsonl') {}

  /** The text of one chunk (the header first, for CSV). */
  chunk(c: ExportOutcomesChunk): string {
    let text = '';
    if (!this.started) {
      this.started = true;
      this.width = { features: c.featureNames.length, outputs: c.outputNames.length };
      if (this.format === 'csv') {
        const cols = ['request_id', 'at_ms', 'version', c.segmentBy ? `segment:${c.segmentBy}` : 'segment', 'label', ...c.featureNames, ...c.outputNames.map((n) => `output:${n}`)];
        text += cols.map(csvField).join(',') + '\n';
      }
    }
    for (const r of c.rows) text += this.format === 'csv' ? this.csv(r) : this.jsonl(r);
    return text;
  }

  private csv(r: ExportRow): string {
    const cells = [csvField(r.requestId), String(r.atMs), String(r.version), csvField(r.segment), String(r.label)];
    for (let i = 0; i < this.width.features; i++) cells.push(i < r.features.length ? String(r.features[i]) : '');
    for (let i = 0; i < this.width.outputs; i++) cells.push(i < r.outputs.length ? String(r.outputs[i]) : '');
    return cells.join(',') + '\n';
  }

  private jsonl(r: ExportRow): string {
    return JSON.stringify({ request_id: r.requestId, at_ms: r.atMs, version: r.version, segment: r.segment, label: r.label, features: r.features, outputs: r.outputs }) + '\n';
  }
}

/** Writes `text`, waiting for `out` to drain when its buffer is full. */
async function write(out: Writable, text: string): Promise<void> {
  if (text !== '' && !out.write(text)) await once(out, 'drain');
}

export async function exportCommand(name: string, o: ExportOptions): Promise<void> {
  if (o.format !== 'csv' && o.format !== 'jsonl') throw new UsageError(`--format must be csv or jsonl (got "${o.format}")`);
  const sinceMs = parseSince(o.since);
  const out: Writable = o.output ? createWriteStream(o.output) : process.stdout;
  const writer = new RowWriter(o.format);
  const api = new MonitorApi(o.monitor);
  let rows = 0;
  const tty = process.stderr.isTTY === true;
  try {
    await remote('monitor', o.monitor, async () => {
      for await (const chunk of api.exportOutcomes({ name, version: o.version ?? 0, sinceMs })) {
        await write(out, writer.chunk(chunk));
        rows += chunk.rows.length;
        if (tty && o.output) progress(`\rexporting ${name}: ${rows} rows`);
      }
    });
  } finally {
    api.close();
    if (o.output) {
      out.end();
      await once(out, 'close');
    }
  }
  if (o.output) progress(`${tty ? '\n' : ''}${rows} joined rows of ${name} written to ${o.output}\n`);
}
