// The niche server under fuzz: `niche serve` in its own process (so its memory and event loop are its
// own), with loop-monitor.ts preloaded and an IPC channel to ask it how long its loop was blocked. Peak
// memory is read from outside, from the kernel's high-water mark of the process (VmHWM), which also sees
// peaks between two samples.
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { runCli, startServe, type ServeProcess } from '../helpers/cli-process.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';
import type { LoopStats } from './loop-monitor.js';

const MONITOR = pathToFileURL(new URL('./loop-monitor.ts', import.meta.url).pathname).href;

export interface ProcessHealth {
  readonly alive: boolean;
  /** Longest event-loop stall since the last call, less time the loop waited for a CPU, ms. */
  readonly maxBlockedMs: number;
  /** Longest event-loop stall since the last call on the clock, ms. */
  readonly maxStallMs: number;
  readonly rssBytes: number;
  /** Peak RSS since the process started. */
  readonly peakRssBytes: number;
}

export interface FuzzServer {
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  readonly pushToken: string;
  readonly publicKey: string;
  /** The loop figures cover the time since the last call. */
  health(): Promise<ProcessHealth>;
  stderr(): string;
  stop(): Promise<void>;
}

function statusField(pid: number, field: string): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status);
  if (match?.[1] === undefined) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}

function askLoopStats(server: ServeProcess, timeoutMs: number): Promise<LoopStats> {
  const { child } = server;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.off('message', onMessage);
      reject(new Error(`the server did not report its event loop within ${timeoutMs} ms`));
    }, timeoutMs);
    const onMessage = (message: unknown): void => {
      clearTimeout(timer);
      resolve(message as LoopStats);
    };
    child.once('message', onMessage);
    child.send('loop-stats');
  });
}

export async function startFuzzServer(args: readonly string[]): Promise<FuzzServer> {
  const dir: TempDir = await makeTempDir('fuzz');
  const server = await startServe({
    dataDir: dir.path,
    args,
    logLevel: 'error',
    nodeArgs: ['--import', MONITOR],
    ipc: true,
  });
  const pid = server.child.pid;
  if (pid === undefined) throw new Error('the server has no pid');
  const stop = async (): Promise<void> => {
    await server.stop();
    await dir.cleanup();
  };
  try {
    const created = await runCli(['token', 'create', '--cache', 'main', '--push', '--data', dir.path]);
    if (created.code !== 0) throw new Error(`token create failed: ${created.stderr}`);
    const response = await fetch(`${server.url}/api/v1/caches/main`);
    const info = (await response.json()) as { publicKeys: string[] };
    const publicKey = info.publicKeys[0];
    if (publicKey === undefined) throw new Error('the cache has no public key');
    let exited = false;
    void server.exited.then(() => (exited = true));
    return {
      url: server.url,
      port: server.port,
      pid,
      pushToken: created.stdout.trim(),
      publicKey,
      async health() {
        if (exited) return { alive: false, maxBlockedMs: 0, maxStallMs: 0, rssBytes: 0, peakRssBytes: 0 };
        const stats = await askLoopStats(server, 30_000);
        return {
          alive: true,
          maxBlockedMs: stats.maxBlockedMs,
          maxStallMs: stats.maxStallMs,
          rssBytes: statusField(pid, 'VmRSS'),
          peakRssBytes: statusField(pid, 'VmHWM'),
        };
      },
      stderr: () => server.stderr(),
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
