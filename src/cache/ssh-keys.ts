// SSH public keys as principals: a key registered with `niche ssh-key add` is a token whose secret is the
// private key its owner holds. The key is stored as its OpenSSH line (`ssh-ed25519 AAAA…`, without the
// comment) and looked up by its fingerprint, in OpenSSH's form (`SHA256:` and unpadded base64 of the
// SHA-256 of the key blob), which is also what users compare with `ssh-keygen -lf`.
//
// Parsed by hand rather than with ssh2's parser: the cache layer must not depend on a front end's library,
// and the format is two fields and one length-prefixed string.
import { createHash } from 'node:crypto';
import { InvalidInputError } from '../errors.js';

/** The key types OpenSSH offers for user authentication (no DSA: OpenSSH dropped it). */
export const SSH_KEY_ALGORITHMS: ReadonlySet<string> = new Set([
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'ssh-rsa',
  'sk-ssh-ed25519@openssh.com',
  'sk-ecdsa-sha2-nistp256@openssh.com',
]);

/** Longest key line accepted: an RSA key of 16384 bits is about 2.8 KB of base64. */
export const MAX_SSH_KEY_LINE = 8192;

export interface SshPublicKey {
  readonly algorithm: string;
  /** The key blob (the base64 field, decoded). */
  readonly blob: Buffer;
  /** `<algorithm> <base64>`: the line without its comment. */
  readonly line: string;
  /** `SHA256:…`, as `ssh-keygen -l` prints it. */
  readonly fingerprint: string;
  /** The comment after the key, if any (often user@host). */
  readonly comment: string;
}

export function sshKeyFingerprint(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

function invalid(reason: string): InvalidInputError {
  return new InvalidInputError('SSH_KEY_INVALID', `not an SSH public key: ${reason}`);
}

/** The algorithm named inside a key blob (its first length-prefixed string), or undefined. */
function blobAlgorithm(blob: Buffer): string | undefined {
  if (blob.length < 4) return undefined;
  const length = blob.readUInt32BE(0);
  if (length === 0 || length > 64 || 4 + length > blob.length) return undefined;
  return blob.subarray(4, 4 + length).toString('latin1');
}

/**
 * Parses one public key as OpenSSH writes it (`id_ed25519.pub`, an authorized_keys line without options):
 * `<algorithm> <base64> [comment]`. Throws SSH_KEY_INVALID with the reason.
 */
export function parseSshPublicKey(text: string): SshPublicKey {
  const trimmed = text.trim();
  if (trimmed.length === 0) throw invalid('it is empty');
  if (trimmed.length > MAX_SSH_KEY_LINE) throw invalid(`it is longer than ${MAX_SSH_KEY_LINE} characters`);
  if (/[\r\n]/.test(trimmed)) throw invalid('give one key, on one line');
  const [algorithm = '', data = '', ...rest] = trimmed.split(/[ \t]+/);
  if (algorithm.startsWith('-----')) throw invalid('this is a private key or a PEM file; give the .pub line');
  if (!SSH_KEY_ALGORITHMS.has(algorithm)) {
    throw invalid(
      `unknown key type ${JSON.stringify(algorithm.slice(0, 40))} (options before the key are not accepted; ` +
        `one of ${[...SSH_KEY_ALGORITHMS].join(', ')})`,
    );
  }
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(data) || data.length % 4 !== 0) throw invalid('the key is not base64');
  const blob = Buffer.from(data, 'base64');
  const inner = blobAlgorithm(blob);
  if (inner !== algorithm) {
    throw invalid(
      `the key data is ${inner === undefined ? 'malformed' : `a ${inner} key`}, not ${algorithm}`,
    );
  }
  if (algorithm === 'ssh-ed25519' && blob.length !== 4 + algorithm.length + 4 + 32) {
    throw invalid('an ssh-ed25519 key holds 32 bytes');
  }
  return {
    algorithm,
    blob,
    line: `${algorithm} ${blob.toString('base64')}`,
    fingerprint: sshKeyFingerprint(blob),
    comment: rest.join(' '),
  };
}
