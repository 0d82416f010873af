/**
 * The typed client's own CPU per call: libs/client InferenceApi against a
 * bare grpc-js call of the same generated client, same request, same server
 * (the bench's grpc-js echo, its own process, so only this process's CPU —
 * the caller's — is counted, from process.cpuUsage()).
 *
 *   node dist/services/cli/bench/client-cpu.js [--calls 20000] [--rounds 10] [--addresses 1] [--compare <client module>] [--json]
 *
 * The calls are split into rounds; each round runs every way once for
 * calls/rounds calls, sequentially (one call at a time) and then with 32 calls
 * in flight, in a rotating order so that no way always runs first after a
 * warm-up or a GC. The report gives each way's median over rounds in µs of
 * CPU per call, and its extra over the bare call as the median of the
 * per-round differences (a loaded machine shifts a whole round alike).
 * With --addresses N the client gets N addresses (all the same echo server):
 * the round-robin's cost per call.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { InferenceApi, buildInferRequest, type InputTensor } from '../../../libs/client/index.js';
import { SERVICE_NODE_FLAGS } from '../../../libs/config/index.js';
import { oip } from '../../../libs/proto/index.js';

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? dflt : Number(process.argv[i + 1]);
};
const CALLS = arg('calls', 20_000);
const ROUNDS = arg('rounds', 10);
const ADDRESSES = arg('addresses', 1);
const CONCURRENCY = 32;

type Call = () => Promise<unknown>;

async function startEcho(): Promise<{ proc: ChildProcess; address: string }> {
  const proc = spawn(process.execPath, [...SERVICE_NODE_FLAGS, fileURLToPath(new URL('./echo-server.js', import.meta.url)), '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    let buf = '';
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /"grpcPort":(\d+)/.exec(buf);
      if (m) resolve(Number(m[1]));
    });
    proc.once('exit', (code) => reject(new Error(`echo server exited (${code})`)));
  });
  return { proc, address: `127.0.0.1:${port}` };
}

/** µs of this process's CPU (user + system) for `calls` calls, `inFlight` at a time. */
async function cpuOf(call: Call, calls: number, inFlight: number): Promise<number> {
  let left = calls;
  const worker = async () => {
    while (left > 0) {
      left--;
      await call();
    }
  };
  const t0 = process.cpuUsage();
  await Promise.all(Array.from({ length: inFlight }, worker));
  const d = process.cpuUsage(t0);
  return d.user + d.system;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const round1 = (x: number) => Math.round(x * 10) / 10;

async function main(): Promise<void> {
  const echo = await startEcho();
  const features = [0.1, -1.2, 3.4, 0.5, 2.2, -0.7, 1.1, 0.03];
  const inputs: InputTensor[] = [{ name: 'features', datatype: 'FP32', shape: [1, features.length], data: features }];
  const req = buildInferRequest('fraud', inputs);
  const addresses = Array.from({ length: ADDRESSES }, () => echo.address);
  const api = new InferenceApi(addresses);
  const withToken = new InferenceApi(addresses, { token: 'secret' });
  // The bare call: the same generated grpc-js client class, on its own channel.
  const bare = new oip.GRPCInferenceServiceClient(echo.address, grpc.credentials.createInsecure());
  const bareCall: Call = () => new Promise((resolve, reject) => bare.modelInfer(req, (err, res) => (err ? reject(err) : resolve(res))));
  const bareDeadline: Call = () =>
    new Promise((resolve, reject) => bare.modelInfer(req, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (err, res) => (err ? reject(err) : resolve(res))));
  const ways: [string, Call][] = [
    ['bare grpc-js', bareCall],
    ['bare grpc-js + deadline', bareDeadline],
    ['InferenceApi.inferRaw', () => api.inferRaw(req)],
    ['InferenceApi.infer (plain values)', () => api.infer('fraud', inputs)],
    ['InferenceApi.inferRaw, token', () => withToken.inferRaw(req)],
  ];
  const closers: (() => void)[] = [() => api.close(), () => withToken.close(), () => bare.close()];
  // --compare <module>: another build of libs/client (say, the one before a change), measured alongside.
  const cmp = process.argv.indexOf('--compare');
  if (cmp >= 0) {
    const other = (await import(pathToFileURL(process.argv[cmp + 1]!).href)) as { InferenceApi: typeof InferenceApi };
    const before = new other.InferenceApi(addresses);
    const beforeToken = new other.InferenceApi(addresses, { token: 'secret' });
    ways.push(['compared InferenceApi.inferRaw', () => before.inferRaw(req)], ['compared InferenceApi.infer', () => before.infer('fraud', inputs)], ['compared inferRaw, token', () => beforeToken.inferRaw(req)]);
    closers.push(() => before.close(), () => beforeToken.close());
  }
  if (process.argv.includes('--own')) {
    await ownWork(req, inputs, cmp >= 0 ? process.argv[cmp + 1]! : undefined);
    for (const close of closers) close();
    echo.proc.kill('SIGTERM');
    return;
  }
  const only = process.argv.indexOf('--only');
  if (only >= 0) {
    // One way alone (for --cpu-prof): a warm-up, then CALLS calls in sequence.
    const call = ways.find(([name]) => name.startsWith(process.argv[only + 1]!))![1];
    await cpuOf(call, 2_000, 1);
    process.stdout.write(`${process.argv[only + 1]}: ${((await cpuOf(call, CALLS, 1)) / CALLS).toFixed(1)} µs CPU per call\n`);
  } else {
    for (const [, call] of ways) await cpuOf(call, 2_000, CONCURRENCY); // warm-up: connections, JIT
    // Blocks of CALLS/ROUNDS calls, every way once per round in a rotating order: a
    // machine whose load drifts shifts all ways of a round alike, and the median of the
    // per-round differences to the bare call cancels it.
    const block = Math.ceil(CALLS / ROUNDS);
    const us = new Map<string, { seq: number[]; c32: number[] }>(ways.map(([name]) => [name, { seq: [], c32: [] }]));
    for (let r = 0; r < ROUNDS; r++) {
      for (let i = 0; i < ways.length; i++) {
        const [name, call] = ways[(i + r) % ways.length]!;
        us.get(name)!.seq.push((await cpuOf(call, block, 1)) / block);
      }
      for (let i = 0; i < ways.length; i++) {
        const [name, call] = ways[(i + r) % ways.length]!;
        us.get(name)!.c32.push((await cpuOf(call, block, CONCURRENCY)) / block);
      }
    }
    const base = us.get('bare grpc-js')!;
    const extra = (xs: number[], b: number[]) => median(xs.map((x, i) => x - b[i]!));
    const rows = [...us].map(([way, { seq, c32 }]) => ({
      way,
      seqUs: round1(median(seq)),
      seqExtraUs: round1(extra(seq, base.seq)),
      c32Us: round1(median(c32)),
      c32ExtraUs: round1(extra(c32, base.c32)),
    }));
    process.stdout.write(
      `client CPU per call, µs (this process; median of ${ROUNDS} rounds of ${block} calls per way, ${block * ROUNDS} in all; ` +
        `extra: median per-round difference to the bare call; ${ADDRESSES} address(es); node ${process.version}, load ${os.loadavg()[0]!.toFixed(1)})\n`,
    );
    process.stdout.write(`${'way'.padEnd(36)}${'sequential'.padStart(12)}${'extra'.padStart(8)}${'32 in flight'.padStart(14)}${'extra'.padStart(8)}\n`);
    for (const x of rows) process.stdout.write(`${x.way.padEnd(36)}${String(x.seqUs).padStart(12)}${String(x.seqExtraUs).padStart(8)}${String(x.c32Us).padStart(14)}${String(x.c32ExtraUs).padStart(8)}\n`);
    if (process.argv.includes('--json')) process.stdout.write(`${JSON.stringify({ rounds: ROUNDS, block, ways: Object.fromEntries(us) })}\n`);
  }
  for (const close of closers) close();
  echo.proc.kill('SIGTERM');
}

/**
 * The typed client's own work, without the transport's noise: every
 * generated-client method answers from memory on the next microtask (the
 * echo's response, decoded once), so what is measured is what InferenceApi
 * does around grpc-js — options, metadata, promise, callbacks, round-robin,
 * building and decoding plain values — against a bare call's promise and
 * callback. 200,000 calls a way, sequentially, alternating, median of 5.
 */
async function ownWork(req: oip.ModelInferRequest, inputs: InputTensor[], compare?: string): Promise<void> {
  const response = oip.ModelInferResponse.decode(oip.ModelInferRequest.encode(req).finish());
  const stub = (_req: unknown, _md: unknown, _o: unknown, cb: (e: null, r: oip.ModelInferResponse) => void) => queueMicrotask(() => cb(null, response));
  const stubbed = (api: InferenceApi) => {
    for (const c of api.clients) (c as unknown as { modelInfer: typeof stub }).modelInfer = stub;
    return api;
  };
  const ways: [string, Call][] = [['bare call (promise + callback)', () => new Promise((resolve) => stub(req, undefined, undefined, (_e, r) => resolve(r)))]];
  const builds: [string, typeof InferenceApi][] = [['', InferenceApi]];
  if (compare) builds.push(['compared ', ((await import(pathToFileURL(compare).href)) as { InferenceApi: typeof InferenceApi }).InferenceApi]);
  for (const [label, Api] of builds) {
    const one = stubbed(new Api('127.0.0.1:1'));
    const two = stubbed(new Api(['127.0.0.1:1', '127.0.0.1:2']));
    ways.push(
      [`${label}inferRaw`, () => one.inferRaw(req)],
      [`${label}infer (plain values)`, () => one.infer('fraud', inputs)],
      [`${label}inferRaw, 2 addresses`, () => two.inferRaw(req)],
    );
  }
  const N = 200_000;
  const us = new Map<string, number[]>(ways.map(([name]) => [name, []]));
  for (const [, call] of ways) await cpuOf(call, 20_000, 1);
  for (let r = 0; r < 5; r++) for (let i = 0; i < ways.length; i++) {
    const [name, call] = ways[(i + r) % ways.length]!;
    us.get(name)!.push((await cpuOf(call, N, 1)) / N);
  }
  process.stdout.write(`the client's own CPU per call, µs (transport stubbed; median of 5 rounds of ${N} calls; node ${process.version})\n`);
  for (const [name, xs] of us) process.stdout.write(`${name.padEnd(36)}${median(xs).toFixed(2).padStart(10)}\n`);
}

main().catch((err) => {
  process.stderr.write(`${String(err?.stack ?? err)}\n`);
  process.exit(1);
});
