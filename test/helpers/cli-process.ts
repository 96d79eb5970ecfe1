// Runs the `niche` CLI as a real child process (from source, through tsx), for tests that need what an
// in-process server cannot show: exit codes, stdout/stderr, signals, and a process that can be killed -9.
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { PassThrough, Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { main } from '../../src/cli/main.js';
import { nixBinDir, onClientMachine, type NixVersion } from './nix.js';
import { waitFor } from './wait.js';

/** The repository root, found from this file's location (test/helpers/ → ../..). */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI_ENTRY = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

/** The parent's environment without NICHE_* settings, so only what a test passes reaches the CLI. */
function cliEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('NICHE_')));
  return { ...env, ...extra };
}

interface SpawnOptions {
  readonly env?: NodeJS.ProcessEnv | undefined;
  /** Node options before the entry point, e.g. `--import` of a test-only module. */
  readonly nodeArgs?: readonly string[] | undefined;
  /** Open an IPC channel to the child (`child.send`, `process.send` there). */
  readonly ipc?: boolean | undefined;
  /** A descriptor the child writes its stdout and stderr to, instead of pipes to this process. */
  readonly output?: number | undefined;
  /** Rewrites the command line, e.g. to run it in another mount namespace (test/helpers/nix.ts). */
  readonly wrap?: ((program: string, args: readonly string[]) => [string, string[]]) | undefined;
  /** A pipe for stdin instead of none. */
  readonly stdin?: boolean | undefined;
}

function spawnCli(args: readonly string[], options: SpawnOptions = {}): ChildProcess {
  const argv = ['--import', 'tsx', ...(options.nodeArgs ?? []), CLI_ENTRY, ...args];
  const [program, programArgs] = options.wrap?.(process.execPath, argv) ?? [process.execPath, argv];
  return spawn(program, programArgs, {
    cwd: REPO_ROOT,
    env: cliEnv(options.env),
    stdio: [
      options.stdin === true ? 'pipe' : 'ignore',
      options.output ?? 'pipe',
      options.output ?? 'pipe',
      ...(options.ipc === true ? (['ipc'] as const) : []),
    ],
  });
}

export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs one CLI command to completion (killed after `timeoutMs`). */
export function runCli(
  args: readonly string[],
  options: {
    env?: NodeJS.ProcessEnv;
    timeoutMs?: number;
    wrap?: SpawnOptions['wrap'];
    /** Written to the command's stdin (which is closed otherwise). */
    input?: string;
  } = {},
): Promise<CliResult> {
  const child = spawnCli(args, { env: options.env, wrap: options.wrap, stdin: options.input !== undefined });
  child.stdin?.end(options.input);
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  child.stdout?.on('data', (chunk: Buffer) => stdout.push(chunk));
  child.stderr?.on('data', (chunk: Buffer) => stderr.push(chunk));
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 30_000);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(stdout).toString('utf8'),
        stderr: Buffer.concat(stderr).toString('utf8'),
      });
    });
  });
}

/** Runs one CLI command in-process through main(), with `env` as its whole environment. */
export async function runMain(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  stdin?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
  stderr.on('data', (chunk: Buffer) => (err += chunk.toString('utf8')));
  const io = { stdout, stderr, env, ...(stdin === undefined ? {} : { stdin: Readable.from([stdin]) }) };
  const code = await main(args, io);
  return { code, stdout: out, stderr: err };
}

/** Commands that read the local store's files or database themselves, not only through `nix`. */
const READS_STORE: ReadonlySet<string | undefined> = new Set(['push', 'watch-store']);

/**
 * Runs one CLI command as on a machine whose Nix is `version` (test/helpers/nix.ts): in-process, with that
 * Nix's `nix` first on PATH; for 2.26, commands that read the store themselves run as a child process
 * that sees the 2.26 client's /nix.
 */
export async function runNicheOn(
  version: NixVersion,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  stdin?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const bin = nixBinDir(version, env.HOME ?? tmpdir());
  const withNix = bin === undefined ? env : { ...env, PATH: `${bin}:${env.PATH ?? process.env.PATH ?? ''}` };
  if (version === '2.8' || !READS_STORE.has(args[0])) return runMain(args, withNix, stdin);
  const result = await runCli(args, {
    env: withNix,
    wrap: (program, programArgs) => onClientMachine(version, program, programArgs),
    timeoutMs: 120_000,
    ...(stdin === undefined ? {} : { input: stdin }),
  });
  return { code: result.code ?? -1, stdout: result.stdout, stderr: result.stderr };
}

/** A loopback port that was free a moment ago (bound to port 0, then released). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const address = server.address();
  await new Promise<void>((resolve) => {
    server.close(() => {
      resolve();
    });
  });
  if (address === null || typeof address === 'string') throw new Error('no port from a TCP server');
  return address.port;
}

export interface ServeExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface ServeProcess {
  readonly child: ChildProcess;
  readonly port: number;
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  readonly dataDir: string;
  /** Everything the process wrote so far. */
  stdout(): string;
  stderr(): string;
  /** Settles when the process has exited (never rejects). */
  readonly exited: Promise<ServeExit>;
  /** Resolves once `nix-cache-info` of the default cache answers 200; rejects if the process exits first. */
  ready(timeoutMs?: number): Promise<void>;
  /** Resolves once stderr matches `pattern`; rejects if the process exits first. */
  waitForStderr(pattern: RegExp, timeoutMs?: number): Promise<void>;
  /** Resolves with the exit once the process has exited; rejects if it is still running after `timeoutMs`. */
  exitWithin(timeoutMs: number): Promise<ServeExit>;
  /** Kills the process with SIGKILL unless it has exited, and waits for the exit. */
  stop(): Promise<ServeExit>;
}

