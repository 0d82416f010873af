import { createHash } from 'node:crypto';
import type { oip } from '../../libs/proto/index.js';
import type { DecodedRequest } from './infer-request.js';

/** A model's answer to one input, without the request id. */
export interface CachedAnswer {
  outputs: oip.ModelInferResponse_InferOutputTensor[];
  raw: Uint8Array[];
}

/**
 * Opt-in per model version: identical inputs (same shapes, bytes and
 * requested outputs) get the cached outputs. LRU by insertion refresh.
 * Off by default: hashing every request only pays when inputs repeat.
 */
export class ResponseCache {
  private readonly map = new Map<string, CachedAnswer>();
  constructor(private readonly maxEntries: number) {}

  /** The cache key of a request (SHA-1 of shapes, bytes and requested outputs). */
  static key(req: DecodedRequest): string {
    const h = createHash('sha1');
    for (let k = 0; k < req.data.length; k++) {
      h.update(Int32Array.from(req.shapes[k]!));
      h.update(req.data[k]!);
    }
    h.update(Int32Array.from(req.outputs));
    return h.digest('base64');
  }

  get(key: string): CachedAnswer | undefined {
    const v = this.map.get(key);
    if (v) {
      this.map.delete(key);
      this.map.set(key, v);
    }
    return v;
  }

  set(key: string, answer: CachedAnswer): void {
    this.map.set(key, answer);
    if (this.map.size > this.maxEntries) this.map.delete(this.map.keys().next().value!);
  }
}
