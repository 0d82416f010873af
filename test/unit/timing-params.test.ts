import { describe, expect, it } from 'vitest';
import { oip } from '../../libs/proto/index.js';
import { appendTiming } from '../../services/router/timing-params.js';

describe('appendTiming', () => {
  it('adds the breakdown as parameters a protobuf decoder merges into the response', () => {
    const base = oip.ModelInferResponse.encode(
      oip.ModelInferResponse.fromPartial({ modelName: 'm', modelVersion: '3', id: 'x', parameters: { other: { parameterChoice: { $case: 'boolParam', value: true } } }, rawOutputContents: [new Uint8Array([1, 2, 3])] }),
    ).finish();
    const trace = '0123456789abcdef0123456789abcdef';
    const r = oip.ModelInferResponse.decode(appendTiming(base, [1234567, 30, 0, 200, 12_000_000_000], trace));
    expect(r.id).toBe('x');
    expect(r.modelVersion).toBe('3');
    expect(Array.from(r.rawOutputContents[0]!)).toEqual([1, 2, 3]);
    const v = (k: string) => (r.parameters[k]!.parameterChoice as { value: unknown }).value;
    expect(v('other')).toBe(true);
    expect(v('infermesh.total_us')).toBe(1234567);
    expect(v('infermesh.router_us')).toBe(30);
    expect(v('infermesh.network_us')).toBe(0);
    expect(v('infermesh.queue_us')).toBe(200);
    expect(v('infermesh.compute_us')).toBe(12_000_000_000);
    expect(v('infermesh.trace_id')).toBe(trace);
    // Negative differences (clock jitter) are written as 0; no trace id → no entry.
    const r2 = oip.ModelInferResponse.decode(appendTiming(base, [5, -3, -1, 0, 0], ''));
    expect((r2.parameters['infermesh.router_us']!.parameterChoice as { value: number }).value).toBe(0);
    expect(r2.parameters['infermesh.trace_id']).toBeUndefined();
  });
});