export interface ServeOptions {
  readonly dataDir: string;
  /** A free port is picked if absent. */
  readonly port?: number;
  /** Further `serve` arguments. */
  readonly args?: readonly string[];
  readonly logLevel?: string;
  readonly env?: NodeJS.ProcessEnv;
  /** As for spawnCli: Node options before the entry point. */
  readonly nodeArgs?: readonly string[];
  /** Open an IPC channel to the server process. */
  readonly ipc?: boolean;
  /** Pass `--data dataDir` (default); false when the data directory comes from a config file. */
  readonly dataFlag?: boolean;
  /** As for spawnCli: where stdout and stderr go instead of this process (stdout() and stderr() stay ''). */
  readonly output?: number;
}

/** Starts `niche serve` as a child process; does not wait for it to listen (see `ready`). */
export async function spawnServe(options: ServeOptions): Promise<ServeProcess> {
  const port = options.port ?? (await freePort());
  const child = spawnCli(
    [
      'serve',
      ...(options.dataFlag === false ? [] : ['--data', options.dataDir]),
      '--listen',
      `127.0.0.1:${port}`,
      '--log-level',
      options.logLevel ?? 'warn',
      ...(options.args ?? []),
    ],
    { env: options.env, nodeArgs: options.nodeArgs, ipc: options.ipc, output: options.output },
  );
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8').on('data', (text: string) => (out += text));
  child.stderr?.setEncoding('utf8').on('data', (text: string) => (err += text));
  let exit: ServeExit | undefined;
  const exited = new Promise<ServeExit>((resolve) => {
    child.once('exit', (code, signal) => {
      exit = { code, signal };
      resolve(exit);
    });
    child.once('error', () => {
      exit ??= { code: null, signal: null };
      resolve(exit);
    });
  });
  const url = `http://127.0.0.1:${port}`;
  const failFast = async <T>(
    check: () => T | undefined | false | Promise<T | undefined | false>,
    what: string,
    timeoutMs: number,
  ): Promise<T> => {
    // An early exit is final: stop polling at once and report it with what the process said.
    const abort = new AbortController();
    const onExit = (e: ServeExit): void => {
      abort.abort(
        new Error(
          `niche serve exited (${JSON.stringify(e)}) while waiting for ${what}; stderr:\n${err}\nstdout:\n${out}`,
        ),
      );
    };
    void exited.then(onExit);
    return waitFor(check, { what, timeoutMs, signal: abort.signal });
  };
  return {
    child,
    port,
    url,
    dataDir: options.dataDir,
    stdout: () => out,
    stderr: () => err,
    exited,
    async ready(timeoutMs = 30_000) {
      await failFast(
        async () => (await fetch(`${url}/main/nix-cache-info`)).status === 200,
        `niche serve to answer on ${url}`,
        timeoutMs,
      );
    },
    async waitForStderr(pattern, timeoutMs = 30_000) {
      await failFast(() => pattern.test(err), `stderr to match ${pattern}`, timeoutMs);
    },
    exitWithin(timeoutMs) {
      return waitFor(() => exit, { what: 'niche serve to exit', timeoutMs });
    },
    async stop() {
      if (exit === undefined) child.kill('SIGKILL');
      return exited;
    },
  };
}

/** `spawnServe`, then waits until it answers. The process is killed if it does not come up. */
export async function startServe(options: ServeOptions): Promise<ServeProcess> {
  const server = await spawnServe(options);
  try {
    await server.ready();
  } catch (error) {
    await server.stop();
    throw error;
  }
  return server;
}

/** A line of a server's access log (src/http/access-log.ts) as it writes it to stdout. */
export interface AccessLine {
  readonly pid: number;
  readonly method: string;
  readonly url: string;
  readonly status: number;
}

/** The access log lines `server` wrote to its stdout so far, parsed. */
export function accessLines(server: ServeProcess): AccessLine[] {
  return server
    .stdout()
    .split('\n')
    .filter((line) => line.includes('"msg":"request"'))
    .map((line) => JSON.parse(line) as AccessLine);
}

/**
 * The access log lines `server` wrote after its first `skip` that `which` accepts, once there are at least
 * `count` of them: lines reach stdout in batches, within about 10 ms of their request
 * (src/util/log-destination.ts), so a test that counts them right after its requests must wait.
 */
export function waitForAccessLines(
  server: ServeProcess,
  count: number,
  which: (line: AccessLine) => boolean = () => true,
  skip = 0,
): Promise<AccessLine[]> {
  return waitFor(
    () => {
      const lines = accessLines(server).slice(skip).filter(which);
      return lines.length >= count && lines;
    },
    { what: `${count} access log lines` },
  );
}
