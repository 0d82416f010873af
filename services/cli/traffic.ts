/** How a model's traffic record (aliases, canary, shadow) reads in tables and --json. */
import type { ModelInfo } from '../../libs/proto/index.js';

/** alias -> version, sorted by alias. */
export function aliases(m: ModelInfo): Record<string, number> {
  return Object.fromEntries(Object.entries(m.traffic?.aliases ?? {}).sort(([a], [b]) => a.localeCompare(b)));
}

/** `production=2,staging=1`; empty when there are none. */
export function aliasesText(m: ModelInfo): string {
  return Object.entries(aliases(m))
    .map(([a, v]) => `${a}=${v}`)
    .join(',');
}

/** The canary for --json, or null when none is set. */
export function canaryJson(m: ModelInfo): { version: number; weightPercent: number; keyHeader: string } | null {
  const c = m.traffic?.canary;
  return c && c.version ? { version: c.version, weightPercent: c.weightPercent, keyHeader: c.keyHeader } : null;
}

/** The shadow for --json, or null when none is set. */
export function shadowJson(m: ModelInfo): { version: number; percent: number } | null {
  const s = m.traffic?.shadow;
  return s && s.version ? { version: s.version, percent: s.percent } : null;
}

/** `v3 at 10% of production, sticky on x-user`, or '' when no canary is set. */
export function canaryText(m: ModelInfo): string {
  const c = canaryJson(m);
  return c ? `v${c.version} at ${c.weightPercent}% of production${c.keyHeader ? `, sticky on ${c.keyHeader}` : ''}` : '';
}

/** `v4 mirroring 100% of requests`, or '' when no shadow is set. */
export function shadowText(m: ModelInfo): string {
  const s = shadowJson(m);
  return s ? `v${s.version} mirroring ${s.percent}% of requests` : '';
}

/** What rollback, canary and shadow print with --json: the model's routing after the change. */
export function trafficSummary(m: ModelInfo): { name: string; aliases: Record<string, number>; canary: ReturnType<typeof canaryJson>; shadow: ReturnType<typeof shadowJson> } {
  return { name: m.name, aliases: aliases(m), canary: canaryJson(m), shadow: shadowJson(m) };
}
