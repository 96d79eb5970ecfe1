// Child processes for the benchmark: run a command to completion (output captured, shown only on failure),
// and keep track of long-running children so that every exit path, Ctrl-C included, stops them.

import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

export class CommandError extends Error {
  constructor(
    message: string,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(message);
    this.name = 'CommandError';
  }
}

export interface RunOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
}

export interface RunResult {
  readonly stdout: string;
  readonly stderr: string;
  /** Wall time from spawn to exit. */
  readonly seconds: number;
}

/** Runs `cmd args…`; resolves on exit code 0, rejects with the tail of stderr otherwise. */
export function run(cmd: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(cmd, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(options.env === undefined ? {} : { env: options.env }),
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const seconds = (performance.now() - started) / 1000;
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      if (code === 0) {
        resolve({ stdout, stderr, seconds });
        return;
      }
      const status = signal === null ? `exit code ${code}` : `signal ${signal}`;
      const shown = [cmd, ...args].join(' ');
      const tail = stderr.trim().split('\n').slice(-15).join('\n');
      reject(new CommandError(`${shown.slice(0, 300)} failed with ${status}:\n${tail}`, stdout, stderr));
    });
  });
}

/** Whether `cmd` can be started. */
export async function available(cmd: string, args: readonly string[] = ['--version']): Promise<boolean> {
  try {
    await run(cmd, args);
    return true;
  } catch {
    return false;
  }
}

const children = new Set<ChildProcess>();

/** Registers a long-running child so that `killAll` stops it. */
export function track(child: ChildProcess): void {
  children.add(child);
  child.once('exit', () => children.delete(child));
}

/** SIGKILLs every tracked child that is still running (last-resort clean-up). */
export function killAll(): void {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  children.clear();
}

/** Stops a child with `signal`, then SIGKILL after `graceMs`; resolves once it has exited. */
export async function stopChild(
  child: ChildProcess,
  signal: NodeJS.Signals,
  graceMs = 15_000,
): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      resolve();
    }),
  );
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/** Restricts every thread of these processes to `cpus` (a taskset list such as `0` or `0-1`). */
export async function setAffinity(pids: readonly number[], cpus: string): Promise<void> {
  for (const pid of pids) await run('taskset', ['--all-tasks', '--pid', '--cpu-list', cpus, String(pid)]);
}

/** Resident set size now and its high-water mark, in bytes, from /proc/<pid>/status. */
export function memoryOf(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): number => {
    const match = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status);
    if (match?.[1] === undefined) throw new Error(`no ${name} in /proc/${pid}/status`);
    return Number(match[1]) * 1024;
  };
  return { rss: field('VmRSS'), hwm: field('VmHWM') };
}

/** Formats a duration for progress lines. */
export function elapsed(sinceMs: number): string {
  return `${((performance.now() - sinceMs) / 1000).toFixed(1)} s`;
}

export function log(message: string): void {
  const time = new Date().toISOString().slice(11, 19);
  process.stderr.write(`[bench ${time}] ${message}\n`);
}

/**
 * Runs a benchmark's `main`: Ctrl-C or a failure stops every process it started (exit 130 or 1), so no
 * server or wrk outlives it.
 */
export function runBench(main: () => Promise<void>): void {
  process.once('SIGINT', () => {
    killAll();
    process.exit(130);
  });
  main().catch((error: unknown) => {
    killAll();
    console.error(error);
    process.exit(1);
  });
}
