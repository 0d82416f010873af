/**
 * The process hop floor for `infermesh bench`: what two Node processes pay to
 * pass one small message each way over a loopback socket, with nothing else
 * on the path (no HTTP/2, no protobuf, no work). With one message in flight
 * each side sleeps between messages, so every message pays a wake-up; with
 * several in flight they arrive back to back. A call through the mesh makes
 * two such hops (caller → router, router → replica) where the echo makes one:
 * this is the per-hop cost no code of ours can go under.
 */
import net from 'node:net';
import { frameCopy } from '../../../libs/grpc/raw-unary.js';
import { GrpcMessageReader } from '../../../libs/wire/message-reader.js';
import { cpuTicks, TICK_US } from './cpu.js';

export interface HopRun {
  inFlight: number;
  messages: number;
  /** CPU µs per message exchanged (one out, its answer back), of the side that sends and of the side that answers. */
  callerUs: number;
  answererUs: number;
  /** Round trip µs (send to answer), median and 99th percentile. */
  p50Us: number;
  p99Us: number;
}

export interface HopFloor {
  transport: string;
  messageBytes: number;
  runs: HopRun[];
}

const MESSAGE_BYTES = 120;

/**
 * Runs `messages` exchanges with each of `inFlights` messages in flight
 * against the answering process at `port` (hop-echo.js, pid `answererPid`),
 * after a warm-up, and reads both sides' CPU.
 */
export async function measureHopFloor(port: number, answererPid: number, messages: number, inFlights: readonly number[]): Promise<HopFloor> {
  const sock = net.connect(port, '127.0.0.1');
  sock.setNoDelay(true);
  await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
  let onAnswer: () => void = () => {};
  const reader = new GrpcMessageReader({ stopped: false, declared: () => true, message: () => onAnswer() });
  sock.on('data', (chunk: Buffer) => reader.push(chunk));
  const msg = frameCopy(new Uint8Array(MESSAGE_BYTES));
  const exchange = (n: number, k: number, times: number[] | null) =>
    new Promise<void>((done) => {
      let sent = 0;
      let answered = 0;
      const sentAt: number[] = [];
      const send = () => {
        if (times) sentAt.push(performance.now());
        sent++;
        sock.write(msg);
      };
      onAnswer = () => {
        if (times) times.push((performance.now() - sentAt[answered]!) * 1000);
        if (++answered === n) return done();
        if (sent < n) send();
      };
      for (let i = 0; i < Math.min(k, n); i++) send();
    });
  const runs: HopRun[] = [];
  try {
    for (const k of inFlights) {
      await exchange(Math.min(5_000, messages), k, null);
      const times: number[] = [];
      const mine = process.cpuUsage();
      const theirs = cpuTicks(answererPid);
      await exchange(messages, k, times);
      const used = process.cpuUsage(mine);
      const answererTicks = cpuTicks(answererPid) - theirs;
      times.sort((a, b) => a - b);
      runs.push({
        inFlight: k,
        messages,
        callerUs: (used.user + used.system) / messages,
        answererUs: (answererTicks * TICK_US) / messages,
        p50Us: times[times.length >> 1]!,
        p99Us: times[Math.min(times.length - 1, Math.floor(0.99 * times.length))]!,
      });
    }
  } finally {
    sock.destroy();
  }
  return { transport: 'loopback TCP socket, 5-byte length prefix, no HTTP/2', messageBytes: MESSAGE_BYTES, runs };
}
