// Load generation with wrk: bench/paths.lua cycles through a list of request paths (so every request
// of a narinfo run asks for a different file) and prints its totals as one JSON line, parsed here. A run
// is refused if its responses are not what the scenario expects (all 2xx for hits, all 404 for misses),
// so a misconfigured server cannot produce a flattering number.

import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { spawn } from 'node:child_process';
import { run, track } from './proc.js';

const SCRIPT = fileURLToPath(new URL('paths.lua', import.meta.url));

export interface WrkResult {
  readonly requests: number;
  readonly bytes: number;
  readonly seconds: number;
  readonly requestsPerSecond: number;
  /** 10^6 bytes per second. */
  readonly megabytesPerSecond: number;
  readonly latencyMs: {
    readonly p50: number;
    readonly p90: number;
    readonly p99: number;
    readonly mean: number;
    readonly max: number;
  };
  readonly errors: {
    readonly connect: number;
    readonly read: number;
    readonly write: number;
    readonly status: number;
    readonly timeout: number;
  };
}

interface WrkJson {
  requests: number;
  bytes: number;
  durationUs: number;
  errors: WrkResult['errors'];
  latencyUs: { p50: number; p90: number; p99: number; mean: number; max: number };
}

export interface WrkOptions {
  /** `http://127.0.0.1:port`. */
  readonly origin: string;
  /** File with one request path per line. */
  readonly pathsFile: string;
  readonly connections: number;
  readonly threads: number;
  readonly seconds: number;
  /** Per-request timeout (wrk's default of 2 s is too short for a 1 GiB NAR). */
  readonly timeoutSeconds?: number;
  /** Run wrk on this CPU only (`taskset -c`). */
  readonly cpu?: number;
  /** What every response must be: 2xx (`ok`) or non-2xx/3xx, i.e. the 404s of a miss (`error`). */
  readonly expect: 'ok' | 'error';
  /** An unmeasured warm-up run: completing no request is allowed. */
  readonly warmup?: boolean;
  /** Requests that time out are counted (errors.timeout), not a failed run. */
  readonly tolerateTimeouts?: boolean;
}

/** Writes a paths file for wrk. */
export function writePaths(file: string, paths: readonly string[]): string {
  writeFileSync(file, paths.join('\n') + '\n');
  return file;
}

function wrkArgs(options: WrkOptions): string[] {
  const threads = Math.min(options.threads, options.connections);
  return [
    '-t',
    String(threads),
    '-c',
    String(options.connections),
    '-d',
    `${options.seconds}s`,
    '--timeout',
    `${options.timeoutSeconds ?? 10}s`,
    '-s',
    SCRIPT,
    options.origin,
    '--',
    options.pathsFile,
  ];
}

export async function runWrk(options: WrkOptions): Promise<WrkResult> {
  const args = wrkArgs(options);
  const { stdout } =
    options.cpu === undefined
      ? await run('wrk', args)
      : await run('taskset', ['-c', String(options.cpu), 'wrk', ...args]);
  return parseWrk(stdout, options, args);
}

export interface OpenWrk {
  /** Stops wrk (SIGINT: it prints its totals for the time it ran) and returns them. */
  stop(): Promise<WrkResult>;
}

/**
 * Starts wrk for `options.seconds` at most, to be stopped when something else ends (a GC run): wrk
 * answers SIGINT by finishing as if its duration were over.
 */
export function startWrk(options: WrkOptions): OpenWrk {
  const args = wrkArgs(options);
  const child =
    options.cpu === undefined
      ? spawn('wrk', args, { stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn('taskset', ['-c', String(options.cpu), 'wrk', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  track(child);
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
  child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
  const exited = new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', () => {
      resolve();
    });
  });
  return {
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
      await exited;
      const stdout = Buffer.concat(out).toString('utf8');
      if (!stdout.includes('WRK_JSON ')) {
        throw new Error(`wrk printed no result:\n${stdout}\n${Buffer.concat(err).toString('utf8')}`);
      }
      return parseWrk(stdout, options, args);
    },
  };
}

function parseWrk(stdout: string, options: WrkOptions, args: readonly string[]): WrkResult {
  const line = stdout.split('\n').find((l) => l.startsWith('WRK_JSON '));
  if (line === undefined) throw new Error(`wrk printed no result:\n${stdout}`);
  const json = JSON.parse(line.slice('WRK_JSON '.length)) as WrkJson;
  const seconds = json.durationUs / 1e6;
  const result: WrkResult = {
    requests: json.requests,
    bytes: json.bytes,
    seconds,
    requestsPerSecond: json.requests / seconds,
    megabytesPerSecond: json.bytes / seconds / 1e6,
    latencyMs: {
      p50: json.latencyUs.p50 / 1000,
      p90: json.latencyUs.p90 / 1000,
      p99: json.latencyUs.p99 / 1000,
      mean: json.latencyUs.mean / 1000,
      max: json.latencyUs.max / 1000,
    },
    errors: json.errors,
  };
  const { connect, read, write, status, timeout } = result.errors;
  const transport = connect + read + write + (options.tolerateTimeouts === true ? 0 : timeout);
  const badStatus = options.expect === 'ok' ? status > 0 : status !== result.requests;
  // A warm-up shorter than one large download may complete no request; that is fine.
  if (transport > 0 || badStatus || (result.requests === 0 && options.warmup !== true)) {
    throw new Error(
      `wrk ${args.join(' ')}: unexpected responses (expected ${options.expect === 'ok' ? 'all 2xx' : 'all 404'}): ` +
        `${result.requests} requests, errors ${JSON.stringify(result.errors)}`,
    );
  }
  return result;
}
