/**
 * The experiment RPCs of infermesh.v1.Monitor: CompareVersions (two versions
 * with intervals, differences, p-values and sample sizes; comparison.ts) and
 * ExportOutcomes (the joined rows, streamed with flow control for
 * retraining). Validation first (INVALID_ARGUMENT naming the field), then
 * the start-up replay, then the answer.
 */
import type { ServerWritableStream } from '@grpc/grpc-js';
import { checkName } from '../../libs/bus/index.js';
import { InvalidArgumentError, NotFoundError, toStatus } from '../../libs/errors/index.js';
import { unary } from '../../libs/grpc/index.js';
import type {
  CompareVersionsRequest,
  CompareVersionsResponse,
  CostModel,
  ExportOutcomesChunk,
  ExportOutcomesRequest,
  ExportRow,
  MonitorServer,
} from '../../libs/proto/index.js';
import { COMPARE_DEFAULTS } from './comparison.js';
import { checkThreshold, type JoinedRow, type OutcomeStore, type RowFilter } from './outcomes.js';

/** Rows per ExportOutcomes message. */
export const EXPORT_CHUNK_ROWS = 1000;
/** Most bootstrap resamples a comparison may ask for. */
export const MAX_RESAMPLES = 10_000;
/** Longest segment value (the routers cut longer ones). */
const MAX_SEGMENT_CHARS = 64;

/**
 * A cost model from a request: unset (or all zero) = none; each part must
 * be finite and ≥ 0 (INVALID_ARGUMENT naming `<field>.cost_fp` …).
 */
export function checkCost(c: CostModel | undefined, field = 'cost'): CostModel | undefined {
  if (!c) return undefined;
  for (const [part, v] of [['cost_fp', c.costFp], ['cost_fn', c.costFn], ['value_tp', c.valueTp]] as const) {
    if (!(Number.isFinite(v) && v >= 0)) throw new InvalidArgumentError(`${field}.${part}`, 'must be a finite number ≥ 0');
  }
  return c.costFp === 0 && c.costFn === 0 && c.valueTp === 0 ? undefined : c;
}

function inRange(v: number, field: string, lo: number, hi: number, dflt: number): number {
  if (v === 0) return dflt;
  if (!(v >= lo && v <= hi)) throw new InvalidArgumentError(field, `must be between ${lo} and ${hi} (0 = ${dflt})`);
  return v;
}

/** CompareVersions (see the proto for codes). */
export async function compareVersionsRpc(store: OutcomeStore, req: CompareVersionsRequest, signal: AbortSignal): Promise<CompareVersionsResponse> {
  const name = checkName(req.name, 'name');
  if (!req.versionA) throw new InvalidArgumentError('version_a', 'must be a version number ≥ 1');
  if (!req.versionB) throw new InvalidArgumentError('version_b', 'must be a version number ≥ 1');
  if (req.versionA === req.versionB) throw new InvalidArgumentError('version_b', 'must differ from version_a');
  const threshold = checkThreshold(req.threshold);
  const confidence = inRange(req.confidence, 'confidence', 0.5, 0.999, COMPARE_DEFAULTS.confidence);
  const power = inRange(req.power, 'power', 0.5, 0.999, COMPARE_DEFAULTS.power);
  if (!(req.minDifference >= 0 && Number.isFinite(req.minDifference))) throw new InvalidArgumentError('min_difference', 'must be a finite number ≥ 0 (0 = 0.05)');
  const minDifference = req.minDifference || COMPARE_DEFAULTS.minDifference;
  if (req.resamples > MAX_RESAMPLES) throw new InvalidArgumentError('resamples', `must be at most ${MAX_RESAMPLES} (0 = ${COMPARE_DEFAULTS.resamples})`);
  const resamples = req.resamples || COMPARE_DEFAULTS.resamples;
  const seed = req.seed || COMPARE_DEFAULTS.seed;
  if (req.segment.length > MAX_SEGMENT_CHARS) throw new InvalidArgumentError('segment', `must be at most ${MAX_SEGMENT_CHARS} characters`);
  const cost = checkCost(req.cost);
  await store.whenReady(signal);
  if (!store.hasSamples(name)) throw new NotFoundError(`model ${name} has no kept samples with a request id (send requests with an id; see README, Ground truth)`);
  const o = { threshold, confidence, minDifference, power, resamples, seed, cost, segment: req.segment === '' ? undefined : req.segment };
  const r = store.compare(name, req.versionA, req.versionB, o);
  return {
    name, kind: r.kind, confidence, threshold, minDifference, power, resamples, seed, segment: req.segment,
    cost: cost ?? store.settings.cost(name), a: r.a, b: r.b, differences: r.differences,
  };
}

