// Ed25519 keys in Nix's `<name>:<base64>` form and narinfo signing (PROTOCOL.md §4). Keys are parsed into
// node:crypto KeyObjects once, because the server signs on the hot path of every upload; secret keys keep
// out of logs (inspect and JSON show only the name).

import {
  type KeyObject,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign as cryptoSign,
  verify as cryptoVerify,
} from 'node:crypto';
import { inspect } from 'node:util';
import { NixFormatError } from '../errors.js';
import { decodeBase64Strict } from './base64.js';
import { type NarInfo, narInfoFingerprint } from './narinfo.js';
import { type ParsedSignature, keyNameProblem, parseSignature } from './signature.js';
import { DEFAULT_STORE_DIR } from './store-path.js';

export { type ParsedSignature, parseSignature } from './signature.js';

const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const SEED_LENGTH = 32;
const PUBLIC_KEY_LENGTH = 32;

type KeyKind = 'secret' | 'public';

/** Splits `<name>:<base64>` (one trailing "\n" tolerated) and decodes it to `length` bytes. */
function parseKeyText(text: string, kind: KeyKind, length: number): { name: string; bytes: Buffer } {
  const invalid = (why: string): NixFormatError =>
    new NixFormatError('KEY_INVALID', `invalid ${kind} key: ${why}`);
  const body = text.endsWith('\n') ? text.slice(0, -1) : text;
  const colon = body.indexOf(':');
  if (colon < 0) throw invalid('expected <key name>:<base64>');
  const name = body.slice(0, colon);
  const problem = keyNameProblem(name);
  if (problem !== undefined) throw invalid(problem);
  const bytes = decodeBase64Strict(body.slice(colon + 1));
  if (bytes === undefined) throw invalid(`the key ${JSON.stringify(name)} is not valid base64`);
  if (bytes.length !== length) {
    throw invalid(`the key ${JSON.stringify(name)} has ${bytes.length} bytes, expected ${length}`);
  }
  return { name, bytes };
}

function publicKeyObject(bytes: Buffer): KeyObject {
  return createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, bytes]), format: 'der', type: 'spki' });
}

function publicBytesOf(key: KeyObject): Buffer {
  const der = key.export({ format: 'der', type: 'spki' });
  return der.subarray(der.length - PUBLIC_KEY_LENGTH);
}

export class PublicKey {
  private constructor(
    readonly name: string,
    /** The 32-byte Ed25519 public key. */
    readonly bytes: Buffer,
    private readonly key: KeyObject,
  ) {}

  /** Parses `<name>:<base64 of 32 bytes>` (one trailing newline tolerated). Throws KEY_INVALID. */
  static parse(text: string): PublicKey {
    const { name, bytes } = parseKeyText(text, 'public', PUBLIC_KEY_LENGTH);
    let key: KeyObject;
    try {
      key = publicKeyObject(bytes);
    } catch (error) {
      throw new NixFormatError('KEY_INVALID', `invalid public key ${JSON.stringify(name)}`, { cause: error });
    }
    return new PublicKey(name, bytes, key);
  }

  /** Whether `signature` (`<name>:<base64>`) is this key's signature of `message`. Never throws. */
  verify(message: string | Uint8Array, signature: string): boolean {
    let parsed: ParsedSignature;
    try {
      parsed = parseSignature(signature);
    } catch {
      return false;
    }
    if (parsed.keyName !== this.name) return false;
    return cryptoVerify(
      null,
      typeof message === 'string' ? Buffer.from(message) : message,
      this.key,
      parsed.signature,
    );
  }

  /** `<name>:<base64>`, the form of `trusted-public-keys`. */
  toString(): string {
    return `${this.name}:${this.bytes.toString('base64')}`;
  }

  toJSON(): string {
    return this.toString();
  }
}

export class SecretKey {
  readonly publicKey: PublicKey;

  private constructor(
    readonly name: string,
    private readonly seed: Buffer,
    private readonly key: KeyObject,
    publicBytes: Buffer,
  ) {
    this.publicKey = PublicKey.parse(`${name}:${publicBytes.toString('base64')}`);
  }

