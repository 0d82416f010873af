/**
 * The hand-coded Runtime frames (libs/wire/link-frames.ts: the router's
 * RequestFrame writer and ResponseFrame reader, the replica's reader and
 * writer) and the replica's ModelInferResponse (infer-response.ts) against
 * the generated codec: the same items out of every frame the generated
 * encoder writes, the same bytes for every frame written, and
 * MalformedFrame — never another error, never a crash — for bytes that are
 * not a frame.
 */
import { describe, expect, it } from 'vitest';
import { GRPC_PREFIX_BYTES } from '../../libs/grpc/index.js';
import { oip, RequestFrame, ResponseFrame, type RequestItem, type ResponseItem } from '../../libs/proto/index.js';
import { encodeInferResponse } from '../../services/inference/infer-response.js';
import { decodeRequestFrame, decodeResponseFrame, encodeRequestFrame, encodeResponseFrame, MalformedFrame } from '../../libs/wire/index.js';

const item = (o: Partial<RequestItem>): RequestItem => ({ id: 1, model: '', version: 0, timeoutMicros: 0, traceparent: '', request: new Uint8Array(0), priority: 0, cancel: false, ...o });
const REQUESTS: RequestItem[][] = [
  [],
  [item({})],
  [item({ id: 7, model: 'fraud', version: 3, timeoutMicros: 30_000_000, traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', request: Uint8Array.from([1, 2, 3, 0, 255]), priority: 1 })],
  [item({ id: 2 ** 40 + 5, model: 'm-ü-模型', version: 2 ** 33, timeoutMicros: 2 ** 32 - 1, priority: 255 }), item({ id: 9, cancel: true }), item({ id: 10, request: new Uint8Array(70_000).fill(7) })],
];

const plain = (items: RequestItem[]) => items.map((i) => ({ ...i, request: Array.from(i.request) }));

describe('hand-coded Runtime frames', () => {
  it('reads every RequestFrame as the generated decoder does (generated encoder, the router\'s hand encoder, unknown fields skipped)', () => {
    for (const items of REQUESTS) {
      const generated = Buffer.from(RequestFrame.encode({ items }).finish());
      expect(plain(decodeRequestFrame(generated))).toEqual(plain(RequestFrame.decode(generated).items));
      expect(plain(decodeRequestFrame(generated))).toEqual(plain(items));
      const router = encodeRequestFrame(items).subarray(GRPC_PREFIX_BYTES);
      expect(plain(decodeRequestFrame(router))).toEqual(plain(items));
    }
    // Fields this version does not know (varint 15, fixed64 16, bytes 17, fixed32 18) inside an item and in the frame.
    const unknown = Buffer.from([0x78, 0x05, 0x81, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0x8a, 0x01, 0x02, 0xaa, 0xbb, 0x95, 0x01, 1, 2, 3, 4]);
    const known = Buffer.from(RequestFrame.encode({ items: [item({ id: 3, model: 'x' })] }).finish());
    const inner = Buffer.concat([known.subarray(2), unknown]);
    const frame = Buffer.concat([Buffer.from([0x0a, inner.length]), inner, unknown]);
    expect(plain(decodeRequestFrame(frame))).toEqual(plain(RequestFrame.decode(frame).items));
    expect(decodeRequestFrame(frame)[0]!.model).toBe('x');
  });

  it('a request\'s bytes are a view of the frame, not a copy', () => {
    const frame = Buffer.from(RequestFrame.encode({ items: REQUESTS[2]! }).finish());
    expect(decodeRequestFrame(frame)[0]!.request.buffer).toBe(frame.buffer);
  });

  const r = (o: Partial<ResponseItem>): ResponseItem => ({ id: 1, code: 0, message: '', response: new Uint8Array(0), queueMicros: 0, computeMicros: 0, ...o });
  const RESPONSES: ResponseItem[][] = [
    [],
    [r({})],
    [r({ id: 2 ** 45, response: new Uint8Array(300).fill(9), queueMicros: 12, computeMicros: 2 ** 32 - 1 })],
    [r({ id: 5, code: 3, message: 'inputs[0].shape: input "ü" has shape [1,2], model expects [1,4] — 模型' }), r({ id: 6, code: 14, message: 'replica is draining' }), r({ id: 7, response: Uint8Array.from([0]) })],
  ];
  const plainAnswers = (items: ResponseItem[]) => items.map((i) => ({ ...i, response: Array.from(i.response) }));

  it('writes every ResponseFrame byte for byte as the generated encoder, after a gRPC message prefix', () => {
    for (const items of RESPONSES) {
      const out = encodeResponseFrame(items);
      expect(out[0]).toBe(0);
      expect(out.readUInt32BE(1)).toBe(out.length - GRPC_PREFIX_BYTES);
      expect(Buffer.from(out.subarray(GRPC_PREFIX_BYTES)).equals(Buffer.from(ResponseFrame.encode({ items }).finish()))).toBe(true);
    }
  });

  it('the router reads every ResponseFrame as the generated decoder does (the replica\'s hand encoder too), answers as views of the frame, unknown fields skipped', () => {
    for (const items of RESPONSES) {
      const generated = Buffer.from(ResponseFrame.encode({ items }).finish());
      expect(plainAnswers(decodeResponseFrame(generated))).toEqual(plainAnswers(ResponseFrame.decode(generated).items));
      expect(plainAnswers(decodeResponseFrame(encodeResponseFrame(items).subarray(GRPC_PREFIX_BYTES)))).toEqual(plainAnswers(items));
    }
    const frame = Buffer.from(ResponseFrame.encode({ items: RESPONSES[2]! }).finish());
    expect(decodeResponseFrame(frame)[0]!.response.buffer).toBe(frame.buffer);
    const unknown = Buffer.from([0x78, 0x05, 0x8a, 0x01, 0x02, 0xaa, 0xbb]);
    const known = Buffer.from(ResponseFrame.encode({ items: [r({ id: 4, code: 5, message: 'm' })] }).finish());
    const inner = Buffer.concat([known.subarray(2), unknown]);
    const withUnknown = Buffer.concat([Buffer.from([0x0a, inner.length]), inner, unknown]);
    expect(plainAnswers(decodeResponseFrame(withUnknown))).toEqual(plainAnswers(ResponseFrame.decode(withUnknown).items));
  });

  it('bytes that are not a ResponseFrame throw MalformedFrame and nothing else', () => {
    for (const b of [[0x0a, 0x05, 0x08], [0x0a, 0x02, 0x22, 0x09], [0x0b, 0x00], [0x00]]) expect(() => decodeResponseFrame(Buffer.from(b)), JSON.stringify(b)).toThrow(MalformedFrame);
    let seed = 7;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) & 0xff;
    for (let n = 0; n < 2000; n++) {
      const b = Buffer.from(Array.from({ length: 1 + (n % 40) }, next));
      try {
        decodeResponseFrame(b);
      } catch (err) {
        expect(err).toBeInstanceOf(MalformedFrame);
      }
    }
  });

  it('bytes that are not a RequestFrame throw MalformedFrame and nothing else', () => {
    const bad = [
      [0x0a, 0x05, 0x08], // item longer than the frame
      [0x0a, 0x03, 0x08, 0xff, 0xff], // varint running past its item
      [0x0a, 0x0b, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], // id beyond 2^53
      [0x0a, 0x02, 0x12, 0x09], // model longer than its item
      [0x0b, 0x00], // wire type 3 (group)
      [0x00], // field number 0
      [0x0a, 0x02, 0x0c, 0x00], // wire type 4 inside an item
    ];
    for (const b of bad) expect(() => decodeRequestFrame(Buffer.from(b)), JSON.stringify(b)).toThrow(MalformedFrame);
    // Random bytes: decoded or MalformedFrame, never another error.
    let seed = 42;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) & 0xff;
    for (let n = 0; n < 2000; n++) {
      const b = Buffer.from(Array.from({ length: 1 + (n % 40) }, next));
      try {
        decodeRequestFrame(b);
      } catch (err) {
        expect(err).toBeInstanceOf(MalformedFrame);
      }
    }
  });
});

describe('hand-coded ModelInferResponse', () => {
  it('writes the generated encoder\'s bytes: names, versions and ids (empty, non-ASCII), shapes (empty, zero, large dims), several outputs', () => {
    const t = (name: string, datatype: string, shape: number[]) => ({ name, datatype, shape, parameters: {}, contents: undefined });
    const cases: [string, string, string, Parameters<typeof encodeInferResponse>[3]][] = [
      ['fraud', '1', '', { outputs: [t('score', 'FP32', [1, 1])], raw: [Uint8Array.from([1, 2, 3, 4])] }],
      ['m-ü-模型', '12', 'req-ü', { outputs: [t('a', 'FP32', [2, 3]), t('b', 'INT64', []), t('', '', [0, 2 ** 40])], raw: [new Uint8Array(24).fill(5), new Uint8Array(8), new Uint8Array(0)] }],
      ['x', '', '', { outputs: [], raw: [] }],
      ['big', '3', 'i', { outputs: [t('y', 'FP32', [300, 1])], raw: [new Uint8Array(1200).fill(1)] }],
    ];
    for (const [name, version, id, a] of cases) {
      const generated = oip.ModelInferResponse.encode({ modelName: name, modelVersion: version, id, parameters: {}, outputs: a.outputs, rawOutputContents: a.raw }).finish();
      expect(Buffer.from(encodeInferResponse(name, version, id, a)).equals(Buffer.from(generated)), name).toBe(true);
    }
    // What it does not write by hand (output parameters, typed contents) goes through the generated encoder.
    const withParams = { outputs: [{ ...t('y', 'FP32', [1]), parameters: { k: { parameterChoice: { $case: 'int64Param' as const, value: 3 } } } }], raw: [new Uint8Array(4)] };
    const back = oip.ModelInferResponse.decode(encodeInferResponse('p', '1', '', withParams));
    expect(Object.keys(back.outputs[0]!.parameters)).toEqual(['k']);
  });
});
