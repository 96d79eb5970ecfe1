// What the local Nix knows about the paths to push: `nix path-info --recursive --json` gives the closure
// with NAR hashes, sizes, references, derivers, signatures and content addresses. Its output changed over
// the years and every shape is accepted:
//   Nix 2.8 - 2.18   an array of {path, narHash, narSize, references (full paths), deriver?, signatures?, ca?}
//                    (`valid: false` for invalid paths); narHash is SRI (2.8) or `sha256:<nix32>`
//   Nix 2.19+        an object keyed by full path (null for invalid paths), narHash in SRI form
//   newest           `--json-format 1` adds top-level `version`/`storeDir`; format 2 wraps the map in `info`
//                    and uses base names and structured hashes ({algorithm, format, hash})
import { realpath } from 'node:fs/promises';
import { resolve } from 'node:path';
import { InvalidInputError, NixFormatError } from '../errors.js';
import { type ContentAddressMethod, formatContentAddress } from '../nix/content-address.js';
import { Hash } from '../nix/hash.js';
import type { ValidPathInfo } from '../nix/path-info.js';
import { DEFAULT_STORE_DIR, StorePath } from '../nix/store-path.js';
import { NixCommandError } from './errors.js';
import type { NixRunner } from './nix-command.js';

/** A path of the local store to push: Nix's record of it, and its full path. */
export interface LocalPathInfo extends ValidPathInfo {
  readonly path: string;
}

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

function invalid(why: string): NixFormatError {
  return new NixFormatError('STORE_PATH_INVALID', `unexpected nix path-info --json output: ${why}`);
}

function storePathOf(text: unknown, storeDir: string): StorePath {
  if (typeof text !== 'string') throw invalid(`expected a store path, got ${JSON.stringify(text)}`);
  return text.startsWith('/') ? StorePath.parse(text, storeDir) : StorePath.parseBaseName(text);
}

/** A hash as a string (SRI or `algo:digest`) or as `{algorithm, format, hash}`. */
function hashOf(value: unknown, what: string): Hash {
  if (typeof value === 'string') return Hash.parsePrefixed(value);
  if (isObject(value) && typeof value.algorithm === 'string' && typeof value.hash === 'string') {
    return Hash.parsePrefixed(`${value.algorithm}:${value.hash}`);
  }
  throw invalid(`${what} is not a hash: ${JSON.stringify(value)}`);
}

const CA_METHODS: ReadonlySet<string> = new Set<ContentAddressMethod>(['text', 'flat', 'nar', 'git']);

function caOf(value: unknown): string | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value === 'string') return value;
  if (isObject(value) && typeof value.method === 'string' && CA_METHODS.has(value.method)) {
    return formatContentAddress({
      method: value.method as ContentAddressMethod,
      hash: hashOf(value.hash, 'ca'),
    });
  }
  throw invalid(`unknown content address ${JSON.stringify(value)}`);
}

function entryOf(key: string | undefined, value: unknown, storeDir: string): LocalPathInfo {
  const name = key ?? (isObject(value) ? value.path : undefined);
  if (value === null || (isObject(value) && value.valid === false)) {
    throw new NixFormatError('STORE_PATH_INVALID', `${String(name)} is not a valid path in the local store`);
  }
  if (!isObject(value)) throw invalid(`expected an object for ${String(name)}`);
  const storePath = storePathOf(typeof value.path === 'string' ? value.path : name, storeDir);
  const narSize = value.narSize;
  if (typeof narSize !== 'number' || !Number.isSafeInteger(narSize) || narSize <= 0) {
    throw invalid(`narSize of ${storePath.baseName} is ${JSON.stringify(narSize)}`);
  }
  const references = value.references ?? [];
  if (!Array.isArray(references)) throw invalid(`references of ${storePath.baseName} is not a list`);
  const signatures = value.signatures ?? [];
  if (!Array.isArray(signatures) || !signatures.every((sig) => typeof sig === 'string')) {
    throw invalid(`signatures of ${storePath.baseName} is not a list of strings`);
  }
  const deriver = value.deriver;
  return {
    storePath,
    path: storePath.toString(storeDir),
    narHash: hashOf(value.narHash, `narHash of ${storePath.baseName}`),
    narSize,
    references: references.map((reference) => storePathOf(reference, storeDir)),
    deriver:
      typeof deriver === 'string' && deriver !== '' ? storePathOf(deriver, storeDir).baseName : undefined,
    signatures,
    ca: caOf(value.ca),
  };
}