  /**
   * Parses a Nix secret key file's contents, `<name>:<base64 of seed ‖ public key>` (64 bytes; one
   * trailing newline tolerated), and checks that the public half belongs to the seed. Throws KEY_INVALID.
   */
  static parse(text: string): SecretKey {
    const { name, bytes } = parseKeyText(text, 'secret', SEED_LENGTH + PUBLIC_KEY_LENGTH);
    const seed = Buffer.from(bytes.subarray(0, SEED_LENGTH));
    const claimedPublic = bytes.subarray(SEED_LENGTH);
    const key = privateKeyObject(seed);
    const publicBytes = publicBytesOf(createPublicKey(key));
    if (!publicBytes.equals(claimedPublic)) {
      throw new NixFormatError(
        'KEY_INVALID',
        `invalid secret key ${JSON.stringify(name)}: its public half does not match its seed`,
      );
    }
    return new SecretKey(name, seed, key, publicBytes);
  }

  /** A new random key. */
  static generate(name: string): SecretKey {
    const problem = keyNameProblem(name);
    if (problem !== undefined) throw new NixFormatError('KEY_INVALID', `invalid key name: ${problem}`);
    const { privateKey } = generateKeyPairSync('ed25519');
    const der = privateKey.export({ format: 'der', type: 'pkcs8' });
    const seed = Buffer.from(der.subarray(der.length - SEED_LENGTH));
    return new SecretKey(name, seed, privateKey, publicBytesOf(createPublicKey(privateKey)));
  }

  /** Signs `message` (UTF-8); returns `<name>:<base64 signature>`, the `Sig` value. */
  sign(message: string | Uint8Array): string {
    const data = typeof message === 'string' ? Buffer.from(message) : message;
    return `${this.name}:${cryptoSign(null, data, this.key).toString('base64')}`;
  }

  /** The key file contents, `<name>:<base64 of 64 bytes>` without a newline, as Nix writes it. Secret! */
  toString(): string {
    return `${this.name}:${Buffer.concat([this.seed, this.publicKey.bytes]).toString('base64')}`;
  }

  /** Only the name: serialising an object that holds a key must not leak it. */
  toJSON(): { name: string } {
    return { name: this.name };
  }

  [inspect.custom](): string {
    return `SecretKey { name: ${JSON.stringify(this.name)} }`;
  }
}

function privateKeyObject(seed: Buffer): KeyObject {
  try {
    return createPrivateKey({
      key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]),
      format: 'der',
      type: 'pkcs8',
    });
  } catch (error) {
    throw new NixFormatError('KEY_INVALID', 'invalid secret key seed', { cause: error });
  }
}

type SignedFields = Pick<NarInfo, 'storePath' | 'narHash' | 'narSize' | 'references'>;

/** The `Sig` value for a narinfo: `key` over its fingerprint (§4.2). */
export function signNarInfo(
  info: SignedFields,
  key: SecretKey,
  storeDir: string = DEFAULT_STORE_DIR,
): string {
  return key.sign(narInfoFingerprint(info, storeDir));
}

/** Whether any of the narinfo's signatures verifies with the trusted key of the same name. */
export function verifyNarInfo(
  info: SignedFields & Pick<NarInfo, 'signatures'>,
  keys: readonly PublicKey[],
  storeDir: string = DEFAULT_STORE_DIR,
): boolean {
  return countValidSignatures(info, keys, storeDir) > 0;
}

/** How many of the narinfo's signatures verify with a trusted key of the same name (as Nix counts). */
export function countValidSignatures(
  info: SignedFields & Pick<NarInfo, 'signatures'>,
  keys: readonly PublicKey[],
  storeDir: string = DEFAULT_STORE_DIR,
): number {
  if (info.signatures.length === 0 || keys.length === 0) return 0;
  const fingerprint = Buffer.from(narInfoFingerprint(info, storeDir));
  let count = 0;
  for (const signature of new Set(info.signatures)) {
    if (keys.some((key) => key.verify(fingerprint, signature))) count++;
  }
  return count;
}
