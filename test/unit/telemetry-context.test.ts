/**
 * startTelemetry's asyncContext option: without it (router, replicas) no
 * async context manager is registered, so Node's async hooks stay off and
 * `context.with` does not carry a context into its callback's
 * `context.active()`; with the default (registry, monitor) it does.
 */
import { context, createContextKey, ROOT_CONTEXT } from '@opentelemetry/api';
import { describe, expect, it } from 'vitest';
import { startTelemetry } from '../../libs/telemetry/index.js';

const key = createContextKey('probe');
const seen = () => context.with(ROOT_CONTEXT.setValue(key, 42), () => context.active().getValue(key));

describe('startTelemetry asyncContext', () => {
  it('false: no context manager (context.with carries nothing); default: AsyncLocalStorage', async () => {
    const env = { OTEL_TRACES_SAMPLER: 'always_off' } as NodeJS.ProcessEnv;
    const off = await startTelemetry('t-off', env, { asyncContext: false });
    expect(seen()).toBeUndefined();
    await off.shutdown();
    const on = await startTelemetry('t-on', env);
    expect(seen()).toBe(42);
    await on.shutdown();
  });
});
