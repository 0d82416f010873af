/**
 * Follows one JetStream stream from its first stored message with nats.js
 * ordered consumers (ephemeral, ack-free), then live. The ordered consumer
 * recreates itself after missed heartbeats or a server restart; when its
 * iterator still ends (the connection was closed, the consumer could not be
 * recreated), a new one starts after the last sequence handed over, so no
 * message is delivered twice and none is skipped while it is stored.
 */
import type { ConsumerMessages, JsMsg, NatsConnection } from 'nats';
import type { Logger } from '../../libs/log/index.js';

const RESTART_MS = 1_000;
/** How often, while replaying, the stream is asked whether what is left to replay has expired. */
const CATCH_UP_CHECK_MS = 2_000;

export class StreamFollower {
  private lastSeq = 0;
  /** The stream's last sequence when following began; replay is over once it is reached. */
  private target: number | null = null;
  private isCaughtUp = false;
  private markCaughtUp!: () => void;
  /** Resolves once every message stored before following began has been handed over. */
  readonly caughtUp: Promise<void>;
  private markStarted!: () => void;
  /** Resolves once the stream's last sequence at start is known: from then on a message is either replayed or live. */
  readonly started: Promise<void>;
  private messages: ConsumerMessages | null = null;
  private running: Promise<void> | null = null;
  private stopped = false;
  private readonly wake = new AbortController();
  private checkTimer: NodeJS.Timeout | null = null;

  /**
   * `onMessage` gets each message and whether it was stored before following
   * began (`replayed`); it must not throw (it is logged and skipped if it does).
   */
  constructor(
    private readonly nc: NatsConnection,
    readonly stream: string,
    private readonly onMessage: (m: JsMsg, replayed: boolean) => void,
    private readonly log: Logger,
  ) {
    this.caughtUp = new Promise((resolve) => (this.markCaughtUp = resolve));
    this.started = new Promise((resolve) => (this.markStarted = resolve));
  }

  /** The stream sequence of the last message handed over (0 before the first). */
  get sequence(): number {
    return this.lastSeq;
  }

  /** Starts following in the background; idempotent. */
  start(): void {
    if (this.running || this.stopped) return;
    this.running = this.run();
  }

  /** Stops the consumer and waits for the loop to end. Idempotent. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.markStarted();
    this.wake.abort();
    if (this.checkTimer) clearInterval(this.checkTimer);
    await this.messages?.close().catch(() => undefined);
    await this.running;
  }

  private caught(): void {
    if (this.isCaughtUp) return;
    this.isCaughtUp = true;
    if (this.checkTimer) clearInterval(this.checkTimer);
    this.markCaughtUp();
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        if (this.target === null) await this.learnTarget();
        const js = this.nc.jetstream();
        // Without options the ordered consumer starts at sequence 1 (see event-feed.ts for why not DeliverPolicy.All).
        const consumer = await js.consumers.get(this.stream, this.lastSeq > 0 ? { opt_start_seq: this.lastSeq + 1 } : {});
        this.messages = await consumer.consume();
        if (this.stopped) break;
        for await (const m of this.messages) {
          this.lastSeq = m.seq;
          try {
            this.onMessage(m, m.seq <= this.target!);
          } catch (err) {
            this.log.warn({ err: String(err), stream: this.stream, seq: m.seq }, 'stream message handler failed');
          }
          if (!this.isCaughtUp && (m.seq >= this.target! || m.info.pending === 0)) this.caught();
        }
      } catch (err) {
        if (!this.stopped) this.log.warn({ err: String(err), stream: this.stream }, 'stream consumer failed; restarting');
      }
      if (this.stopped) break;
      this.log.warn({ stream: this.stream, after: this.lastSeq }, 'stream consumer ended; restarting');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, RESTART_MS);
        this.wake.signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
      });
    }
    await this.messages?.close().catch(() => undefined);
  }

  /** Reads the stream's last sequence: replay is over once it is delivered (or nothing is stored). */
  private async learnTarget(): Promise<void> {
    const jsm = await this.nc.jetstreamManager();
    const { state } = await jsm.streams.info(this.stream);
    this.target = state.last_seq;
    this.markStarted();
    if (state.messages === 0) return this.caught();
    // What is left to replay can expire (max_age) before it is delivered; then nothing would signal the end.
    this.checkTimer = setInterval(() => {
      void jsm.streams
        .info(this.stream)
        .then(({ state: s }) => {
          if (s.messages === 0 || s.first_seq > this.target! || this.lastSeq >= this.target!) this.caught();
        })
        .catch(() => undefined);
    }, CATCH_UP_CHECK_MS);
    this.checkTimer.unref();
  }
}
