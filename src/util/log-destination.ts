// Where the server's log lines go: a file descriptor (stdout), written without ever blocking or failing
// the code that logs. A log is worth less than serving: when its disk is full, its pipe's reader is stuck
// or gone, or the descriptor is broken, lines are dropped (and counted), never retried in a loop, never
// waited for beyond a deadline. pino's default destination does the opposite on a full disk: its exit
// hook retries the failed write forever, so the process could neither answer nor stop.
//
// Lines queue up to a byte bound and are written in batches by one asynchronous write at a time (on
// libuv's thread pool, so a descriptor that blocks holds one pool thread, never the event loop). A batch
// smaller than the largest write waits a few milliseconds (LINGER_MS) for more lines first: requests
// answered one at a time (a client fetching a closure) otherwise each paid a write and a thread-pool
// hand-off for their access log line, a seventh of the server's CPU per small NAR download (profiled;
// docs/design.md, "Access logs"). A failed batch is dropped and writing pauses for a moment; the first
// write that succeeds afterwards says how many lines were lost and why.
import { write as fsWrite } from 'node:fs';

export interface LogDestinationOptions {
  /** Bytes of lines held while the descriptor is busy or failing; lines past it are dropped. */
  readonly maxQueuedBytes?: number;
  /** How long writing pauses after a failed write. */
  readonly retryAfterMs?: number;
  /**
   * Largest single write (default 64 KiB). Processes sharing the descriptor (the workers of `niche serve
   * --workers N` share stdout) write at most PIPE_BUF (4096 bytes on Linux) at a time: a pipe takes such a
   * write whole, so lines of different processes do not interleave mid-line (a single longer line is
   * written alone, and a pipe may split it).
   */
  readonly maxBatchBytes?: number;
  /** How long a line that finds the destination idle waits for others to batch with (default LINGER_MS). */
  readonly lingerMs?: number;
}

/** Bytes a pipe writes atomically (PIPE_BUF on Linux). */
export const PIPE_ATOMIC_BYTES = 4096;

/** Largest single write. */
const MAX_BATCH_BYTES = 64 * 1024;
/**
 * How long a line may wait to be written with others. A crash (kill -9) loses at most the lines of this
 * long; an orderly stop flushes them (flush()).
 */
export const LINGER_MS = 10;
/** EAGAIN (a non-blocking pipe is full) is not a failure: the batch is written again after this long. */
const BUSY_RETRY_MS = 10;

export class LogDestination {
  readonly #fd: number;
  readonly #maxQueuedBytes: number;
  readonly #retryAfterMs: number;
  readonly #maxBatchBytes: number;
  readonly #lingerMs: number;
  #queue: string[] = [];
  #queuedBytes = 0;
  /** The batch being written (what is left of it after partial writes). */
  #batch: Buffer | undefined;
  #batchLines = 0;
  /** Drops the batch reports (in its first line): counted again if the batch is lost too. */
  #batchReported = 0;
  #writing = false;
  #paused: NodeJS.Timeout | undefined;
  /** Set while the queue waits for more lines before its batch is written. */
  #lingering: NodeJS.Timeout | undefined;
  #dropped = 0;
  #droppedTotal = 0;
  #lastError: string | undefined;
  #idle: (() => void)[] = [];

  constructor(fd: number, options: LogDestinationOptions = {}) {
    this.#fd = fd;
    this.#maxQueuedBytes = options.maxQueuedBytes ?? 4 * 1024 * 1024;
    this.#retryAfterMs = options.retryAfterMs ?? 1_000;
    this.#maxBatchBytes = options.maxBatchBytes ?? MAX_BATCH_BYTES;
    this.#lingerMs = options.lingerMs ?? LINGER_MS;
  }

  /** Lines dropped since the start. */
  get dropped(): number {
    return this.#droppedTotal;
  }