/** What ExportOutcomes reads: the outcome store, and column names for a version's summaries. */
export interface ExportSource {
  whenReady(signal?: AbortSignal): Promise<void>;
  hasSamples(name: string): boolean;
  joinedRows(name: string, filter: RowFilter): Iterable<JoinedRow>;
  widths(name: string, filter: RowFilter): { inputs: number; outputs: number };
  segmentBy(name: string): string;
  /** Names of the first `count` input (or output) columns of `name`'s newest version. */
  columnNames(name: string, kind: 'inputs' | 'outputs', count: number): string[];
}

/**
 * Streams the joined rows in chunks of EXPORT_CHUNK_ROWS, waiting for the
 * transport to drain before the next (so the rows are never copied all at
 * once), and ends the stream; the first chunk carries the column names.
 */
export async function streamExport(source: ExportSource, call: ServerWritableStream<ExportOutcomesRequest, ExportOutcomesChunk>): Promise<void> {
  const req = call.request;
  const name = checkName(req.name, 'name');
  if (req.sinceMs < 0) throw new InvalidArgumentError('since_ms', 'must be ≥ 0 (0 = every kept row)');
  let gone = false;
  let wake: (() => void) | null = null;
  const stop = (): void => {
    gone = true;
    wake?.();
  };
  call.once('cancelled', stop);
  call.once('close', stop);
  const ac = new AbortController();
  call.once('cancelled', () => ac.abort());
  await source.whenReady(ac.signal);
  if (!source.hasSamples(name)) throw new NotFoundError(`model ${name} has no kept samples with a request id (send requests with an id; see README, Ground truth)`);
  const filter: RowFilter = { version: req.version, sinceMs: req.sinceMs };
  const w = source.widths(name, filter);
  let chunk: ExportOutcomesChunk = {
    rows: [], featureNames: source.columnNames(name, 'inputs', w.inputs), outputNames: source.columnNames(name, 'outputs', w.outputs), segmentBy: source.segmentBy(name),
  };
  const send = async (): Promise<void> => {
    if (call.write(chunk)) return;
    await new Promise<void>((resolve) => {
      wake = resolve;
      call.once('drain', resolve);
    });
    wake = null;
  };
  for (const r of source.joinedRows(name, filter)) {
    if (gone) return;
    const row: ExportRow = { requestId: r.requestId, atMs: r.at, version: r.version, segment: r.segment, label: r.label, features: Array.from(r.features), outputs: Array.from(r.outputs) };
    chunk.rows.push(row);
    if (chunk.rows.length >= EXPORT_CHUNK_ROWS) {
      await send();
      chunk = { rows: [], featureNames: [], outputNames: [], segmentBy: '' };
    }
  }
  if (gone) return;
  if (chunk.rows.length > 0 || chunk.featureNames.length > 0 || chunk.segmentBy !== '') await send();
  call.end();
}

/** The CompareVersions and ExportOutcomes handlers. */
export function experimentHandlers(store: OutcomeStore, source: ExportSource): Pick<MonitorServer, 'compareVersions' | 'exportOutcomes'> {
  return {
    compareVersions: unary<CompareVersionsRequest, CompareVersionsResponse>((req, ctx) => compareVersionsRpc(store, req, ctx.signal)),
    exportOutcomes: (call) => {
      streamExport(source, call).catch((err: unknown) => call.emit('error', toStatus(err)));
    },
  };
}
