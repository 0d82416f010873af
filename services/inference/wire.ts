import type { OrtType } from '../../libs/tensor/index.js';

/** A tensor as it crosses the thread boundary: its bytes travel as a transferable ArrayBuffer. */
export interface WireTensor {
  name: string;
  type: OrtType;
  dims: number[];
  data: ArrayBuffer;
}

export type ToWorker =
  | { op: 'load'; id: number; key: string; bytes: Uint8Array; intraOpThreads: number; provider: string }
  | { op: 'unload'; id: number; key: string }
  | { op: 'run'; id: number; key: string; feeds: WireTensor[]; outputs: string[] };

export type FromWorker =
  | { op: 'loaded'; id: number }
  | { op: 'unloaded'; id: number }
  | { op: 'result'; id: number; outputs: WireTensor[]; computeMicros: number }
  | { op: 'error'; id: number; message: string };
