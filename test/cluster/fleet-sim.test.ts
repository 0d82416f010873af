/**
 * The fleet simulation (fleet-sim.ts) at a small size, as a correctness
 * check: heartbeats that change nothing routes read do not rebuild the
 * routers' tables, and an alias move reaches every router within 1 s.
 *
 * The benchmark (25/50/100/200 replicas, 10 routers) is the same code:
 *   FLEET_BENCH=1 npx vitest run test/cluster/fleet-sim.test.ts
 * (FLEET_SIZES=25,50,100,200 FLEET_ROUTERS=10 to change it); it prints one
 * JSON line per size and a Markdown table.
 */
import { describe, expect, it } from 'vitest';
import { runFleet, type FleetPoint } from './fleet-sim.js';

const bench = process.env.FLEET_BENCH === '1';

describe('fleet simulation', () => {
  it.skipIf(bench)('25 replicas, 3 routers: steady heartbeats rebuild nothing; a promote reaches every router within 1 s', async () => {
    const p = await runFleet({ replicas: 25, routers: 3, windowMs: 4_000, promotes: 3 });
    console.log(`fleet-sim: ${JSON.stringify(p)}`);
    // 25 replicas beating every 2 s are 12.5 puts/s: a rebuild for each would show here.
    expect(p.rebuildsPerSecPerRouter).toBeLessThan(1);
    expect(p.promoteMaxMs).toBeLessThan(1_000);
    // Every heartbeat reaches every router (in: 12.5/s puts, out: ×3 watchers plus acks).
    expect(p.natsOutPerSec).toBeGreaterThan(25);
  }, 60_000);

  it.runIf(bench)('benchmark: growth from 25 to 200 replicas', async () => {
    const sizes = (process.env.FLEET_SIZES ?? '25,50,100,200').split(',').map(Number);
    const routers = Number(process.env.FLEET_ROUTERS ?? 10);
    const out: FleetPoint[] = [];
    for (const n of sizes) {
      const p = await runFleet({ replicas: n, routers, windowMs: 10_000, promotes: 7 });
      console.log(`fleet-sim: ${JSON.stringify(p)}`);
      out.push(p);
    }
    const rows = out.map((p) => `| ${p.replicas} | ${p.routers} | ${p.rebuildsPerSecPerRouter} | ${p.rebuildMicros} | ${p.rebuildMsPerSecPerRouter} | ${p.natsInPerSec} | ${p.natsOutPerSec} | ${p.heapPerRouterMiB} | ${p.promoteMedianMs} | ${p.promoteMaxMs} |`);
    console.log(
      [
        '| replicas | routers | rebuilds/s per router | µs per rebuild | rebuild ms/s per router | NATS msgs in/s | NATS msgs out/s | heap per router MiB | promote p50 ms | promote max ms |',
        '|---|---|---|---|---|---|---|---|---|---|',
        ...rows,
      ].join('\n'),
    );
    for (const p of out) expect(p.promoteMaxMs).toBeLessThan(1_000);
  }, 600_000);
});
