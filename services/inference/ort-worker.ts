/**
 * A worker thread that owns ONNX Runtime sessions. A run blocks the thread
 * that calls it (onnxruntime #19611), so models that are not tiny run here,
 * never on the event loop that serves gRPC. A run arrives and its result
 * leaves as one transferred ArrayBuffer (see wire.ts).
 */
import { parentPort } from 'node:worker_threads';
import { OrtSession } from './ort-session.js';
import { decodeRun, encodeFailure, encodeResult, type FromWorker, type ToWorker } from './wire.js';

/** Sessions by the pool's slot number. */
const sessions: (OrtSession | undefined)[] = [];
const port = parentPort!;

function reply(msg: FromWorker): void {
  if (msg instanceof ArrayBuffer) port.postMessage(msg, [msg]);
  else port.postMessage(msg);
}

port.on('message', (msg: ToWorker) => {
  if (msg instanceof ArrayBuffer) return reply(run(msg));
  try {
    switch (msg.op) {
      case 'load': {
        const s = new OrtSession(msg.bytes, { intraOpThreads: msg.intraOpThreads, provider: msg.provider });
        sessions[msg.slot]?.release();
        sessions[msg.slot] = s;
        return reply({ op: 'loaded', id: msg.id });
      }
      case 'unload': {
        sessions[msg.slot]?.release();
        sessions[msg.slot] = undefined;
        return reply({ op: 'unloaded', id: msg.id });
      }
    }
  } catch (err) {
    reply({ op: 'error', id: msg.id, message: String((err as Error)?.message ?? err) });
  }
});

function run(buf: ArrayBuffer): ArrayBuffer {
  try {
    const { slot, inputs } = decodeRun(buf);
    const s = sessions[slot];
    if (!s) return encodeFailure('model version not loaded');
    const t0 = performance.now();
    const outputs = s.run(inputs);
    return encodeResult(outputs, Math.round((performance.now() - t0) * 1000));
  } catch (err) {
    return encodeFailure(String((err as Error)?.message ?? err));
  }
}
