// The real Nix client against a niche server, for the end-to-end tests: an isolated client (own HOME,
// netrc, no narinfo caching between commands unless asked), Nix 2.8 or 2.26 (test/helpers/nix.ts), and a
// freshly built closure of test paths (e2e-closure.nix) that can be pushed, deleted locally and
// substituted back.
import { randomBytes } from 'node:crypto';
import { lstatSync } from 'node:fs';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { nixStoreFile, runNix, TEST_NIX_CONFIG, type NixVersion } from './nix.js';

const CLOSURE_NIX = fileURLToPath(new URL('./e2e-closure.nix', import.meta.url));

export interface NixClient {
  readonly version: NixVersion;
  /** Under /tmp, so both clients see it. */
  readonly home: string;
  readonly netrcFile: string;
  /** Puts `token` in the netrc for 127.0.0.1 (no credentials at all when undefined). */
  setToken(token: string | undefined): Promise<void>;
  run(cmd: string, args: readonly string[]): Promise<{ stdout: Buffer; stderr: string }>;
  /** Where the files of a store path of this client's store are on this machine. */
  storeFile(storePath: string): string;
  /** Whether `storePath` is on disk in this client's store (a symlink counts, wherever it points). */
  hasPath(storePath: string): boolean;
  cleanup(): Promise<void>;
}

export interface NixClientOptions {
  /** The Nix client (2.8 by default). */
  readonly version?: NixVersion;
  /**
   * Keep Nix's own narinfo cache TTLs (30 days positive, 1 hour negative); by default lookups are never
   * cached, so one test's "not in the cache" does not hide the path from the next command.
   */
  readonly defaultTtls?: boolean;
  /** More environment for every command, e.g. NIX_SSL_CERT_FILE (under /tmp, for 2.26 to see it). */
  readonly env?: NodeJS.ProcessEnv;
}

/** A nix client with its own HOME and netrc. */
export async function nixClient(options: NixClientOptions = {}): Promise<NixClient> {
  const version = options.version ?? '2.8';
  const home = await mkdtemp(join(tmpdir(), 'niche-e2e-nix-'));
  const netrcFile = join(home, 'netrc');
  await writeFile(netrcFile, '');
  const nixConfig = [
    TEST_NIX_CONFIG,
    `netrc-file = ${netrcFile}`,
    ...(options.defaultTtls === true
      ? []
      : ['narinfo-cache-negative-ttl = 0', 'narinfo-cache-positive-ttl = 0']),
  ].join('\n');
  return {
    version,
    home,
    netrcFile,
    async setToken(token) {
      await writeFile(
        netrcFile,
        token === undefined ? '' : `machine 127.0.0.1 login niche password ${token}\n`,
      );
    },
    run: (cmd, args) => runNix(cmd, args, { home, version, env: { ...options.env, NIX_CONFIG: nixConfig } }),
    storeFile: (storePath) => nixStoreFile(version, storePath),
    hasPath: (storePath) =>
      lstatSync(nixStoreFile(version, storePath), { throwIfNoEntry: false }) !== undefined,
    cleanup: () => rm(home, { recursive: true, force: true }),
  };
}

/** What `nix path-info --json` says about a path (the fields the tests compare). */
export interface PathInfo {
  readonly path: string;
  readonly narHash: string;
  readonly narSize: number;
  readonly references: readonly string[];
}

function isPathInfo(value: unknown): value is PathInfo {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return (
    typeof v.path === 'string' &&
    typeof v.narHash === 'string' &&
    typeof v.narSize === 'number' &&
    Array.isArray(v.references) &&
    v.references.every((r) => typeof r === 'string')
  );
}

