/** How `infermesh bench` pools its rounds: median rate, latency quantiles over every request. */
import { describe, expect, it } from 'vitest';
import { median, poolRounds, type LoadRun } from '../../services/cli/bench/h2load.js';

const run = (rps: number, latencies: number[]): LoadRun => ({
  requests: latencies.length, succeeded: latencies.length, failed: 0, seconds: latencies.length / rps, rps, p50Us: 0, p99Us: 0, p999Us: 0, latencies: [...latencies].sort((a, b) => a - b),
});

describe('bench rounds', () => {
  it('median of odd and even counts, 0 for none', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBe(0);
  });

  it('pools rounds: counts add, rate is the median round, quantiles come from all latencies', () => {
    const a = run(100, Array.from({ length: 100 }, (_, i) => i + 1)); // 1..100
    const b = run(300, Array.from({ length: 100 }, (_, i) => 101 + i)); // 101..200
    const c = run(200, [1000]);
    const p = poolRounds([a, b, c]);
    expect(p.requests).toBe(201);
    expect(p.succeeded).toBe(201);
    expect(p.rps).toBe(200);
    expect(p.roundsRps).toEqual([100, 300, 200]);
    expect(p.p50Us).toBe(101); // the 101st of 201 sorted values (index 100)
    expect(p.p999Us).toBe(1000);
    expect(p.seconds).toBeCloseTo(1 + 1 / 3 + 1 / 200);
  });
});
