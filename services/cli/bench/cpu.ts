/**
 * CPU time of benchmarked processes, from /proc/<pid>/stat (utime + stime of
 * the whole process, worker threads included), in clock ticks. A tick is
 * 1/CLK_TCK s (10 ms at the usual 100), so a per-call figure is only as fine
 * as one tick over the calls measured: bench reads it around runs of
 * thousands of calls and says the resolution.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** Clock ticks per second (`getconf CLK_TCK`; 100 when getconf is missing). */
export const CLOCK_TICKS_PER_SECOND = ((): number => {
  try {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return Number.isInteger(n) && n > 0 ? n : 100;
  } catch {
    return 100;
  }
})();

/** µs of CPU in one clock tick. */
export const TICK_US = 1e6 / CLOCK_TICKS_PER_SECOND;

/** utime + stime in clock ticks from the text of a /proc/<pid>/stat (its fields 14 and 15). */
export function statTicks(stat: string): number {
  // The command name (field 2) is in parentheses and may hold spaces and ')': count fields after the last ')'.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(f[11]) + Number(f[12]);
  if (!Number.isFinite(ticks)) throw new Error(`unexpected /proc stat line: ${stat.slice(0, 100)}`);
  return ticks;
}

/** utime + stime of `pid` (all its threads) in clock ticks. */
export function cpuTicks(pid: number): number {
  return statTicks(readFileSync(`/proc/${pid}/stat`, 'utf8'));
}

/** Named groups of processes whose CPU is measured together (e.g. `replicas`: both replicas' pids). */
export type CpuGroups = Readonly<Record<string, readonly number[]>>;

/** Each group's ticks now. */
export function sampleCpu(groups: CpuGroups): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, pids] of Object.entries(groups)) out[name] = pids.reduce((n, pid) => n + cpuTicks(pid), 0);
  return out;
}

/** Ticks spent per group between two samples. */
export function ticksBetween(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.keys(before).map((k) => [k, after[k]! - before[k]!]));
}

/** Adds `ticks` into `into` (per group). */
export function addTicks(into: Record<string, number>, ticks: Record<string, number>): void {
  for (const [k, v] of Object.entries(ticks)) into[k] = (into[k] ?? 0) + v;
}

/** µs of CPU per call of each group, one decimal: `ticks` spent over `calls`. */
export function usPerCall(ticks: Record<string, number>, calls: number): Record<string, number> {
  return Object.fromEntries(Object.entries(ticks).map(([k, t]) => [k, calls > 0 ? Math.round((t * TICK_US * 10) / calls) / 10 : 0]));
}
