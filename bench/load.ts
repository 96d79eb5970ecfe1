// Background load: the benchmark shares its 2 cores with whatever else runs on the machine (on a shared
// development box, other people's test suites). Each measurement records how much CPU processes outside
// the benchmark's own process tree used while it ran, and a measurement can wait for a quiet moment
// first. "Ours" is this process and its descendants; CPU of exited children is in the cutime/cstime of
// whoever reaped them, so short-lived processes are counted too.

import { readdirSync, readFileSync } from 'node:fs';
import { log } from './proc.js';

/** Clock ticks per second of /proc (USER_HZ, 100 on every mainstream Linux). */
const HZ = 100;

interface ProcessTimes {
  readonly ppid: number;
  /** utime + stime + cutime + cstime, in ticks. */
  readonly ticks: number;
}

function processTable(): Map<number, ProcessTimes> {
  const table = new Map<number, ProcessTimes>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let text: string;
    try {
      text = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    // Fields after the command name, which is in parentheses and may contain anything.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    const at = (index: number): number => Number(fields[index] ?? 0);
    // fields[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14-17.
    table.set(Number(name), { ppid: at(1), ticks: at(11) + at(12) + at(13) + at(14) });
  }
  return table;
}

/** Ticks used by this process and its live descendants. */
function ourTicks(table: Map<number, ProcessTimes>): number {
  const children = new Map<number, number[]>();
  for (const [pid, entry] of table) {
    const list = children.get(entry.ppid) ?? [];
    list.push(pid);
    children.set(entry.ppid, list);
  }
  let total = 0;
  const queue = [process.pid];
  for (let pid = queue.pop(); pid !== undefined; pid = queue.pop()) {
    total += table.get(pid)?.ticks ?? 0;
    queue.push(...(children.get(pid) ?? []));
  }
  return total;
}

/** CPU seconds (user + system, all threads) the given processes have used so far. */
export function cpuSecondsOf(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11] ?? 0) + Number(fields[12] ?? 0);
    } catch {
      // exited
    }
  }
  return ticks / HZ;
}

/** Busy ticks of the whole machine (all CPUs), from /proc/stat. */
function machineBusyTicks(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const [, user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).map(Number);
  return (user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0);
}

interface Snapshot {
  readonly at: number;
  readonly busy: number;
  readonly ours: number;
}

function snapshot(): Snapshot {
  const busy = machineBusyTicks();
  const ours = ourTicks(processTable());
  return { at: performance.now(), busy, ours };
}

/** CPU (in cores) used by other processes between two snapshots. */
function otherCores(from: Snapshot, to: Snapshot): number {
  const seconds = (to.at - from.at) / 1000;
  if (seconds <= 0) return 0;
  const other = to.busy - from.busy - (to.ours - from.ours);
  return Math.max(0, other / HZ / seconds);
}

/** Measures the other processes' CPU while `work` runs. */
export async function withLoad<T>(work: () => Promise<T>): Promise<{ value: T; otherCores: number }> {
  const from = snapshot();
  const value = await work();
  return { value, otherCores: otherCores(from, snapshot()) };
}

export interface QuietOptions {
  /** Other processes may use at most this many cores. */
  readonly maxOtherCores: number;
  /** Give up waiting after this many seconds (0: never wait). */
  readonly maxWaitS: number;
}

/** Waits (in 1 s samples) until other processes are using less than `maxOtherCores`, or the time is up. */
export async function waitForQuiet(options: QuietOptions): Promise<void> {
  if (options.maxWaitS <= 0) return;
  const deadline = performance.now() + options.maxWaitS * 1000;
  let announced = false;
  for (;;) {
    const from = snapshot();
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const other = otherCores(from, snapshot());
    if (other <= options.maxOtherCores) {
      if (announced) log(`  quiet again (${other.toFixed(2)} cores used by other processes)`);
      return;
    }
    if (performance.now() > deadline) {
      log(`  other processes still use ${other.toFixed(2)} cores; measuring anyway`);
      return;
    }
    if (!announced) {
      log(
        `  other processes use ${other.toFixed(2)} cores; waiting up to ${options.maxWaitS} s for a quiet moment`,
      );
      announced = true;
    }
  }
}
