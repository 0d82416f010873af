/**
 * Execution providers: `--device cuda` without onnxruntime-node's CUDA
 * provider (or a GPU) stops at start and says how to install it; `auto`
 * falls back to the CPU with one clear log line.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNats, type NatsHandle } from '../harness/nats.js';
import { startService } from '../harness/mesh.js';

let nats: NatsHandle;
beforeAll(async () => {
  nats = await startNats();
});
afterAll(async () => {
  await nats?.stop();
});

describe('--device', () => {
  it('cuda without the CUDA provider fails at start with how to install it', async () => {
    const err = await startService('inference', ['--nats', nats.url, '--port', '0', '--device', 'cuda']).then(
      (s) => {
        void s.stop();
        return null;
      },
      (e: Error) => e,
    );
    expect(err?.message).toContain('exited (2) before listening');
    expect(err?.message).toContain('--device cuda:');
    expect(err?.message).toMatch(/CUDA execution provider of onnxruntime-node is not installed|no NVIDIA GPU is visible/);
    expect(err?.message).toContain('onnxruntime-node');
  });

  it('auto uses the CPU and says why, once', async () => {
    const s = await startService('inference', ['--nats', nats.url, '--port', '0', '--device', 'auto']);
    try {
      expect(s.info.device).toBe('cpu');
      const notes = s.logs.filter((l) => l.includes('device auto: using CPU because'));
      expect(notes).toHaveLength(1);
    } finally {
      await s.stop();
    }
  });
});