/** Parses any known `nix path-info --json` output; throws on invalid paths and unknown shapes. */
export function parsePathInfoJson(text: string, storeDir: string = DEFAULT_STORE_DIR): LocalPathInfo[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new NixFormatError('STORE_PATH_INVALID', 'nix path-info --json did not print JSON', {
      cause: error,
    });
  }
  if (Array.isArray(parsed)) return parsed.map((entry) => entryOf(undefined, entry, storeDir));
  if (!isObject(parsed)) throw invalid('neither a list nor an object');
  let dir = storeDir;
  let map: Json = parsed;
  if (typeof parsed.storeDir === 'string') dir = parsed.storeDir;
  if (isObject(parsed.info) && (typeof parsed.version === 'number' || typeof parsed.storeDir === 'string')) {
    map = parsed.info;
  }
  const infos: LocalPathInfo[] = [];
  for (const [key, value] of Object.entries(map)) {
    // Top-level metadata of `--json-format 1` sits beside the paths.
    if (map === parsed && (key === 'version' || key === 'storeDir')) continue;
    infos.push(entryOf(key, value, dir));
  }
  return infos;
}

/**
 * Refuses an argument that is neither in the store nor a link into it (`niche push team /tmp`), with a
 * message saying what a store path looks like, before nix answers with something about flakes.
 */
async function checkStorePathArgument(path: string, storeDir: string, realStoreDir: string): Promise<void> {
  const inside = (dir: string, candidate: string): boolean => candidate.startsWith(`${dir}/`);
  if (inside(storeDir, resolve(path))) return; // nix says whether it is valid
  let target: string;
  try {
    target = await realpath(path);
  } catch (error) {
    throw new InvalidInputError(
      'STORE_PATH_INVALID',
      `${path} does not exist (${(error as NodeJS.ErrnoException).code ?? 'unreadable'}); expected a store ` +
        `path such as ${storeDir}/<hash>-<name>, or a link to one such as ./result`,
    );
  }
  if (!inside(realStoreDir, target) && !inside(storeDir, target)) {
    throw new InvalidInputError(
      'STORE_PATH_INVALID',
      `${path} is not a store path: expected ${storeDir}/<hash>-<name> (e.g. ${storeDir}/` +
        `b6gvzjyb2pg0kjfwrjmg1vfhh54ad73z-hello-2.12.1), or a link to one such as ./result`,
    );
  }
}

/** The closure of `paths` (store paths, or links to them such as ./result), as the local Nix knows it. */
export async function queryClosure(
  run: NixRunner,
  paths: readonly string[],
  storeDir: string = DEFAULT_STORE_DIR,
): Promise<LocalPathInfo[]> {
  const realStoreDir = await realpath(storeDir).catch(() => storeDir);
  for (const path of paths) await checkStorePathArgument(path, storeDir, realStoreDir);
  const closure = new Map<string, LocalPathInfo>();
  // Chunks keep the command line far below the kernel's argument limits.
  for (let start = 0; start < paths.length; start += PATH_INFO_CHUNK) {
    const chunk = paths.slice(start, start + PATH_INFO_CHUNK);
    const text = await run(['path-info', '--recursive', '--json', '--', ...chunk]).catch((error: unknown) => {
      // Almost always a path that is not (or no longer) in the local store: the caller's input.
      if (error instanceof NixCommandError && error.code === 'NIX_COMMAND_FAILED') {
        throw new NixFormatError('STORE_PATH_INVALID', error.message, { cause: error });
      }
      throw error;
    });
    for (const info of parsePathInfoJson(text, storeDir)) closure.set(info.path, info);
  }
  return [...closure.values()];
}

const PATH_INFO_CHUNK = 1000;
