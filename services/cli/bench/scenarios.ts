/** What `infermesh bench` can measure (`--scenarios`); all by default. Kept apart so the CLI parses the option without loading the bench. */
export const SCENARIOS = ['load', 'c1', 'few', 'open', 'batching', 'eventloop'] as const;
export type Scenario = (typeof SCENARIOS)[number];

/** Parses `--scenarios a,b`: returns the list, or throws naming the choices. */
export function parseScenarios(raw: string): Scenario[] {
  const list = raw.split(',').map((s) => s.trim()).filter(Boolean);
  if (!list.length || list.some((s) => !(SCENARIOS as readonly string[]).includes(s))) throw new RangeError(`expected a comma-separated list of ${SCENARIOS.join(', ')}`);
  return list as Scenario[];
}
