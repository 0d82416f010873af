/**
 * `infermesh models probe NAME --input JSON [--expect JSON]`: stores a golden
 * probe that the monitor sends through the router every interval. Without
 * --expect, the request is sent once now and today's answer becomes the
 * expected one (a snapshot, printed so it can be checked).
 */
import { InferenceApi, RegistryApi, buildInferRequest, type InputTensor } from '../../libs/client/index.js';
import { oip } from '../../libs/proto/index.js';
import type { GlobalOptions } from './addresses.js';
import { inputText, parseInput, tensorsFromObject } from './infer-input.js';
import { UsageError, printJson, printText, remote } from './output.js';

export interface ProbeCommandOptions extends GlobalOptions {
  input?: string;
  /** JSON array of the first output's expected values (flattened), or @file. */
  expect?: string;
  tolerance: number;
  everyS: number;
  maxLatencyMs: number;
  clear?: boolean;
}

export async function probeCommand(name: string, o: ProbeCommandOptions): Promise<void> {
  const registry = new RegistryApi(o.registry);
  const router = new InferenceApi(o.router);
  try {
    if (o.clear) {
      await remote('registry', o.registry, () => registry.setProbe({ name }, true));
      if (o.json) printJson({ model: name, probe: null });
      else printText(`probe of ${name} removed`);
      return;
    }
    if (!o.input) throw new UsageError('--input is required (or --clear)');
    const parsed = parseInput(await inputText(o.input));
    let inputs: InputTensor[];
    if (parsed.form === 'tensors') inputs = parsed.tensors;
    else {
      const meta = await remote('router', o.router, () => router.metadata(name));
      inputs = tensorsFromObject(parsed.values, meta.inputs);
    }
    const request = buildInferRequest(name, inputs);
    let expected: number[];
    if (o.expect !== undefined) expected = parseExpected(await inputText(o.expect));
    else {
      const { outputs } = await remote('router', o.router, () => router.infer(name, inputs));
      expected = (outputs[0]?.data ?? []).map(Number);
    }
    const probe = await remote('registry', o.registry, () =>
      registry.setProbe({
        name,
        request: oip.ModelInferRequest.encode(request).finish(),
        expected,
        tolerance: o.tolerance,
        intervalMs: Math.round(o.everyS * 1000),
        maxLatencyMs: o.maxLatencyMs,
      }),
    );
    if (o.json) printJson({ model: name, expected: probe.expected, tolerance: probe.tolerance, interval_ms: probe.intervalMs, max_latency_ms: probe.maxLatencyMs });
    else printText(`probe of ${name} stored: every ${probe.intervalMs / 1000} s, expecting [${probe.expected.join(', ')}] ± ${probe.tolerance}${probe.maxLatencyMs ? ` within ${probe.maxLatencyMs} ms` : ''}`);
  } finally {
    registry.close();
    router.close();
  }
}

function parseExpected(text: string): number[] {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new UsageError('--expect: not JSON (expected an array of numbers)');
  }
  const flat = Array.isArray(v) ? (v.flat(Infinity) as unknown[]) : [v];
  if (flat.length === 0 || !flat.every((x) => typeof x === 'number' && Number.isFinite(x))) throw new UsageError('--expect: expected a non-empty array of finite numbers');
  return flat as number[];
}
