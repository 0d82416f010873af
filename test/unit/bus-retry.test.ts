/**
 * retryTransient (libs/bus/retry.ts): how the registry and the acknowledged
 * publishes ride out a JetStream leader election — fast failures retried
 * within a short backoff, an unanswered attempt joined by another (the first
 * keeps its chance), the deadline kept, answers never refused.
 */
import { describe, expect, it } from 'vitest';
import { NatsError } from 'nats';
import { retryTransient } from '../../libs/bus/index.js';

const noResponders = () => new NatsError('503', '503');
const never = <T>() => new Promise<T>(() => undefined);

describe('retryTransient', () => {
  it('retries "no responders" until the leader is back, within 250 ms of it', async () => {
    const t0 = Date.now();
    const back = t0 + 1_500;
    let calls = 0;
    const v = await retryTransient(async () => {
      calls++;
      if (Date.now() < back) throw noResponders();
      return 'ok';
    }, { deadline: t0 + 5_000 });
    expect(v).toBe('ok');
    expect(Date.now() - back).toBeLessThan(400);
    // Backoff, not a spin: 50 ms doubling to 250 ms.
    expect(calls).toBeLessThan(20);
  });

  it('sends another attempt beside one left unanswered (a request lost to a dying leader)', async () => {
    const t0 = Date.now();
    let calls = 0;
    const v = await retryTransient(() => (++calls === 1 ? never<string>() : Promise.resolve(`answer ${calls}`)), { deadline: t0 + 5_000 });
    expect(v).toBe('answer 2');
    expect(Date.now() - t0).toBeLessThan(1_000);
  });

  it('takes the first answer, even from an earlier attempt (a slow but live leader)', async () => {
    let calls = 0;
    const v = await retryTransient(
      () => {
        calls++;
        return calls === 1 ? new Promise<string>((r) => setTimeout(() => r('first'), 900)) : never<string>();
      },
      { deadline: Date.now() + 5_000 },
    );
    expect(v).toBe('first');
    expect(calls).toBeGreaterThanOrEqual(2);
    expect(calls).toBeLessThanOrEqual(4);
  });

  it('keeps at most 5 attempts out at once and gives up at the deadline', async () => {
    const t0 = Date.now();
    let out = 0;
    let most = 0;
    const err = await retryTransient(() => {
      out++;
      most = Math.max(most, out);
      return never<string>();
    }, { deadline: t0 + 3_000 }).catch((e: unknown) => e);
    expect((err as NatsError).code).toBe('TIMEOUT');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2_900);
    expect(Date.now() - t0).toBeLessThan(3_500);
    expect(most).toBe(5);
  });

  it('answers a non-transient error at once (a compare-and-set conflict is an answer)', async () => {
    const t0 = Date.now();
    const conflict = new Error('wrong last sequence: 7');
    await expect(retryTransient(() => Promise.reject(conflict), { deadline: t0 + 5_000 })).rejects.toBe(conflict);
    expect(Date.now() - t0).toBeLessThan(100);
  });

  it('gives a call whose deadline has passed one attempt', async () => {
    await expect(retryTransient(() => Promise.resolve(7), { deadline: Date.now() - 10 })).resolves.toBe(7);
    await expect(retryTransient(() => Promise.reject(noResponders()), { deadline: Date.now() - 10 })).rejects.toMatchObject({ code: '503' });
  });
});
