// The two servers under test, each a separate process on a loopback port: niche as deployed (`niche
// serve`, warn-level logs), and nginx with one worker, sendfile and tcp_nopush, serving the tree that
// `nix copy --to file://` wrote. Both expose the same shape: a base URL for Nix, a request-path prefix for
// wrk, a pid for memory readings, and `stop()`.

import { type ChildProcess, spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fakeBaseName, fixture, narInfoText } from '../test/helpers/nar-fixtures.js';
import { CommandError, log, run, stopChild, track } from './proc.js';

export interface RunningServer {
  readonly name: 'niche' | 'nginx';
  /** The binary cache URL Nix uses (no trailing slash). */
  readonly storeUrl: string;
  /** `http://127.0.0.1:port` for wrk. */
  readonly origin: string;
  /** Prefix of every cache file's request path ('' or '/main'). */
  readonly prefix: string;
  readonly pid: number;
  /** `performance.now()` when the process was spawned. */
  readonly spawnedAt: number;
  /** Every process serving requests (nginx, and niche with --workers: the master and its workers). */
  pids(): number[];
  stop(): Promise<void>;
}

/** `pid` and its direct children. */
function withChildren(pid: number): number[] {
  const children: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) children.push(Number(name));
    } catch {
      // exited meanwhile
    }
  }
  return [pid, ...children];
}

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => {
        resolve(port);
      });
    });
  });
}

/** Polls `url` until it answers 200, the child dies, or `timeoutMs` passes. */
async function waitReady(
  url: string,
  child: ChildProcess,
  logFile: string,
  timeoutMs = 60_000,
  pollMs = 100,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`server exited before answering ${url}; see ${logFile}`);
    }
    try {
      const response = await fetch(url);
      await response.arrayBuffer();
      if (response.status === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`no answer from ${url} after ${timeoutMs} ms; see ${logFile}`);
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}

function spawnLogged(
  cmd: string,
  args: readonly string[],
  logFile: string,
  cwd?: string,
  env?: NodeJS.ProcessEnv,
): ChildProcess {
  const fd = openSync(logFile, 'a');
  try {
    const child = spawn(cmd, args, {
      stdio: ['ignore', fd, fd],
      ...(cwd === undefined ? {} : { cwd }),
      ...(env === undefined ? {} : { env }),
    });
    track(child);
    return child;
  } finally {
    closeSync(fd);
  }
}

export interface NicheOptions {
  readonly repo: string;
  readonly dataDir: string;
  readonly logFile: string;
  /** Pass `--cpu-prof --cpu-prof-dir <dir>` to node. */
  readonly cpuProfDir?: string;
  /** Run this compiled `cli/main.js` (tsc output) instead of the sources through tsx. */
  readonly compiledMain?: string;
  /** Also serve the host's /nix/store at `/local` (`--local-store`). */
  readonly localStore?: boolean;
  /** Further `serve` arguments. */
  readonly args?: readonly string[];
  /** Further node arguments (before the entry point). */
  readonly nodeArgs?: readonly string[];
  /** The server's environment (default: the bench's). */
  readonly env?: NodeJS.ProcessEnv;
  /** How often to ask whether the server answers yet (default 100 ms; bench/scale.ts times start-up). */
  readonly readyPollMs?: number;
}

const NICHE_MAIN = 'src/cli/main.ts';

/**
 * Starts `niche serve` as its own process, as a deployment would: from a tsc build if given (the bench
 * always gives one), else from source via tsx.
 */
export async function startNiche(options: NicheOptions): Promise<RunningServer> {
  mkdirSync(options.dataDir, { recursive: true });
  const port = await freePort();
  const profile =
    options.cpuProfDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', options.cpuProfDir];
  const entry = options.compiledMain === undefined ? ['--import', 'tsx', NICHE_MAIN] : [options.compiledMain];
  const args = [
    ...profile,
    ...(options.nodeArgs ?? []),
    ...entry,
    'serve',
    '--data',
    options.dataDir,
    '--listen',
    `127.0.0.1:${port}`,
    '--log-level',
    'warn',
    ...(options.localStore === true ? ['--local-store'] : []),
    ...(options.args ?? []),
  ];
  const spawnedAt = performance.now();
  const child = spawnLogged(process.execPath, args, options.logFile, options.repo, options.env);
  const origin = `http://127.0.0.1:${port}`;
  try {
    await waitReady(`${origin}/main/nix-cache-info`, child, options.logFile, 60_000, options.readyPollMs);
  } catch (error) {
    await stopChild(child, 'SIGKILL');
    throw error;
  }
  return {
    name: 'niche',
    storeUrl: `${origin}/main`,
    origin,
    prefix: '/main',
    pid: child.pid ?? 0,
    spawnedAt,
    // With --workers N, the primary and its workers.
    pids: () => withChildren(child.pid ?? 0),
    // SIGINT is `niche serve`'s graceful stop; it lets --cpu-prof write its profile.
    stop: () => stopChild(child, 'SIGINT', 30_000),
  };
}

/**
 * Compiles src with tsc into `build`, to run niche as a deployment does (bin/niche.js runs dist/): under
 * tsx it would start slower and hold about 30 MiB more (the transpiled sources and their maps).
 */