  /** Queues `line` (pino hands over one serialized line at a time). Never throws, never blocks. */
  write(line: string): boolean {
    if (this.#queuedBytes + line.length > this.#maxQueuedBytes) {
      this.#drop(1, 'the log could not keep up');
      return true;
    }
    this.#queue.push(line);
    this.#queuedBytes += line.length;
    if (this.#lingering === undefined || this.#queuedBytes >= this.#maxBatchBytes) this.#next();
    return true;
  }

  readonly #endLinger = (): void => {
    this.#lingering = undefined;
    this.#next(true);
  };

  /** Resolves once every queued line was written or dropped, or after `timeoutMs`, whichever is first. */
  flush(timeoutMs: number): Promise<void> {
    if (this.#isIdle()) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.#idle = this.#idle.filter((waiter) => waiter !== done);
        resolve();
      }, timeoutMs);
      // Referenced: whoever flushes waits for it (a write paused after a failure does not hold the loop).
      this.#idle.push(done);
      // Nothing lingers while someone waits.
      this.#next(true);
    });
  }

  #isIdle(): boolean {
    return !this.#writing && this.#batch === undefined && this.#queue.length === 0;
  }

  #drop(lines: number, reason: string): void {
    this.#dropped += lines;
    this.#droppedTotal += lines;
    this.#lastError = reason;
  }

  /** Starts the next write, unless one is under way or writing is paused; `now`: without lingering. */
  #next(now = false): void {
    if (this.#writing || this.#paused !== undefined) return;
    if (this.#batch === undefined) {
      if (this.#queue.length === 0) {
        const waiters = this.#idle;
        this.#idle = [];
        for (const waiter of waiters) waiter();
        return;
      }
      const linger =
        !now && this.#lingerMs > 0 && this.#idle.length === 0 && this.#queuedBytes < this.#maxBatchBytes;
      if (linger) {
        // Referenced: a process that would otherwise exit now still writes the lines first.
        this.#lingering ??= setTimeout(this.#endLinger, this.#lingerMs);
        return;
      }
      clearTimeout(this.#lingering);
      this.#lingering = undefined;
      this.#batch = this.#takeBatch();
    }
    const batch = this.#batch;
    this.#writing = true;
    fsWrite(this.#fd, batch, 0, batch.length, null, (error, written) => {
      this.#writing = false;
      if (error === null) {
        this.#batch = written < batch.length ? batch.subarray(written) : undefined;
        this.#next();
      } else if (error.code === 'EAGAIN') {
        this.#pause(BUSY_RETRY_MS);
      } else {
        // The batch is lost (a full disk, a reader gone, a bad descriptor); later lines may fare better.
        const reported = this.#batchReported;
        this.#drop(this.#batchLines - (reported > 0 ? 1 : 0), error.code ?? error.message);
        this.#dropped += reported;
        this.#batch = undefined;
        this.#pause(this.#retryAfterMs);
      }
    });
  }

  #pause(ms: number): void {
    this.#paused = setTimeout(() => {
      this.#paused = undefined;
      this.#next();
    }, ms);
    // A log waiting to be written does not keep the process alive; flush() bounds the wait at exit.
    this.#paused.unref();
    // Nothing waits for the idle state while paused on a failure: flush() times out instead.
  }

  #takeBatch(): Buffer {
    const lines: string[] = [];
    let bytes = 0;
    this.#batchReported = this.#dropped;
    if (this.#dropped > 0) {
      lines.push(
        `${JSON.stringify({ level: 40, time: Date.now(), msg: `${this.#dropped} log lines were dropped (${this.#lastError ?? 'unknown'})` })}\n`,
      );
      this.#dropped = 0;
    }
    const queue = this.#queue;
    let taken = 0;
    for (; taken < queue.length; taken++) {
      const line = queue[taken] ?? '';
      const size = Buffer.byteLength(line);
      if (lines.length > 0 && bytes + size > this.#maxBatchBytes) break;
      this.#queuedBytes -= line.length;
      lines.push(line);
      bytes += size;
    }
    queue.splice(0, taken);
    this.#batchLines = lines.length;
    return Buffer.from(lines.join(''));
  }
}
