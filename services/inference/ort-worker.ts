/**
 * A worker thread that owns ONNX Runtime sessions. session.run() blocks the
 * thread that calls it (onnxruntime #19611), so it runs here, never on the
 * event loop that serves gRPC. Inputs arrive and outputs leave as
 * transferred ArrayBuffers.
 */
import { parentPort } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import type { FromWorker, ToWorker, WireTensor } from './wire.js';

const sessions = new Map<string, ort.InferenceSession>();
const port = parentPort!;

function reply(msg: FromWorker, transfer: ArrayBuffer[] = []): void {
  port.postMessage(msg, transfer);
}

port.on('message', async (msg: ToWorker) => {
  try {
    switch (msg.op) {
      case 'load': {
        const s = await ort.InferenceSession.create(msg.bytes, {
          intraOpNumThreads: msg.intraOpThreads,
          interOpNumThreads: 1,
          executionMode: 'sequential',
          graphOptimizationLevel: 'all',
          executionProviders: [msg.provider],
        });
        await sessions.get(msg.key)?.release();
        sessions.set(msg.key, s);
        return reply({ op: 'loaded', id: msg.id });
      }
      case 'unload': {
        await sessions.get(msg.key)?.release();
        sessions.delete(msg.key);
        return reply({ op: 'unloaded', id: msg.id });
      }
      case 'run': {
        const s = sessions.get(msg.key);
        if (!s) return reply({ op: 'error', id: msg.id, message: 'model version not loaded' });
        const feeds: Record<string, ort.Tensor> = {};
        for (const f of msg.feeds) feeds[f.name] = new ort.Tensor(f.type, typedView(f), f.dims);
        const t0 = performance.now();
        const res = await s.run(feeds, msg.outputs);
        const computeMicros = Math.round((performance.now() - t0) * 1000);
        const outputs: WireTensor[] = [];
        const transfer: ArrayBuffer[] = [];
        for (const name of msg.outputs) {
          const t = res[name]!;
          const src = t.data as ArrayLike<unknown> & { buffer: ArrayBufferLike; byteOffset: number; byteLength: number };
          // Copy out of ORT-owned memory into a buffer we can transfer.
          const data = (src.buffer as ArrayBuffer).slice(src.byteOffset, src.byteOffset + src.byteLength);
          outputs.push({ name, type: t.type as WireTensor['type'], dims: [...t.dims], data });
          transfer.push(data);
          t.dispose();
        }
        return reply({ op: 'result', id: msg.id, outputs, computeMicros }, transfer);
      }
    }
  } catch (err) {
    reply({ op: 'error', id: msg.id, message: String((err as Error)?.message ?? err) });
  }
});

function typedView(f: WireTensor): ort.Tensor.DataType {
  switch (f.type) {
    case 'float32': return new Float32Array(f.data);
    case 'float64': return new Float64Array(f.data);
    case 'int32': return new Int32Array(f.data);
    case 'uint32': return new Uint32Array(f.data);
    case 'int64': return new BigInt64Array(f.data);
    case 'uint64': return new BigUint64Array(f.data);
    case 'int16': return new Int16Array(f.data);
    case 'uint16': case 'float16': return new Uint16Array(f.data);
    case 'int8': return new Int8Array(f.data);
    case 'uint8': case 'bool': return new Uint8Array(f.data);
  }
}
