// Narinfos for the fuzz test: the valid narinfo of an uploaded NAR, the mutations of arbitraries.ts applied
// to it, and the check of a narinfo the server serves, done with node:crypto and the test's own decoders
// rather than with niche's code: signed by the cache's key over the right fingerprint, its NAR file
// downloads with the FileHash/FileSize it names and decompresses to its NarHash/NarSize.
import { createHash, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import type { Compression } from '../../src/nix/compression.js';
import { encodeNix32 } from '../../src/nix/nix32.js';
import type { NarInfoMutation, OddReference, OddSignature } from './arbitraries.js';
import { decompressIndependently } from './codecs.js';
import { send } from './http.js';

export const STORE_DIR = '/nix/store';

export function sha256Nix32(data: Uint8Array): string {
  return encodeNix32(createHash('sha256').update(data).digest());
}

/** A store path hash part derived from `label` (not a real Nix hash; fine for a cache). */
export function derivedHash(label: string): string {
  return encodeNix32(createHash('sha256').update(label).digest().subarray(0, 20));
}

export interface UploadedNar {
  readonly compression: Compression;
  readonly fileName: string;
  readonly fileHash: string;
  readonly fileSize: number;
  readonly narHash: string;
  readonly narSize: number;
}

export interface PathSpec {
  readonly hash: string;
  readonly name: string;
  readonly nar: UploadedNar;
  /** Base names. */
  readonly references: readonly string[];
}

export function fingerprint(
  storePath: string,
  narHash: string,
  narSize: number,
  references: readonly string[],
): string {
  return `1;${storePath};${narHash};${narSize};${references.map((r) => `${STORE_DIR}/${r}`).join(',')}`;
}

/** An ed25519 key that is not the cache's, for client signatures. */
export class OtherKey {
  readonly #privateKey: KeyObject;
  constructor(readonly name: string) {
    this.#privateKey = generateKeyPairSync('ed25519').privateKey;
  }
  sign(text: string): string {
    return `${this.name}:${sign(null, Buffer.from(text), this.#privateKey).toString('base64')}`;
  }
}

export function validNarInfo(spec: PathSpec): string {
  const { nar } = spec;
  return (
    `StorePath: ${STORE_DIR}/${spec.hash}-${spec.name}\n` +
    `URL: nar/${nar.fileName}\n` +
    `Compression: ${nar.compression}\n` +
    `FileHash: sha256:${nar.fileHash}\n` +
    `FileSize: ${nar.fileSize}\n` +
    `NarHash: sha256:${nar.narHash}\n` +
    `NarSize: ${nar.narSize}\n` +
    `References: ${spec.references.join(' ')}\n`
  );
}

export interface MutationContext {
  readonly spec: PathSpec;
  /** A path the cache serves. */
  readonly base: { readonly hash: string; readonly name: string };
  readonly otherKey: OtherKey;
}

function oddReferences(odd: OddReference, context: MutationContext): string[] {
  const { spec, base } = context;
  switch (odd.kind) {
    case 'base-wrong-name':
      return [`${base.hash}-${odd.name === base.name ? `${odd.name}x` : odd.name}`];
    case 'self-other-name':
      return [`${spec.hash}-${odd.name === spec.name ? `${odd.name}x` : odd.name}`];
    case 'absent':
      return [`${derivedHash(`absent ${spec.hash}`)}-${odd.name}`];
    case 'malformed':
      return [odd.text];
    case 'base-twice':
      return [`${base.hash}-${base.name}`, `${base.hash}-${base.name}`];
    case 'many':
      return Array.from({ length: odd.count }, (_, i) => `${derivedHash(`many ${spec.hash} ${i}`)}-p${i}`);
  }
}

function oddSignatures(odd: OddSignature, context: MutationContext): string[] {
  const { spec, otherKey } = context;
  const print = fingerprint(
    `${STORE_DIR}/${spec.hash}-${spec.name}`,
    `sha256:${spec.nar.narHash}`,
    spec.nar.narSize,
    spec.references,
  );
  switch (odd.kind) {
    case 'garbage':
      return [odd.text];
    case 'other-key':
      return [otherKey.sign(print)];
    case 'bad-bytes':
      return [`${odd.keyName}:${Buffer.from(odd.bytes).toString('base64')}`];
    case 'many':
      return Array.from({ length: odd.count }, (_, i) => `k${i}:${otherKey.sign(print).split(':')[1] ?? ''}`);
  }
}

/** Whether a mutation alone must make the server refuse the narinfo, whatever else it does. */
/**
 * Whether `mutations` leave references the cache lacks in the narinfo, so that it must be refused: an odd
 * reference mutation not followed by one that may remove it again (a dropped line, or a value replaced,
 * such as `References: ` emptied).
 */
export function mustBeRefused(mutations: readonly NarInfoMutation[]): boolean {
  return mutations.some(
    (mutation, i) =>
      mutation.kind === 'reference' &&
      (mutation.reference.kind === 'absent' || mutation.reference.kind === 'many') &&
      !mutations.slice(i + 1).some((later) => later.kind === 'drop' || later.kind === 'value'),
  );
}

export function mutateNarInfo(
  text: string,
  mutations: readonly NarInfoMutation[],
  context: MutationContext,
): string {
  const lines = text.split('\n').slice(0, -1);
  let ending = '\n';
  let prefix = '';
  const index = (n: number): number => (lines.length === 0 ? 0 : n % lines.length);
  for (const m of mutations) {
    switch (m.kind) {
      case 'drop':
        lines.splice(index(m.line), 1);
        break;
      case 'duplicate': {
        const i = index(m.line);
        lines.splice(i, 0, lines[i] ?? '');
        break;
      }
      case 'swap': {
        const i = index(m.line);
        const j = index(m.with);
        [lines[i], lines[j]] = [lines[j] ?? '', lines[i] ?? ''];
        break;
      }
      case 'value': {
        const i = index(m.line);
        const line = lines[i] ?? '';
        const colon = line.indexOf(': ');
        lines[i] = `${colon === -1 ? line : line.slice(0, colon)}: ${m.value}`;
        break;
      }
      case 'field':
        lines.push(`${m.key}: ${m.value}`);
        break;
      case 'reference': {
        const added = oddReferences(m.reference, context);
        const i = lines.findIndex((line) => line.startsWith('References:'));
        if (i === -1) lines.push(`References: ${added.join(' ')}`);
        else lines[i] = `${lines[i]} ${added.join(' ')}`.replace('References:  ', 'References: ');
        break;
      }
      case 'signature':
        for (const signature of oddSignatures(m.signature, context)) lines.push(`Sig: ${signature}`);
        break;
      case 'crlf':
        ending = '\r\n';
        break;
      case 'no-final-newline':
        ending = '';
        break;
      case 'bom':
        prefix = '\uFEFF';
        break;
    }
  }
  return prefix + lines.join(ending === '' ? '\n' : ending) + ending;
}

// --- checking what the server serves --------------------------------------------------------------------

const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

export function publicKeyOf(text: string): { name: string; key: KeyObject } {
  const colon = text.indexOf(':');
  const raw = Buffer.from(text.slice(colon + 1), 'base64');
  return {
    name: text.slice(0, colon),
    key: createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' }),
  };
}

function fields(text: string): Map<string, string[]> {
  const map = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(': ');
    if (colon === -1) continue;
    const key = line.slice(0, colon);
    map.set(key, [...(map.get(key) ?? []), line.slice(colon + 2)]);
  }
  return map;
}