export async function buildNiche(repo: string, build: string): Promise<string> {
  rmSync(build, { recursive: true, force: true });
  const main = join(build, 'cli', 'main.js');
  try {
    await run(process.execPath, [
      join(repo, 'node_modules', 'typescript', 'bin', 'tsc'),
      '-p',
      join(repo, 'tsconfig.build.json'),
      '--outDir',
      build,
    ]);
  } catch (error) {
    // Others may be mid-edit in src/: tsc still emits, and the measurements are still useful.
    if (!(error instanceof CommandError) || !existsSync(main)) throw error;
    log('  tsc reported type errors in src/; measuring its output anyway');
  }
  return main;
}

/** `niche token create --cache main --push`: a push token for the data directory. */
export async function createPushToken(repo: string, dataDir: string): Promise<string> {
  const { stdout } = await run(
    process.execPath,
    ['--import', 'tsx', NICHE_MAIN, 'token', 'create', '--cache', 'main', '--push', '--data', dataDir],
    { cwd: repo },
  );
  const token = stdout.trim();
  if (token === '' || token.includes('\n'))
    throw new Error(`unexpected token output: ${JSON.stringify(stdout)}`);
  return token;
}

export interface NginxOptions {
  /** The directory `nix copy --to file://` wrote. */
  readonly root: string;
  /** A private directory for the config, pid, logs and temp files. */
  readonly dir: string;
}

/** The nginx.conf used: one worker, sendfile, tcp_nopush, no access log, everything under `dir`. */
export function nginxConfig(options: NginxOptions, port: number): string {
  const dir = options.dir;
  // nginx drops to `nobody` for its worker when started as root; the trees live in a 0700 temp dir.
  const user = process.getuid?.() === 0 ? 'user root;\n' : '';
  return `# Generated by bench/servers.ts.
${user}worker_processes 1;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'error.log')} warn;
events {
  worker_connections 4096;
}
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  # niche keeps idle keep-alive connections without a request limit; so does this nginx (default: 1000).
  keepalive_requests 1000000;
  client_body_temp_path ${join(dir, 'body')};
  proxy_temp_path ${join(dir, 'proxy')};
  fastcgi_temp_path ${join(dir, 'fastcgi')};
  uwsgi_temp_path ${join(dir, 'uwsgi')};
  scgi_temp_path ${join(dir, 'scgi')};
  types {
    text/x-nix-narinfo narinfo;
    text/x-nix-cache-info nix-cache-info;
  }
  default_type application/x-nix-nar;
  server {
    listen 127.0.0.1:${port};
    root ${options.root};
  }
}
`;
}

export async function startNginx(options: NginxOptions): Promise<RunningServer> {
  mkdirSync(options.dir, { recursive: true });
  const port = await freePort();
  const conf = join(options.dir, 'nginx.conf');
  writeFileSync(conf, nginxConfig(options, port));
  const logFile = join(options.dir, 'stderr.log');
  const spawnedAt = performance.now();
  const child = spawnLogged(
    'nginx',
    ['-p', options.dir, '-e', join(options.dir, 'error.log'), '-c', conf, '-g', 'daemon off;'],
    logFile,
  );
  const origin = `http://127.0.0.1:${port}`;
  try {
    await waitReady(`${origin}/nix-cache-info`, child, logFile);
  } catch (error) {
    await stopChild(child, 'SIGKILL');
    throw error;
  }
  return {
    name: 'nginx',
    storeUrl: origin,
    origin,
    prefix: '',
    pid: child.pid ?? 0,
    spawnedAt,
    pids: () => withChildren(child.pid ?? 0),
    stop: () => stopChild(child, 'SIGQUIT'),
  };
}

/** PUTs a cache file (`/main/nar/…`, `/main/<hash>.narinfo`) with a push token; throws unless 2xx. */
export function pusher(
  origin: string,
  token: string,
): (path: string, body: Buffer | string) => Promise<void> {
  const authorization = `Basic ${Buffer.from(`niche:${token}`).toString('base64')}`;
  return async (path, body) => {
    const response = await fetch(`${origin}${path}`, { method: 'PUT', body, headers: { authorization } });
    const text = await response.text();
    if (response.status >= 300) throw new Error(`PUT ${path}: ${response.status} ${text}`);
  };
}

/**
 * Pushes `count` tiny paths (`<tag>-<i>`, NAR uncompressed) to the cache `main` through the HTTP API a Nix
 * client uses; returns their narinfo request paths.
 */
export async function pushSmallPaths(
  origin: string,
  token: string,
  count: number,
  tag: string,
): Promise<string[]> {
  const put = pusher(origin, token);
  const narinfos: string[] = [];
  for (let i = 0; i < count; i++) {
    const fx = await fixture(`path ${i}\n`, 'none');
    const base = fakeBaseName(`${tag}-${i}`);
    await put(`/main/nar/${fx.fileName}`, fx.file);
    await put(`/main/${base.slice(0, 32)}.narinfo`, narInfoText(base, fx));
    narinfos.push(`/main/${base.slice(0, 32)}.narinfo`);
  }
  return narinfos;
}
