/**
 * A seeded pseudo-random source, so fixtures and the demo model come out
 * byte-identical on every run and tests can recompute what a model holds.
 */
export interface Rng {
  /** Uniform in [0, 1). */
  next(): number;
  /** Standard normal (mean 0, variance 1). */
  normal(): number;
  /** Uniform in [lo, hi). */
  uniform(lo: number, hi: number): number;
}

/**
 * mulberry32: a 32-bit generator that is tiny and good enough for synthetic
 * weights and data; Math.random cannot be seeded.
 */
export function mulberry32(seed: number): Rng {
  let state = seed >>> 0;
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    // Box-Muller; 1 - u keeps the log argument in (0, 1].
    normal: () => Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next()),
    uniform: (lo, hi) => lo + (hi - lo) * next(),
  };
}
