/** How `infermesh bench` reads CPU time: utime+stime from /proc/<pid>/stat, per call over a run. */
import { describe, expect, it } from 'vitest';
import { CLOCK_TICKS_PER_SECOND, cpuTicks, sampleCpu, statTicks, TICK_US, ticksBetween, usPerCall } from '../../services/cli/bench/cpu.js';

describe('bench CPU per call', () => {
  it('reads fields 14 and 15 after the command name, whatever the name holds', () => {
    // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime …
    const line = (comm: string) => `4242 (${comm}) S 1 4242 4242 0 -1 4194560 900 0 0 0 731 269 5 7 20 0 11 0 100 0 0\n`;
    expect(statTicks(line('node'))).toBe(1000);
    expect(statTicks(line('a b) c (d'))).toBe(1000);
    expect(() => statTicks('garbage')).toThrow();
  });

  it("this process's ticks grow while it spins; a group sums its pids", () => {
    const before = sampleCpu({ self: [process.pid], twice: [process.pid, process.pid] });
    const start = cpuTicks(process.pid);
    const until = Date.now() + 10_000;
    // Spin until two ticks are counted (a wrong field would not move, or move with something else).
    while (cpuTicks(process.pid) < start + 2 && Date.now() < until) for (let i = 0; i < 1e5; i++) Math.sqrt(i);
    const spent = ticksBetween(before, sampleCpu({ self: [process.pid], twice: [process.pid, process.pid] }));
    expect(spent.self).toBeGreaterThanOrEqual(2);
    // Read a moment apart, each of the pair may be a tick behind or ahead.
    expect(spent.twice).toBeGreaterThanOrEqual(2 * spent.self! - 3);
  });

  it('per call: ticks × tick length / calls, one decimal', () => {
    expect(CLOCK_TICKS_PER_SECOND).toBeGreaterThan(0);
    expect(TICK_US).toBe(1e6 / CLOCK_TICKS_PER_SECOND);
    expect(usPerCall({ router: 3, replicas: 0 }, 1000)).toEqual({ router: Math.round(3 * TICK_US * 10 / 1000) / 10, replicas: 0 });
    expect(usPerCall({ router: 3 }, 0)).toEqual({ router: 0 });
  });
});
