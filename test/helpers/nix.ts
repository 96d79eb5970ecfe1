// Runs the real `nix` binaries for tests that compare niche with Nix itself. Each run gets an isolated
// HOME/XDG tree (so no user config, no shared SQLite cache), single-user settings that work as root
// without a daemon or sandbox, and no substituters (so nothing touches the network).
//
// Two clients: "2.8" is the machine's Nix (the host's /nix/store); "2.26" is Debian 13's Nix, run with
// `modern-nix run` (../shared/tools/modern-nix from the checkout, or $MODERN_NIX) in a chroot that has a
// /nix/store of its own and shares the host's /tmp and network. Everything both sides must see (HOME,
// netrc, keys, Nix expressions) lives under /tmp; a store path's files are found with `nixStoreFile`.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The Nix clients the tests run against. */
export type NixVersion = '2.8' | '2.26';
export const NIX_VERSIONS: readonly NixVersion[] = ['2.8', '2.26'];

/**
 * The versions this run tests: all of them, or those listed in NICHE_TEST_NIX_VERSIONS (comma-separated,
 * e.g. `2.8`; .ci/run runs the 2.26 leg once, with Node 20, not again with Node 24).
 */
export function nixVersionsUnderTest(): readonly NixVersion[] {
  const listed = process.env.NICHE_TEST_NIX_VERSIONS;
  if (listed === undefined || listed.trim() === '') return NIX_VERSIONS;
  const wanted = listed.split(',').map((version) => version.trim());
  for (const version of wanted) {
    if (!NIX_VERSIONS.includes(version as NixVersion)) {
      throw new Error(
        `NICHE_TEST_NIX_VERSIONS: unknown Nix version ${version} (known: ${NIX_VERSIONS.join(', ')})`,
      );
    }
  }
  return NIX_VERSIONS.filter((version) => wanted.includes(version));
}

/** The modern-nix script: $MODERN_NIX, or ../shared/tools/modern-nix next to the checkout. */
export const MODERN_NIX =
  process.env.MODERN_NIX ?? fileURLToPath(new URL('../../../shared/tools/modern-nix', import.meta.url));

/** NIX_CONFIG for tests: flakes-free new CLI, no sandbox, no build users, no network substituters. */
export const TEST_NIX_CONFIG = [
  'experimental-features = nix-command',
  'sandbox = false',
  'build-users-group =',
  'substituters =',
].join('\n');

const available = new Map<NixVersion, boolean>();

/** Whether the client `version` can be run. */
export function nixAvailable(version: NixVersion = '2.8'): boolean {
  let known = available.get(version);
  if (known === undefined) {
    known =
      version === '2.8'
        ? spawnSync('nix', ['--version'], { stdio: 'ignore' }).status === 0
        : existsSync(MODERN_NIX) &&
          spawnSync(MODERN_NIX, ['run', 'nix', '--version'], { stdio: 'ignore' }).status === 0;
    available.set(version, known);
  }
  return known;
}

/**
 * node:test options for a test that needs the Nix client `version`: skipped with a reason when it is
 * missing, except in CI (`CI=true`), where the test runs and fails instead of silently passing.
 */
export function nixTestOptions(version: NixVersion = '2.8'): { skip?: string } {
  if (nixAvailable(version) || process.env.CI === 'true') return {};
  return {
    skip:
      version === '2.8'
        ? 'the nix binary is not installed (it is required when CI=true)'
        : `Nix 2.26 is not set up: run \`${MODERN_NIX} setup\` as root (it is required when CI=true)`,
  };
}

let modernRoot: string | undefined;

/** The directory the 2.26 client's / is (its /nix/store is under it). */
export function modernNixRoot(): string {
  if (modernRoot === undefined) {
    const answer = spawnSync(MODERN_NIX, ['root'], { encoding: 'utf8' });
    if (answer.status !== 0) throw new Error(`${MODERN_NIX} root failed: ${answer.stderr}`);
    modernRoot = answer.stdout.trim();
  }
  return modernRoot;
}

/** Where the files of `storePath` (/nix/store/…) are on this machine, in the store of `version`. */
export function nixStoreFile(version: NixVersion, storePath: string): string {
  return version === '2.8' ? storePath : join(modernNixRoot(), storePath);
}

/** An environment for running nix with `home` as HOME and XDG base. */
export function nixEnv(home: string): NodeJS.ProcessEnv {
  return {
    ...process.env,
    HOME: home,
    XDG_CACHE_HOME: join(home, '.cache'),
    XDG_CONFIG_HOME: join(home, '.config'),
    XDG_DATA_HOME: join(home, '.local', 'share'),
    XDG_STATE_HOME: join(home, '.local', 'state'),
    NIX_CONFIG: TEST_NIX_CONFIG,
  };
}

let sharedHome: string | undefined;

/** One HOME per test process, removed when the process exits. */
function defaultHome(): string {
  if (sharedHome === undefined) {
    const home = mkdtempSync(join(tmpdir(), 'niche-nix-home-'));
    process.once('exit', () => {
      rmSync(home, { recursive: true, force: true });
    });
    sharedHome = home;
  }
  return sharedHome;
}

