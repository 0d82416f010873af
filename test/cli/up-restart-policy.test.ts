/**
 * The restart policy of `infermesh up`'s Supervisor, on small real child
 * processes: backoff doubling from 100 ms, a crash loop given up after 5 exits
 * in 60 s (failed restarts count), restarts with the first start's port,
 * backoff reset after a healthy run, logs appended across restarts.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_RESTART, Supervisor, type ChildStatus, type RestartPolicy, type StartSpec } from '../../services/cli/supervisor.js';

let dir: string;
let script: string;

// Reports ready with the port it was given (0 = "any": it takes 45678), lives --life ms, then exits 3; --fail exits 1 at once.
const CHILD = `
const a = process.argv.slice(2);
console.error('args: ' + a.join(' '));
if (a.includes('--fail')) process.exit(1);
const port = Number(a[a.indexOf('--port') + 1]) || 45678;
console.log(JSON.stringify({ msg: 'listening', grpcPort: port }));
setTimeout(() => process.exit(3), Number(a[a.indexOf('--life') + 1]));
`;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'infermesh-restart-'));
  script = path.join(dir, 'child.cjs');
  await writeFile(script, CHILD);
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** A supervisor with `policy`, recording what it reports. */
function supervised(policy: Partial<RestartPolicy>) {
  const seen = { delays: [] as number[], restarted: 0, gaveUp: [] as string[], unexpected: 0 };
  let gaveUp!: () => void;
  const done = new Promise<void>((r) => (gaveUp = r));
  const sup = new Supervisor(dir, () => seen.unexpected++, {
    ...DEFAULT_RESTART,
    ...policy,
    onRestarting: (_c: ChildStatus, _how: string, ms: number) => seen.delays.push(ms),
    onRestarted: () => seen.restarted++,
    onGiveUp: (_c: ChildStatus, how: string) => {
      seen.gaveUp.push(how);
      gaveUp();
    },
  });
  return { sup, seen, done };
}

const spec = (name: string, life: number, extra: Partial<StartSpec> = {}): StartSpec => ({
  name,
  command: process.execPath,
  args: [script, '--port', '0', '--life', String(life)],
  tier: 0,
  readyLine: (j) => j.msg === 'listening',
  timeoutMs: 10_000,
  ...extra,
});

describe('restart policy', () => {
  it('restarts on the first start port with doubling backoff; failed restarts count; 5 exits in 60 s is given up', async () => {
    const { sup, seen, done } = supervised({});
    const first = await sup.start(
      spec('looper', 50, {
        // Every restart gets the port the first start reported, and fails before it is ready.
        restartArgs: (f) => [script, '--port', String(f.info.grpcPort), '--fail'],
      }),
    );
    expect(first.info.grpcPort).toBe(45678);
    await done;
    expect(seen.delays).toEqual([100, 200, 400, 800]);
    expect(seen.restarted).toBe(0);
    expect(seen.gaveUp).toEqual(['exited with status 1 before it was ready']);
    expect(seen.unexpected).toBe(0);
    const [st] = sup.status();
    expect(st).toMatchObject({ name: 'looper', state: 'gave up', restarts: 4, lastExit: 'exited with status 1 before it was ready' });
    await sup.stopAll();
    const log = readFileSync(path.join(dir, 'looper.log'), 'utf8');
    // One line per start, appended: the first start's output is still there.
    expect(log.match(/^--- infermesh: looper (start|restart \d)[ ,].*---$/gm)).toHaveLength(5);
    expect(log).toMatch(/^--- infermesh: looper restart 1 \(the last process exited with status 3\), pid \d+, at /m);
    expect(log).toContain('"grpcPort":45678');
    expect(log.match(/^args: .*--port 45678 --fail$/gm)).toHaveLength(4);
  }, 20_000);

  it('a child that stayed up longer than healthyResetMs starts over at the shortest delay', async () => {
    const { sup, seen } = supervised({ healthyResetMs: 200, maxExits: 100 });
    await sup.start(spec('healthy', 300));
    const end = Date.now() + 10_000;
    while (seen.restarted < 3 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    await sup.stopAll();
    expect(seen.restarted).toBeGreaterThanOrEqual(3);
    expect(seen.delays.slice(0, 3)).toEqual([100, 100, 100]);
    expect(sup.status()[0]).toMatchObject({ state: 'stopped' });
    expect(seen.gaveUp).toEqual([]);
  }, 20_000);

  it('without a policy an exit is reported, not restarted (bench, tune)', async () => {
    let heard = '';
    const sup = new Supervisor(dir, (c, how) => (heard = `${c.name} ${how}`));
    await sup.start(spec('once', 50));
    const end = Date.now() + 5_000;
    while (!heard && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    expect(heard).toBe('once exited with status 3');
    expect(sup.status()[0]).toMatchObject({ state: 'stopped', restarts: 0 });
    await sup.stopAll();
  }, 10_000);
});
