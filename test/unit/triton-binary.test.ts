/**
 * The HTTP binary tensor extension's codec: a tensor sent as JSON and the
 * same tensor sent as binary data become byte-identical gRPC requests (FP32
 * and BYTES); BYTES elements are 4-byte little-endian lengths and bytes; a
 * compressed body never inflates past its cap.
 */
import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { rawToTyped, datatype } from '../../libs/tensor/index.js';
import { oip } from '../../libs/proto/index.js';
import { HttpError } from '../../services/router/rest-json.js';
import { oipInferRequest } from '../../services/router/rest-oip.js';
import { binaryWants, decodeBytesElements, encodeBytesElements, inflateBody } from '../../services/router/triton-binary.js';

const ref = { name: 'm', selector: '' };

describe('binary tensor extension codec', () => {
  it('BYTES elements: 4-byte little-endian length, then the bytes; anything but whole elements is refused', () => {
    const b = encodeBytesElements(['a', 'bc', '', 'é']);
    expect([...b]).toEqual([1, 0, 0, 0, 97, 2, 0, 0, 0, 98, 99, 0, 0, 0, 0, 2, 0, 0, 0, 0xc3, 0xa9]);
    expect(decodeBytesElements(b)!.map((x) => x.toString('utf8'))).toEqual(['a', 'bc', '', 'é']);
    expect(decodeBytesElements(b.subarray(0, b.length - 1))).toBeNull();
    expect(decodeBytesElements(b.subarray(0, 3))).toBeNull();
  });

  it('FP32 and BYTES as JSON or as binary data make the same gRPC request, byte for byte', () => {
    const values = [0.5, -1.25, 3, 1e-7];
    const raw = new Uint8Array(new Float32Array(values).buffer);
    const strings = ['x', 'yz'];
    const packed = encodeBytesElements(strings);
    const json = oipInferRequest(ref, {
      inputs: [
        { name: 'f', datatype: 'FP32', shape: [2, 2], data: [[0.5, -1.25], [3, 1e-7]] },
        { name: 's', datatype: 'BYTES', shape: [2], data: strings },
      ],
    });
    const binary = oipInferRequest(
      ref,
      {
        inputs: [
          { name: 'f', datatype: 'FP32', shape: [2, 2], parameters: { binary_data_size: raw.byteLength } },
          { name: 's', datatype: 'BYTES', shape: [2], parameters: { binary_data_size: packed.byteLength } },
        ],
      },
      Buffer.concat([raw, packed]),
    );
    expect(Buffer.compare(json, binary)).toBe(0);
    const msg = oip.ModelInferRequest.decode(binary);
    expect(Array.from(rawToTyped(datatype('FP32')!, msg.rawInputContents[0]!) as Float32Array)).toEqual(Array.from(new Float32Array(values)));
    expect(decodeBytesElements(msg.rawInputContents[1]!)!.map(String)).toEqual(strings);
  });

  it('binary sizes that do not fit the shape or the body are INVALID_ARGUMENT naming the field', () => {
    const body = (size: number) => ({ inputs: [{ name: 'f', datatype: 'FP32', shape: [2], parameters: { binary_data_size: size } }] });
    expect(() => oipInferRequest(ref, body(4), Buffer.alloc(4))).toThrow(/^inputs\[0\]\.parameters\.binary_data_size: 4 bytes; shape \[2\] of FP32 needs 8/);
    expect(() => oipInferRequest(ref, body(8), Buffer.alloc(4))).toThrow(/run past/);
    expect(() => oipInferRequest(ref, body(8), Buffer.alloc(12))).toThrow(/^Inference-Header-Content-Length: 4 bytes/);
    expect(() => oipInferRequest(ref, body(8), null)).toThrow(/needs the Inference-Header-Content-Length header/);
    expect(() => oipInferRequest(ref, { inputs: [{ name: 's', datatype: 'BYTES', shape: [2], data: ['a', 1] }] })).toThrow(/^inputs\[0\]\.data: BYTES values must be strings/);
  });

  it('binary outputs: per output, else the request-wide default', () => {
    const w = binaryWants({ parameters: { binary_data_output: true }, outputs: [{ name: 'a', parameters: { binary_data: false } }, { name: 'b' }] });
    expect(w.all).toBe(true);
    expect([...w.byName]).toEqual([['a', false]]);
    expect(binaryWants({}).all).toBe(false);
    expect(() => binaryWants({ parameters: { binary_data_output: 'yes' } })).toThrow(/^parameters\.binary_data_output/);
  });

  it('a compressed body inflates on the thread pool, never past its cap (413)', async () => {
    const text = Buffer.from('{"a":1}');
    expect((await inflateBody(zlib.gzipSync(text), 'gzip', 100)).toString()).toBe('{"a":1}');
    expect((await inflateBody(zlib.deflateSync(text), 'deflate', 100)).toString()).toBe('{"a":1}');
    const bomb = zlib.gzipSync(Buffer.alloc(1 << 20));
    await expect(inflateBody(bomb, 'gzip', 64 * 1024)).rejects.toSatisfy((e: unknown) => e instanceof HttpError && e.status === 413);
    await expect(inflateBody(text, 'br', 100)).rejects.toSatisfy((e: unknown) => e instanceof HttpError && e.status === 415);
  });
});
