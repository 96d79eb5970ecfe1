// Runs the real `nix` binaries for tests that compare niche with Nix itself. Each run gets an isolated
// HOME/XDG tree (so no user config, no shared SQLite cache), single-user settings that work as root
// without a daemon or sandbox, and no substituters (so nothing touches the network).

import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** NIX_CONFIG for tests: flakes-free new CLI, no sandbox, no build users, no network substituters. */
export const TEST_NIX_CONFIG = [
  'experimental-features = nix-command',
  'sandbox = false',
  'build-users-group =',
  'substituters =',
].join('\n');

let available: boolean | undefined;

/** Whether `nix` can be run. */
export function nixAvailable(): boolean {
  available ??= spawnSync('nix', ['--version'], { stdio: 'ignore' }).status === 0;
  return available;
}

/**
 * node:test options for a test that needs `nix`: skipped with a reason when it is missing, except in CI
 * (`CI=true`), where the test runs and fails instead of silently passing.
 */
export function nixTestOptions(): { skip?: string } {
  if (nixAvailable() || process.env.CI === 'true') return {};
  return { skip: 'the nix binary is not installed (it is required when CI=true)' };
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
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: { ...nixEnv(home), ...opts.env },
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

/** A store URL for a private local store rooted at `root` (store paths still read /nix/store/...). */
export function nixLocalStore(root: string): string {
  return `local?root=${root}`;
}
