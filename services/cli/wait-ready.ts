/** `models push --wait`: returns once the router serves the new version (loaded and warmed on a replica). */
import { InferenceApi } from '../../libs/client/index.js';
import { isServiceError, Status } from '../../libs/errors/index.js';
import { CliError, remote } from './output.js';

/** Polls the router's ModelReady for `name` v`version` every 100 ms for up to `timeoutS` seconds; DEADLINE_EXCEEDED when it never is. */
export async function waitServed(router: string, name: string, version: number, timeoutS: number): Promise<void> {
  const api = new InferenceApi(router, 2_000);
  const end = Date.now() + timeoutS * 1000;
  try {
    for (;;) {
      const ready = await remote('router', router, () => api.modelReady(name, String(version))).catch((err: unknown) => {
        // Not known to the router yet (its registry watch is a moment behind): wait.
        if (isServiceError(err) && (err.code === Status.NOT_FOUND || err.code === Status.UNAVAILABLE)) return false;
        throw err;
      });
      if (ready) return;
      if (Date.now() > end) throw new CliError('DEADLINE_EXCEEDED', `${name} v${version} is stored but not served by the router at ${router} after ${timeoutS} s (see infermesh models history ${name})`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    api.close();
  }
}