export interface ServedCheck {
  /** What is wrong with the served narinfo and its NAR (empty: nothing). */
  readonly problems: string[];
  /** References that are not exactly a path the cache serves (issue 10 item 1). */
  readonly unservedReferences: string[];
  readonly narHash: string | undefined;
}

const COMPRESSION_OF: Readonly<Record<string, Compression>> = {
  none: 'none',
  xz: 'xz',
  zstd: 'zstd',
  bzip2: 'bzip2',
  br: 'br',
};

/** Checks the narinfo of `hash` the server serves (which must exist) and the NAR it points to. */
export async function checkServed(
  port: number,
  hash: string,
  cacheKey: { name: string; key: KeyObject },
  maxNarSize: number,
): Promise<ServedCheck> {
  const problems: string[] = [];
  const unservedReferences: string[] = [];
  const answer = await send(port, `/main/${hash}.narinfo`);
  if (answer.status !== 200)
    return { problems: [`GET ${hash}.narinfo: ${answer.status}`], unservedReferences, narHash: undefined };
  const text = answer.body.toString('utf8');
  const f = fields(text);
  const one = (key: string): string => {
    const values = f.get(key) ?? [];
    if (values.length !== 1) problems.push(`${values.length} ${key} lines`);
    return values[0] ?? '';
  };
  const storePath = one('StorePath');
  if (!storePath.startsWith(`${STORE_DIR}/${hash}-`))
    problems.push(`StorePath ${storePath} is not ${hash}'s`);
  const narHash = one('NarHash');
  const narSize = Number(one('NarSize'));
  const fileHash = one('FileHash');
  const fileSize = Number(one('FileSize'));
  const references = one('References')
    .split(' ')
    .filter((r) => r !== '');
  const signed = (f.get('Sig') ?? []).some((sig) => {
    const colon = sig.indexOf(':');
    return (
      sig.slice(0, colon) === cacheKey.name &&
      verify(
        null,
        Buffer.from(fingerprint(storePath, narHash, narSize, references)),
        cacheKey.key,
        Buffer.from(sig.slice(colon + 1), 'base64'),
      )
    );
  });
  if (!signed) problems.push('no valid signature by the cache key');

  const compression = COMPRESSION_OF[one('Compression')];
  const url = one('URL');
  const file = await send(port, `/main/${url}`);
  if (file.status !== 200) {
    problems.push(`GET ${url}: ${file.status}`);
  } else {
    if (`sha256:${sha256Nix32(file.body)}` !== fileHash)
      problems.push('the NAR file does not match FileHash');
    if (file.body.length !== fileSize) problems.push('the NAR file does not match FileSize');
    const nar =
      compression === undefined
        ? undefined
        : await decompressIndependently(file.body, compression, maxNarSize);
    if (nar === undefined) problems.push(`the NAR file is not valid ${compression ?? 'known'} data`);
    else {
      if (`sha256:${sha256Nix32(nar)}` !== narHash) problems.push('the NAR does not match NarHash');
      if (nar.length !== narSize) problems.push('the NAR does not match NarSize');
    }
  }

  const self = storePath.slice(STORE_DIR.length + 1);
  for (const reference of references) {
    if (reference === self) continue;
    const referenced = await send(port, `/main/${reference.slice(0, 32)}.narinfo`);
    const servedPath =
      referenced.status === 200 ? fields(referenced.body.toString('utf8')).get('StorePath')?.[0] : undefined;
    if (servedPath !== `${STORE_DIR}/${reference}`) unservedReferences.push(reference);
  }
  return { problems, unservedReferences, narHash };
}
