import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

export type DeviceChoice = 'cpu' | 'cuda' | 'auto';

/** Thrown when `--device cuda` is asked for and cannot be had. */
export class DeviceError extends Error {
  override name = 'DeviceError';
}

function cudaProviderInstalled(): boolean {
  try {
    const require = createRequire(import.meta.url);
    const root = path.dirname(require.resolve('onnxruntime-node/package.json'));
    const dir = path.join(root, 'bin', 'napi-v6', process.platform, process.arch);
    return existsSync(dir) && readdirSync(dir).some((f) => f.startsWith('libonnxruntime_providers_cuda'));
  } catch {
    return false;
  }
}

function gpuVisible(): boolean {
  return existsSync('/dev/nvidia0') || existsSync('/dev/nvidiactl');
}

/**
 * Picks the ONNX Runtime execution provider. `auto` takes CUDA when its
 * provider library is installed and a GPU is visible, else CPU (and says
 * why in `note`); `cuda` without both throws with how to fix it.
 */
export function chooseDevice(choice: DeviceChoice): { provider: 'cpu' | 'cuda'; note: string | null } {
  const cuda = cudaProviderInstalled();
  const gpu = gpuVisible();
  if (choice === 'cpu') return { provider: 'cpu', note: null };
  if (cuda && gpu) return { provider: 'cuda', note: null };
  const why = !cuda
    ? 'the CUDA execution provider of onnxruntime-node is not installed (run `npx onnxruntime-node-install --cuda` or reinstall onnxruntime-node with ONNXRUNTIME_NODE_INSTALL_CUDA=v12 and its install script allowed, on a machine that can reach its download host)'
    : 'no NVIDIA GPU is visible (/dev/nvidia0 missing)';
  if (choice === 'cuda') throw new DeviceError(`--device cuda: ${why}`);
  return { provider: 'cpu', note: `device auto: using CPU because ${why}` };
}
