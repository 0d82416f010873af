/**
 * Golden probes: each model's stored request (KV `<model>.probe`, set with
 * `infermesh models probe`) is sent through a router every `interval_ms`; the
 * first output must match the expected values within the tolerance, and
 * arrive within `max_latency_ms` when one is set. The last result per model
 * feeds the `probe` alert rule and the infermesh_probe_* metrics.
 *
 * Each probe carries the `x-infermesh-probe` metadata key: the router counts
 * it apart from traffic (SampleBatch.probes), so probes never enter drift
 * windows, evaluation or the latency and error windows.
 */
import { Metadata, type ServiceError } from '@grpc/grpc-js';
import { decodeOutputs, type InferenceApi } from '../../libs/client/index.js';
import { codeName } from '../../libs/errors/index.js';
import type { Logger } from '../../libs/log/index.js';
import { ProbeRecord, oip } from '../../libs/proto/index.js';
import type { Observation } from './alerts.js';
import type { MonitorMetrics } from './metrics.js';

/** The outcome of a model's latest probe. */
export interface ProbeResult {
  name: string;
  version: number;
  ok: boolean;
  latencyMs: number;
  /** Why it failed: wrong answer, slow, or the status the router answered. */
  reason: string;
  atMs: number;
}

interface Running {
  probe: ProbeRecord;
  request: oip.ModelInferRequest;
  timer: NodeJS.Timeout;
  busy: boolean;
}

/** The metadata key that marks a request as a golden probe (read by the router's sample recorder). */
export const PROBE_HEADER = 'x-infermesh-probe';

/** Deadline of one probe call when the probe sets no latency bound. */
const DEFAULT_PROBE_DEADLINE_MS = 5_000;

export class Probes {
  private readonly running = new Map<string, Running>();
  private readonly last = new Map<string, ProbeResult>();

  constructor(
    private readonly router: InferenceApi,
    private readonly metrics: MonitorMetrics,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  /** A probe record was stored (value) or removed (null) for `name`. */
  set(name: string, value: Uint8Array | null): void {
    const cur = this.running.get(name);
    if (cur) {
      clearInterval(cur.timer);
      this.running.delete(name);
    }
    if (!value) {
      this.last.delete(name);
      this.metrics.probeUp.remove({ model: name });
      return;
    }
    let probe: ProbeRecord;
    let request: oip.ModelInferRequest;
    try {
      probe = ProbeRecord.decode(value);
      request = oip.ModelInferRequest.decode(probe.request);
    } catch (err) {
      this.log.warn({ model: name, err: String(err) }, 'undecodable probe record ignored');
      return;
    }
    const r: Running = { probe, request, busy: false, timer: setInterval(() => void this.run(name, r), Math.max(1000, probe.intervalMs)) };
    r.timer.unref();
    this.running.set(name, r);
    void this.run(name, r);
  }

  /** The latest result of every probe. */
  results(): ProbeResult[] {
    return [...this.last.values()];
  }

  /**
   * One observation per probed model for the alert engine: bad while the
   * latest probe failed; pending while a probe has not answered yet (after a
   * restart, a restored probe alert waits for its first answer).
   */
  observations(): Observation[] {
    const out: Observation[] = [];
    for (const name of this.running.keys()) {
      if (!this.last.has(name)) out.push({ name, version: 0, rule: 'probe', subject: '', bad: false, pending: true, value: 0, threshold: 0, message: '' });
    }
    return out.concat(this.results().map((r) => {
      const maxMs = this.running.get(r.name)?.probe.maxLatencyMs ?? 0;
      return {
        name: r.name,
        // The version that answered (the alias's target), so the id reads probe:<model>:v<version>.
        version: r.version,
        rule: 'probe',
        subject: '',
        bad: !r.ok,
        value: r.latencyMs,
        threshold: maxMs,
        message: r.ok ? `golden probe of ${r.name} answered correctly in ${r.latencyMs.toFixed(1)} ms` : `golden probe of ${r.name} failed: ${r.reason}`,
      };
    }));
  }

  close(): void {
    for (const r of this.running.values()) clearInterval(r.timer);
    this.running.clear();
  }

  private async run(name: string, r: Running): Promise<void> {
    if (r.busy) return;
    r.busy = true;
    const { probe } = r;
    const t0 = performance.now();
    let result: ProbeResult;
    try {
      const timeoutMs = probe.maxLatencyMs > 0 ? Math.max(probe.maxLatencyMs * 4, 1000) : DEFAULT_PROBE_DEADLINE_MS;
      const metadata = new Metadata();
      metadata.set(PROBE_HEADER, '1');
      const res = await this.router.inferRaw(r.request, { timeoutMs, metadata });
      const latencyMs = performance.now() - t0;
      const version = Number(res.modelVersion) || 0;
      const wrong = compare(decodeOutputs(res)[0]?.data, probe.expected, probe.tolerance);
      const slow = probe.maxLatencyMs > 0 && latencyMs > probe.maxLatencyMs ? `slow: ${latencyMs.toFixed(1)} ms > ${probe.maxLatencyMs} ms` : '';
      result = { name, version, ok: !wrong && !slow, latencyMs, reason: wrong || slow, atMs: this.now() };
    } catch (err) {
      const code = (err as ServiceError).code;
      // No answer, no version: the one that answered last (so the alert keeps its id).
      result = { name, version: this.last.get(name)?.version ?? 0, ok: false, latencyMs: performance.now() - t0, reason: `router answered ${typeof code === 'number' ? codeName(code) : 'no status'}`, atMs: this.now() };
    } finally {
      r.busy = false;
    }
    if (this.running.get(name) !== r) return; // removed or replaced meanwhile
    this.last.set(name, result);
    this.metrics.probeUp.set({ model: name }, result.ok ? 1 : 0);
    this.metrics.probeDuration.set({ model: name }, result.latencyMs / 1000);
    this.metrics.probes.inc({ model: name, result: result.ok ? 'ok' : result.reason.startsWith('slow') ? 'slow' : result.reason.startsWith('wrong') ? 'wrong' : 'error' });
  }
}

/** Empty when `got` matches `expected` within `tolerance`; otherwise why not (no payload beyond the index). */
function compare(got: ArrayLike<number | bigint | boolean> | undefined, expected: number[], tolerance: number): string {
  if (!got) return 'wrong answer: no output';
  if (got.length !== expected.length) return `wrong answer: ${got.length} values, expected ${expected.length}`;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(Number(got[i]) - expected[i]!);
    if (!(d <= tolerance)) return `wrong answer: output element ${i} differs by ${d.toPrecision(3)} (tolerance ${tolerance})`;
  }
  return '';
}
