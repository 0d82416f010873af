import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mlpModel } from '../../libs/onnx-builder/index.js';
import { startMesh, type Mesh } from '../harness/mesh.js';

let mesh: Mesh;
beforeAll(async () => {
  mesh = await startMesh({ replicas: 1 });
});
afterAll(async () => {
  await mesh?.stop();
});

describe('smoke', () => {
  it('push, promote, infer', async () => {
    const m = mlpModel({ inputs: 4, hidden: [8], outputs: 1 });
    const v = await mesh.clients.registry.push(m.bytes, { name: 'smoke', alias: 'production' });
    expect(v.version).toBe(1);
    await mesh.waitReady('smoke');
    const row = [0.1, 0.2, 0.3, 0.4];
    const { outputs, response } = await mesh.clients.router.infer('smoke', [{ name: 'features', datatype: 'FP32', shape: [1, 4], data: row }], { id: 'r1' });
    expect(response.id).toBe('r1');
    expect(outputs[0]!.data[0]).toBeCloseTo(m.forward(row)[0]!, 5);
  });
});
