// Lowers the CPU priority of the calling thread only, for background work that shares a process (or a
// machine) with work that answers requests: garbage collection, in a child process of `niche serve` or on
// a thread of `niche gc` (src/app/isolated-gc.ts). On Linux the nice value belongs to each thread, and setpriority(2)
// accepts a thread's id where it takes a process id; /proc/thread-self names the caller's. Elsewhere, or
// if the kernel refuses, nothing changes. A lower priority only matters when the cores are busy: then the
// server's threads win, and the background thread gets a small share instead of an equal one.
import { readlinkSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';

/** Sets the calling thread's nice value to at least `niceness`; returns the thread's id, or undefined. */
export function lowerThreadPriority(niceness: number): number | undefined {
  try {
    // "<pid>/task/<tid>"
    const tid = Number(readlinkSync('/proc/thread-self').split('/').at(-1));
    if (!Number.isSafeInteger(tid) || tid <= 0) return undefined;
    if (getPriority(tid) < niceness) setPriority(tid, niceness);
    return tid;
  } catch {
    return undefined;
  }
}
