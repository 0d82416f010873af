import { describe, expect, it } from 'vitest';
import { buildInferRequest } from '../../libs/client/index.js';
import { InvalidArgumentError } from '../../libs/errors/index.js';
import { oip } from '../../libs/proto/index.js';
import { scanRequestId, scanRouteFields } from '../../services/router/request-scan.js';

const enc = (r: oip.ModelInferRequest) => Buffer.from(oip.ModelInferRequest.encode(r).finish());
const fields = () => ({ modelName: '', modelVersion: '', timeoutMicros: -1 });

describe('scanRouteFields', () => {
  it('reads model_name and model_version wherever they sit, skipping tensors', () => {
    const req = buildInferRequest('fraud', [{ name: 'x', datatype: 'FP32', shape: [2, 2], data: [1, 2, 3, 4] }], { version: '12', id: 'abc' });
    req.parameters = { k: { parameterChoice: { $case: 'int64Param', value: 5 } } };
    expect(scanRouteFields(enc(req), fields())).toEqual({ modelName: 'fraud', modelVersion: '12', timeoutMicros: -1 });
    // Fields in reverse order (legal protobuf): tensors first, names last.
    const tail = enc(oip.ModelInferRequest.fromPartial({ modelName: 'm', modelVersion: 'v' }));
    const head = enc(oip.ModelInferRequest.fromPartial({ rawInputContents: [new Uint8Array(300)], id: 'z' }));
    expect(scanRouteFields(Buffer.concat([head, tail]), fields())).toEqual({ modelName: 'm', modelVersion: 'v', timeoutMicros: -1 });
  });

  it('an empty message has no name', () => {
    expect(scanRouteFields(Buffer.alloc(0), fields())).toEqual({ modelName: '', modelVersion: '', timeoutMicros: -1 });
  });

  it('rejects truncated lengths, bad wire types and runaway varints', () => {
    for (const bad of [[0x0a, 0x05, 0x61], [0x0b], [0x0f], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff], [0x08, 0x80], [0x00]]) {
      expect(() => scanRouteFields(Buffer.from(bad), fields()), JSON.stringify(bad)).toThrow(InvalidArgumentError);
    }
  });

  it("reads Triton's timeout parameter (int64 or uint64 µs) and refuses any other kind there, naming it", () => {
    const withParam = (p: oip.InferParameter) => enc(oip.ModelInferRequest.fromPartial({ modelName: 'm', id: 'q7', parameters: { other: { parameterChoice: { $case: 'stringParam', value: 'x' } }, timeout: p } }));
    expect(scanRouteFields(withParam({ parameterChoice: { $case: 'int64Param', value: 250_000 } }), fields()).timeoutMicros).toBe(250_000);
    expect(scanRouteFields(withParam({ parameterChoice: { $case: 'uint64Param', value: 7 } }), fields()).timeoutMicros).toBe(7);
    for (const bad of [{ $case: 'stringParam', value: '5' }, { $case: 'int64Param', value: -1 }, { $case: 'doubleParam', value: 1.5 }] as const) {
      let err: unknown;
      try {
        scanRouteFields(withParam({ parameterChoice: bad }), fields());
      } catch (e) {
        err = e;
      }
      expect((err as InvalidArgumentError).field, bad.$case).toBe('parameters.timeout');
    }
    expect(scanRequestId(withParam({ parameterChoice: { $case: 'int64Param', value: 1 } }))).toBe('q7');
    expect(scanRequestId(Buffer.from([0xff]))).toBe('');
  });
});
