/**
 * Waiting in tests: poll a condition with a deadline instead of sleeping a
 * fixed time and hoping the system got there. A fixed sleep that gates an
 * assertion is either too short on a loaded 2-core machine (flaky) or too
 * long everywhere else (slow); polling is neither.
 *
 * `sleep` stays for what really is a duration: a load that runs for a while,
 * a window the test measures over, or a pause that proves that nothing
 * happens (say why beside it).
 */

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `get` every `everyMs` until `ok` holds of its value or `ms` pass, and
 * returns the last value either way, so the assertion after it shows what the
 * system did instead of a bare timeout. `get` may throw while the system is
 * getting there (a connection refused, NOT_FOUND); its error is rethrown only
 * once the deadline has passed.
 */
export async function eventually<T>(get: () => Promise<T> | T, ok: (v: T) => boolean, ms = 15_000, everyMs = 50): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    let v: T;
    try {
      v = await get();
    } catch (err) {
      if (Date.now() > until) throw err;
      await sleep(everyMs);
      continue;
    }
    if (ok(v) || Date.now() > until) return v;
    await sleep(everyMs);
  }
}

/**
 * Polls `ok` until it holds; throws `timed out waiting for <what>` (with the
 * last error `ok` threw, if any) once `ms` pass.
 */
export async function until(what: string, ok: () => Promise<boolean> | boolean, ms = 15_000, everyMs = 50): Promise<void> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      if (await ok()) return;
      last = undefined;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await sleep(everyMs);
  }
}
