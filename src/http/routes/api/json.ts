// Reading and writing JSON API bodies: bounded reads, schema validation with every problem named, and
// the response shapes of src/api/v1.ts built from stored records.
import type { FastifyRequest } from 'fastify';
import type { z } from 'zod';
import {
  pushUrlOf,
  type CacheInfo,
  type KeyInfo,
  type PathInfo,
  type PinInfo,
  type SshKeyInfo,
  type TokenInfo,
} from '../../../api/v1.js';
import type {
  CacheRecord,
  CacheUsage,
  PathWithNar,
  PinRecord,
  SigningKeyRecord,
  TokenRecord,
} from '../../../db/metadata-store.js';
import { InvalidInputError } from '../../../errors.js';
import { contentLengthOf, readSmallBody } from '../../body.js';

const MAX_JSON_BODY = 4 << 20;

export async function readJson<S extends z.ZodType>(
  request: FastifyRequest,
  schema: S,
): Promise<z.output<S>> {
  const body = await readSmallBody(
    request.raw,
    MAX_JSON_BODY,
    contentLengthOf(request.headers['content-length']),
  );
  let value: unknown;
  try {
    value = body.length === 0 ? {} : JSON.parse(body.toString('utf8'));
  } catch (error) {
    throw new InvalidInputError(
      'BAD_REQUEST',
      `the request body is not valid JSON: ${(error as Error).message}`,
    );
  }
  return validate(schema, value, 'request body');
}

export function validate<S extends z.ZodType>(schema: S, value: unknown, what: string): z.output<S> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const problems = parsed.error.issues.map(
      (issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`,
    );
    throw new InvalidInputError('BAD_REQUEST', `invalid ${what}: ${problems.join('; ')}`);
  }
  return parsed.data;
}

/** A cache's public description; `baseUrl` is the server's URL as the client should use it. */
export function cacheInfo(
  baseUrl: string,
  cache: CacheRecord,
  publicKeys: readonly string[],
  ssh?: { readonly port: number; readonly hostKey: string },
  usage?: CacheUsage,
): CacheInfo {
  const host = new URL(baseUrl).hostname;
  return {
    name: cache.name,
    public: cache.isPublic,
    priority: cache.priority,
    storeDir: cache.storeDir,
    url: `${baseUrl}/${cache.name}`,
    pushUrl: pushUrlOf(`${baseUrl}/${cache.name}`),
    publicKeys: [...publicKeys],
    upstreamKeys: [...cache.upstreamKeys],
    ssh:
      ssh === undefined
        ? null
        : {
            url: `ssh-ng://${cache.name}@${host}`,
            host: host.replace(/^\[(.*)\]$/, '$1'),
            port: ssh.port,
            hostKey: ssh.hostKey,
          },
    retentionSeconds: cache.retentionMs === undefined ? null : Math.round(cache.retentionMs / 1000),
    maxSize: cache.maxSize ?? null,
    ...(usage === undefined
      ? {}
      : {
          usage: {
            paths: usage.paths,
            narBytes: usage.narBytes,
            storedBytes: usage.storedBytes,
            lastPushAt: usage.lastPushAt?.toISOString() ?? null,
          },
        }),
  };
}

export function pathInfo({ path, nar }: PathWithNar): PathInfo {
  return {
    storePath: path.storePath,
    narHash: `sha256:${path.narHash}`,
    narSize: path.narSize,
    compression: nar.compression,
    fileSize: nar.fileSize,
    references: [...path.references],
    deriver: path.deriver ?? null,
    ca: path.ca ?? null,
    signatures: [...path.signatures],
    createdAt: path.createdAt.toISOString(),
  };
}

export function pinInfo(pin: PinRecord): PinInfo {
  return {
    name: pin.name,
    storePath: pin.storePath,
    createdAt: pin.createdAt.toISOString(),
    expiresAt: pin.expiresAt?.toISOString() ?? null,
  };
}

export function keyInfo(key: SigningKeyRecord): KeyInfo {
  return {
    name: key.name,
    publicKey: key.publicKey,
    createdAt: key.createdAt.toISOString(),
    retiredAt: key.retiredAt?.toISOString() ?? null,
  };
}

export function tokenInfo(token: TokenRecord): TokenInfo {
  return {
    id: token.id,
    description: token.description,
    scopes: token.scopes.map((scope) => ({ cache: scope.cachePattern, permissions: [...scope.permissions] })),
    createdAt: token.createdAt.toISOString(),
    expiresAt: token.expiresAt?.toISOString() ?? null,
    revokedAt: token.revokedAt?.toISOString() ?? null,
  };
}

export function sshKeyInfo(token: TokenRecord): SshKeyInfo {
  return {
    ...tokenInfo(token),
    fingerprint: token.sshKey?.fingerprint ?? '',
    publicKey: token.sshKey?.publicKey ?? '',
  };
}
