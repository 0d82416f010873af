/**
 * `<dir>/processes.json`: what `infermesh up` supervises, rewritten (tmp file
 * + rename, so a reader never sees half of it) on every change, and read by
 * `infermesh status`.
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ChildStatus } from './supervisor.js';

export const PROCESSES_FILE = 'processes.json';

export interface ProcessesFile {
  /** The `infermesh up` process. */
  pid: number;
  startedAtMs: number;
  updatedAtMs: number;
  /** Set once `up` has stopped its children. */
  stoppedAtMs?: number;
  /** The routers' gRPC addresses (known once they are ready). */
  routers: string[];
  processes: ProcessEntry[];
}

export interface ProcessEntry {
  name: string;
  pid: number;
  state: ChildStatus['state'];
  startedAtMs: number;
  restarts: number;
  lastExit: string;
  lastExitAtMs: number;
  /** The gRPC port it bound (or nats-server's port), 0 when unknown. */
  port: number;
  /** A router's REST port (where `status` asks it about the replicas: GET /v2/replicas); absent for others. */
  restPort?: number;
  logFile: string;
}

/**
 * Writes the file for `up` whenever asked, one write at a time: a change
 * that comes in while a write is under way is written right after it.
 */
export class ProcessesWriter {
  private readonly file: string;
  private writing: Promise<void> | null = null;
  private again = false;

  constructor(dir: string, private readonly snapshot: () => ProcessesFile) {
    this.file = path.join(dir, PROCESSES_FILE);
  }

  /** Schedules a write of the current snapshot; resolves once it (or a later one) is on disk. */
  update(): Promise<void> {
    if (this.writing) {
      this.again = true;
      return this.writing;
    }
    this.writing = (async () => {
      do {
        this.again = false;
        const tmp = `${this.file}.${process.pid}.tmp`;
        try {
          await writeFile(tmp, `${JSON.stringify(this.snapshot(), null, 1)}\n`);
          await rename(tmp, this.file);
        } catch (err) {
          process.stderr.write(`infermesh: could not write ${this.file}: ${(err as Error).message}\n`);
        }
      } while (this.again);
      this.writing = null;
    })();
    return this.writing;
  }
}

/** The entries of a supervisor's children, for the file. */
export function entriesOf(children: ChildStatus[]): ProcessEntry[] {
  return children.map((c) => ({
    name: c.name,
    pid: c.pid,
    state: c.state,
    startedAtMs: c.startedAtMs,
    restarts: c.restarts,
    lastExit: c.lastExit,
    lastExitAtMs: c.lastExitAtMs,
    port: typeof c.info.grpcPort === 'number' ? c.info.grpcPort : typeof c.info.port === 'number' ? c.info.port : 0,
    ...(typeof c.info.restPort === 'number' ? { restPort: c.info.restPort } : {}),
    logFile: c.logFile,
  }));
}

/** Reads `<dir>/processes.json`; null when there is none. Throws on an unreadable or malformed file. */
export async function readProcessesFile(dir: string): Promise<ProcessesFile | null> {
  let text: string;
  try {
    text = await readFile(path.join(dir, PROCESSES_FILE), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const v = JSON.parse(text) as ProcessesFile;
  if (typeof v?.pid !== 'number' || !Array.isArray(v.processes)) throw new Error(`${PROCESSES_FILE} is not a process list`);
  return v;
}