/** `nix path-info --json -r` of `paths`: their closure, keyed by store path. */
export async function pathInfos(client: NixClient, paths: readonly string[]): Promise<Map<string, PathInfo>> {
  const { stdout } = await client.run('nix', ['path-info', '--json', '--recursive', ...paths]);
  const parsed: unknown = JSON.parse(stdout.toString('utf8'));
  // Nix 2.8 prints a list of entries with `path`; 2.19 and later an object keyed by path.
  let entries: unknown[];
  if (Array.isArray(parsed)) entries = parsed;
  else if (typeof parsed === 'object' && parsed !== null)
    entries = Object.entries(parsed).map(([path, info]) => ({ ...(info as object), path }));
  else throw new Error('nix path-info --json printed neither a list nor an object');
  const infos = new Map<string, PathInfo>();
  for (const entry of entries) {
    if (!isPathInfo(entry)) throw new Error(`unexpected nix path-info entry: ${JSON.stringify(entry)}`);
    infos.set(entry.path, {
      path: entry.path,
      narHash: entry.narHash,
      narSize: entry.narSize,
      references: [...entry.references].sort(),
    });
  }
  return infos;
}

export interface BuiltClosure {
  /** The top output; everything else is in its closure. */
  readonly top: string;
  /** Every output in the closure, dependencies first. */
  readonly paths: readonly string[];
  /** The derivations that built them. */
  readonly derivations: readonly string[];
  /** `nix path-info` of every output, as built. */
  readonly infos: ReadonlyMap<string, PathInfo>;
  /** Deletes the outputs from the local store (so they can be substituted back). */
  deleteOutputs(): Promise<void>;
  /** Deletes the outputs and the derivations. */
  cleanup(): Promise<void>;
}

function lines(output: Buffer): string[] {
  return output
    .toString('utf8')
    .split('\n')
    .filter((line) => line !== '');
}

/**
 * Builds e2e-closure.nix with a random nonce (new store paths on every run). `bigBytes` is the size of
 * the incompressible file in the leaf path.
 */
export async function buildClosure(
  client: NixClient,
  options: { bigBytes?: number; label?: string } = {},
): Promise<BuiltClosure> {
  const nonce = `${options.label ?? 'e2e'}-${Date.now()}-${randomBytes(8).toString('hex')}`;
  // A copy under the client's HOME (in /tmp), which Nix 2.26 in its chroot can read too.
  const expression = join(client.home, 'e2e-closure.nix');
  await copyFile(CLOSURE_NIX, expression);
  const { stdout } = await client.run('nix-build', [
    '--no-out-link',
    expression,
    '--argstr',
    'nonce',
    nonce,
    '--arg',
    'bigBytes',
    String(options.bigBytes ?? 0),
  ]);
  const top = lines(stdout).at(-1);
  if (top === undefined) throw new Error('nix-build printed no output path');
  const paths = lines((await client.run('nix-store', ['--query', '--requisites', top])).stdout);
  const derivations = lines((await client.run('nix-store', ['--query', '--deriver', ...paths])).stdout);
  const infos = await pathInfos(client, [top]);
  const deleteOutputs = async (): Promise<void> => {
    await client.run('nix-store', ['--delete', ...paths]);
  };
  return {
    top,
    paths,
    derivations,
    infos,
    deleteOutputs,
    async cleanup() {
      await deleteOutputs();
      await client.run('nix-store', ['--delete', ...derivations]);
    },
  };
}

/** `nix-store -r` from the cache at `cacheUrl`, trusting only `publicKey`, with signatures required. */
export function substitute(
  client: NixClient,
  cacheUrl: string,
  paths: readonly string[],
  publicKey: string,
): Promise<{ stdout: Buffer; stderr: string }> {
  return client.run('nix-store', [
    '--realise',
    ...paths,
    '--option',
    'substituters',
    cacheUrl,
    '--option',
    'trusted-public-keys',
    publicKey,
    '--option',
    'require-sigs',
    'true',
  ]);
}

/** A fresh key pair from `nix-store --generate-binary-cache-key`, as file paths and contents. */
export async function generateNixKey(
  client: NixClient,
  name: string,
): Promise<{ secretFile: string; publicKey: string }> {
  const secretFile = join(client.home, `${name}.secret`);
  const publicFile = join(client.home, `${name}.public`);
  await client.run('nix-store', ['--generate-binary-cache-key', name, secretFile, publicFile]);
  return { secretFile, publicKey: (await readFile(publicFile, 'utf8')).trim() };
}
