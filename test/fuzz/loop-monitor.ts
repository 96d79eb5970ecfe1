// Preloaded (`--import`) into the niche server under fuzz, never part of niche itself: measures, from
// inside the server process, the longest time its event loop could not run a callback, and answers the
// test over the IPC channel.
//
// A timer ticks every TICK_MS; a tick that comes late shows a stall. On a loaded machine (CI shares two
// cores) part of a stall is time the kernel ran other processes while the loop thread was ready to run;
// Linux counts that time per thread (the second field of /proc/<pid>/task/<tid>/schedstat), and it is
// subtracted: what remains is time the loop thread spent running niche's code (or GC), or blocked in a
// system call, which is what "the event loop was blocked" means. Both figures are reported.
import { readFileSync } from 'node:fs';
import process from 'node:process';

const TICK_MS = 10;
/** The main thread's id is the process id. */
const SCHEDSTAT = `/proc/self/task/${process.pid}/schedstat`;

export interface LoopStats {
  /** The longest stall of the event loop since the last report, less time spent waiting for a CPU, in ms. */
  readonly maxBlockedMs: number;
  /** The longest stall as seen on the clock, in ms. */
  readonly maxStallMs: number;
}

/** Nanoseconds the main thread has spent ready to run but waiting for a CPU; undefined if not known. */
function runQueueWaitNs(): bigint | undefined {
  try {
    const field = readFileSync(SCHEDSTAT, 'latin1').split(' ')[1];
    return field === undefined ? undefined : BigInt(field);
  } catch {
    return undefined;
  }
}

let maxBlockedMs = 0;
let maxStallMs = 0;
let lastTick = process.hrtime.bigint();
let lastWait = runQueueWaitNs();

setInterval(() => {
  const now = process.hrtime.bigint();
  const wait = runQueueWaitNs();
  const stallMs = Number(now - lastTick) / 1e6 - TICK_MS;
  const waitedMs = wait === undefined || lastWait === undefined ? 0 : Number(wait - lastWait) / 1e6;
  maxStallMs = Math.max(maxStallMs, stallMs);
  maxBlockedMs = Math.max(maxBlockedMs, stallMs - waitedMs);
  lastTick = now;
  lastWait = wait;
}, TICK_MS).unref();

process.on('message', (message: unknown) => {
  if (message !== 'loop-stats') return;
  const stats: LoopStats = { maxBlockedMs, maxStallMs };
  maxBlockedMs = 0;
  maxStallMs = 0;
  process.send?.(stats);
});