export interface RunNixOptions {
  readonly cwd?: string;
  /** HOME for this run; a per-process temporary directory by default. */
  readonly home?: string;
  /** Extra environment variables. */
  readonly env?: NodeJS.ProcessEnv;
  /** Written to the command's stdin, which is otherwise empty. */
  readonly input?: string | Uint8Array;
  /** The client to run (the machine's Nix 2.8 by default). */
  readonly version?: NixVersion;
}

export class NixCommandError extends Error {
  constructor(
    message: string,
    readonly exitCode: number | null,
    readonly stdout: Buffer,
    readonly stderr: string,
  ) {
    super(message);
    this.name = 'NixCommandError';
  }
}

/**
 * Runs a nix command (`nix`, `nix-store`, `nix-instantiate`...) with the isolated environment. Resolves
 * with its output on exit code 0; rejects with a NixCommandError carrying stderr otherwise.
 */
export function runNix(
  cmd: string,
  args: readonly string[],
  opts: RunNixOptions = {},
): Promise<{ stdout: Buffer; stderr: string }> {
  const home = opts.home ?? defaultHome();
  mkdirSync(home, { recursive: true });
  const env = { ...nixEnv(home), ...opts.env };
  const [binary, argv] = commandLine(opts.version ?? '2.8', cmd, args, env, opts.cwd);
  return new Promise((resolve, reject) => {
    const child = spawn(binary, argv, {
      cwd: opts.cwd,
      env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const out = Buffer.concat(stdout);
      const err = Buffer.concat(stderr).toString('utf8');
      if (code === 0) {
        resolve({ stdout: out, stderr: err });
      } else {
        const status = signal === null ? `exit code ${code}` : `signal ${signal}`;
        const shown = [cmd, ...args].join(' ');
        reject(new NixCommandError(`${shown} failed with ${status}: ${err.trim()}`, code, out, err));
      }
    });
    child.stdin.end(opts.input);
  });
}

/** Variables modern-nix does not pass into the chroot by itself (it passes NIX_* and NICHE_*). */
const CHROOT_VARIABLES = ['HOME', 'XDG_CACHE_HOME', 'XDG_CONFIG_HOME', 'XDG_DATA_HOME', 'XDG_STATE_HOME'];

/**
 * The program and arguments that run `cmd args` with the client `version`: directly for 2.8; for 2.26
 * `modern-nix run env HOME=… cmd args` (in `cwd`, which must be under /tmp, or in /tmp).
 */
export function commandLine(
  version: NixVersion,
  cmd: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  cwd?: string,
): [string, string[]] {
  if (version === '2.8') return [cmd, [...args]];
  const assignments = CHROOT_VARIABLES.flatMap((name) => {
    const value = env[name];
    return value === undefined ? [] : [`${name}=${value}`];
  });
  const inner = ['env', ...assignments, cmd, ...args];
  if (cwd === undefined) return [MODERN_NIX, ['run', ...inner]];
  return [MODERN_NIX, ['run', 'sh', '-c', 'cd "$1" && shift && exec "$@"', 'sh', cwd, ...inner]];
}

/**
 * A directory to put first on PATH for a program that runs `nix` itself (niche push, niche use): for 2.26 it
 * holds `nix`, `nix-store` and `nix-build` scripts that run them in the chroot, passing HOME and the XDG
 * directories along; for 2.8 nothing is needed (undefined).
 */
export function nixBinDir(version: NixVersion, home: string): string | undefined {
  if (version === '2.8') return undefined;
  const dir = join(home, 'modern-nix-bin');
  mkdirSync(dir, { recursive: true });
  const pass = CHROOT_VARIABLES.map((name) => `\${${name}:+"${name}=$${name}"}`).join(' ');
  for (const name of ['nix', 'nix-store', 'nix-build']) {
    const script = `#!/bin/sh\nexec '${MODERN_NIX}' run env ${pass} ${name} "$@"\n`;
    writeFileSync(join(dir, name), script, { mode: 0o755 });
  }
  return dir;
}

/**
 * The command line that runs `program args` as on a machine whose Nix is `version`: unchanged for 2.8; for
 * 2.26 in a private mount namespace (`unshare`, as root) where /nix is the 2.26 client's, so a program
 * that reads the store itself (niche push serialises NARs from it, watch-store reads the Nix database)
 * finds its paths. Give it `nixBinDir` first on PATH, so its `nix` is the same client.
 */
export function onClientMachine(
  version: NixVersion,
  program: string,
  args: readonly string[],
): [string, string[]] {
  if (version === '2.8') return [program, [...args]];
  const nix = join(modernNixRoot(), 'nix');
  return [
    'unshare',
    [
      '--mount',
      '--propagation',
      'private',
      'sh',
      '-c',
      'mount --bind "$0" /nix && exec "$@"',
      nix,
      program,
      ...args,
    ],
  ];
}

/** A store URL for a private local store rooted at `root` (store paths still read /nix/store/...). */
export function nixLocalStore(root: string): string {
  return `local?root=${root}`;
}
