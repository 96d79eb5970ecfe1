// The legacy serve protocol (`nix-store --serve [--write]`, ssh:// stores; PROTOCOL.md §8) for one cache.
// Reads and uploads go through the CacheService with the session's principal, re-authorized for every
// command (so a revoked key loses access within the refresh interval), and uploads take the same path as
// the JSON API's one-request upload: verified while streamed, references checked, conflicts refused,
// signed with the cache's keys. The protocol has no error channel: an error is printed to stderr and the
// session ends, which is what `nix-store --serve` does and what Nix clients expect (they show the text).

import { Readable } from 'node:stream';
import type { CacheService } from '../cache/cache-service.js';
import type { CacheRecord, PathRecord, Permission } from '../db/metadata-store.js';
import {
  InvalidInputError,
  ProtocolError,
  StorageError,
  TooLargeError,
  UnsupportedError,
} from '../errors.js';
import { Hash } from '../nix/hash.js';
import { StorePath } from '../nix/store-path.js';
import { WIRE_MAX_LIST, type WireReader, type WireWriter } from '../nix/wire.js';

export const SERVE_MAGIC_1 = 0x390c9deb;
export const SERVE_MAGIC_2 = 0x5452eecb;
/**
 * 2.5: AddToStoreNar for uploads, narHash/ca/sigs in QueryPathInfos. Every Nix from 2.8 to 2.35 accepts it;
 * claiming more would promise build-result encodings a cache has no use for.
 */
export const SERVE_PROTOCOL_VERSION = 0x205;

export const ServeCommand = {
  QueryValidPaths: 1,
  QueryPathInfos: 2,
  DumpStorePath: 3,
  ImportPaths: 4,
  ExportPaths: 5,
  BuildPaths: 6,
  QueryClosure: 7,
  BuildDerivation: 8,
  AddToStoreNar: 9,
} as const;

/** What both protocols need from the session: the cache, opened for an operation with a fresh principal. */
export interface ProtocolContext {
  readonly service: CacheService;
  readonly cacheName: string;
  /** The cache, if the session's principal (re-checked when stale) may do `needed` on it; throws otherwise. */
  openCache(needed: Permission): Promise<CacheRecord>;
  /** Aborts when the session must end (shutdown, the connection closed). */
  readonly signal: AbortSignal;
  /** Waits for the next command at most this long. */
  readonly idleTimeoutMs: number;
  readonly log: { debug(obj: object, msg: string): void; info(obj: object, msg: string): void };
}

/** Runs `read` with a signal that aborts with the session's, or after the idle timeout with an error. */
export async function withIdleTimeout<T>(
  ctx: ProtocolContext,
  read: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const timeout = new AbortController();
  const timer = setTimeout(() => {
    timeout.abort(new ProtocolError(`the client sent nothing for ${Math.round(ctx.idleTimeoutMs / 1000)} s`));
  }, ctx.idleTimeoutMs);
  try {
    return await read(AbortSignal.any([ctx.signal, timeout.signal]));
  } finally {
    clearTimeout(timer);
  }
}

/** Parses a full store path of the cache's store directory; an invalid one is a protocol error. */
export function parseFullPath(text: string, storeDir: string): StorePath {
  try {
    return StorePath.parse(text, storeDir);
  } catch (error) {
    throw new InvalidInputError(
      'STORE_PATH_INVALID',
      `invalid store path ${JSON.stringify(text.slice(0, 200))}`,
      { cause: error },
    );
  }
}

/** The closure of `paths` within the cache (each path and everything it references), bounded. */
export async function cacheClosure(
  ctx: ProtocolContext,
  cache: CacheRecord,
  paths: readonly string[],
  limit = WIRE_MAX_LIST,
): Promise<string[]> {
  const seen = new Set<string>();
  const queue = [...paths];
  while (queue.length > 0) {
    const path = queue.pop() ?? '';
    if (seen.has(path)) continue;
    parseFullPath(path, cache.storeDir);
    const found = await ctx.service.getPathInfo(cache, path);
    if (found === undefined) {
      throw new InvalidInputError('NOT_FOUND', `path '${path}' is not in cache ${cache.name}`);
    }
    seen.add(path);
    if (seen.size > limit) {
      throw new UnsupportedError(`the closure has more than ${limit} paths, more than niche sends at once`);
    }
    for (const reference of found.path.references) {
      const full = `${cache.storeDir}/${reference}`;
      if (!seen.has(full)) queue.push(full);
    }
  }
  return [...seen].sort();
}

/** A readable of exactly `length` bytes taken from the wire (a NAR being uploaded). */
export class WirePayload extends Readable {
  readonly #reader: WireReader;
  #left: number;
  readonly #signal: AbortSignal;

  constructor(reader: WireReader, length: number, signal: AbortSignal) {
    super({ highWaterMark: 256 * 1024 });
    this.#reader = reader;
    this.#left = length;
    this.#signal = signal;
    // Its consumer (the upload) learns of a failure from its next read or from `errored`; between two
    // reads nobody may be listening, and that is not a crash.
    this.on('error', () => undefined);
  }

  /** Bytes of the payload not read yet. */
  get left(): number {
    return this.#left;
  }

  override _read(size: number): void {
    if (this.#left === 0) {
      this.push(null);
      return;
    }
    this.#reader.readSome(Math.min(this.#left, Math.max(size, 64 * 1024)), this.#signal).then(
      (chunk) => {
        if (this.destroyed) {
          if (chunk !== null) this.#reader.unread(chunk);
          return;
        }
        if (chunk === null) {
          this.destroy(new ProtocolError(`the connection ended with ${this.#left} bytes of the NAR unsent`));
          return;
        }
        this.#left -= chunk.length;
        this.push(Buffer.from(chunk));
        if (this.#left === 0) this.push(null);
      },
      (error: unknown) => {
        if (!this.destroyed) this.destroy(error as Error);
      },
    );
  }

  /** Reads and drops what is left of the payload, to keep the wire in step. */
  async skipRest(): Promise<void> {
    const left = this.#left;
    this.#left = 0;
    if (left > 0) await this.#reader.readBytesInto(left, () => undefined, 'the NAR', this.#signal);
  }
}

/** Streams the uncompressed NAR of `path` to the writer's destination. */
export async function sendNar(
  ctx: ProtocolContext,
  cache: CacheRecord,
  path: string,
  write: (chunk: Buffer) => Promise<void>,
): Promise<void> {
  const found = await ctx.service.getPathInfo(cache, path);
  if (found === undefined) {
    throw new InvalidInputError('NOT_FOUND', `path '${path}' is not in cache ${cache.name}`);
  }
  const nar = await ctx.service.openPlainNar(cache, found.nar);
  if (nar === undefined) {
    throw new StorageError(`the NAR of ${path} is missing from the blob store`);
  }
  let sent = 0;
  try {
    for await (const chunk of nar) {
      sent += (chunk as Buffer).length;
      await write(chunk as Buffer);
    }
  } finally {
    nar.destroy();
  }
  if (sent !== found.path.narSize) {
    throw new StorageError(`the NAR of ${path} has ${sent} bytes, not ${found.path.narSize}`);
  }
}

/** The upload of one path, as either protocol describes it. */
export interface AddPathRequest {
  readonly path: string;
  readonly deriver: string;
  readonly narHash: string;
  readonly references: readonly string[];
  readonly narSize: number;
  readonly sigs: readonly string[];
  readonly ca: string;
}

/**
 * Adds a path whose NAR follows on the wire, through the same checks as an HTTP upload. The NAR is read
 * to its end even when the path needs none of it (already present), so the wire stays in step.
 */
export async function addPathFromWire(
  ctx: ProtocolContext,
  reader: WireReader,
  request: AddPathRequest,
): Promise<'added' | 'unchanged'> {
  const cache = await ctx.openCache('push');
  const storePath = parseFullPath(request.path, cache.storeDir);
  const baseName = (text: string, what: string): string => {
    const parsed = parseFullPath(text, cache.storeDir);
    if (parsed.toString(cache.storeDir) !== text) {
      throw new InvalidInputError('STORE_PATH_INVALID', `invalid ${what} ${JSON.stringify(text)}`);
    }
    return parsed.baseName;
  };
  let narHash: Hash;
  try {
    narHash = Hash.parseAny(request.narHash, 'sha256');
  } catch (error) {
    throw new InvalidInputError('HASH_INVALID', `invalid narHash ${JSON.stringify(request.narHash)}`, {
      cause: error,
    });
  }
  if (request.narSize > ctx.service.limits.maxNarSize) {
    throw new TooLargeError(
      `the NAR of ${request.path} is ${request.narSize} bytes, more than this server's max-nar-size ` +
        `(${ctx.service.limits.maxNarSize})`,
    );
  }
  const payload = new WirePayload(reader, request.narSize, ctx.signal);
  try {
    const result = await ctx.service.uploadPath(
      cache,
      storePath.hash,
      {
        storePath: request.path,
        narHash: `${narHash.algorithm}:${narHash.toNix32()}`,
        narSize: request.narSize,
        references: request.references.map((r) => baseName(r, 'reference')),
        deriver: request.deriver === '' ? undefined : baseName(request.deriver, 'deriver'),
        signatures: request.sigs,
        ca: request.ca === '' ? undefined : request.ca,
        compression: 'none',
      },
      payload,
      { contentLength: request.narSize, signal: ctx.signal },
    );
    payload.destroy();
    await payload.skipRest();
    ctx.log.info({ cache: cache.name, path: request.path, status: result.status }, 'path received over SSH');
    return result.status;
  } finally {
    payload.destroy();
  }
}

function pathInfoFields(writer: WireWriter, storeDir: string, path: PathRecord): void {
  writer
    .string(path.storePath)
    .string(path.deriver === undefined ? '' : `${storeDir}/${path.deriver}`)
    .strings(path.references.map((r) => `${storeDir}/${r}`))
    .u64(path.narSize) // downloadSize: the NAR is sent uncompressed
    .u64(path.narSize)
    .string(`sha256:${path.narHash}`)
    .string(path.ca ?? '')
    .strings(path.signatures);
}

/** Runs the serve protocol until the client closes its side; throws what ends it otherwise. */
export async function runServeProtocol(
  ctx: ProtocolContext,
  reader: WireReader,
  writer: WireWriter,
  options: { readonly write: boolean },
): Promise<void> {
  const magic = await withIdleTimeout(ctx, (idle) => reader.readU64('the serve protocol magic', idle));
  if (magic !== SERVE_MAGIC_1) {
    throw new ProtocolError(`not the serve protocol: magic 0x${magic.toString(16)}`);
  }
  // Access is checked before the handshake is answered: a client refused here fails to connect (with
  // niche's message on stderr) instead of connecting and failing at its first command, which a
  // `nix store ping` never sends. Every command checks access again.
  await ctx.openCache('pull');
  await writer.u64(SERVE_MAGIC_2).u64(SERVE_PROTOCOL_VERSION).flush();
  const clientVersion = await withIdleTimeout(ctx, (idle) => reader.readU64('the client version', idle));
  if (clientVersion >> 8 !== 2) {
    throw new ProtocolError(`unsupported serve protocol version 0x${clientVersion.toString(16)}`);
  }
  const signal = ctx.signal;

  for (;;) {
    if (await withIdleTimeout(ctx, (idle) => reader.atEnd(idle))) return;
    const command: number = await reader.readU64('a serve command', signal);
    ctx.log.debug({ command }, 'serve command');
    switch (command) {
      case ServeCommand.QueryValidPaths: {
        await reader.readBool('lock', signal);
        await reader.readBool('substitute', signal);
        const paths = await reader.readStrings('paths', signal);
        const cache = await ctx.openCache('pull');
        for (const path of paths) parseFullPath(path, cache.storeDir);
        const missing = new Set(await ctx.service.missingPaths(cache, paths));
        await writer.strings(paths.filter((p) => !missing.has(p))).flush();
        break;
      }
      case ServeCommand.QueryPathInfos: {
        const paths = await reader.readStrings('paths', signal);
        const cache = await ctx.openCache('pull');
        for (const path of paths) {
          parseFullPath(path, cache.storeDir);
          const found = await ctx.service.getPathInfo(cache, path);
          if (found !== undefined) pathInfoFields(writer, cache.storeDir, found.path);
          await writer.flushIfFull();
        }
        await writer.string('').flush();
        break;
      }
      case ServeCommand.DumpStorePath: {
        const path = await reader.readString('the store path', signal);
        const cache = await ctx.openCache('pull');
        parseFullPath(path, cache.storeDir);
        await writer.flush();
        await sendNar(ctx, cache, path, (chunk) => writer.raw(chunk).flush());
        break;
      }
      case ServeCommand.QueryClosure: {
        await reader.readBool('includeOutputs', signal);
        const paths = await reader.readStrings('paths', signal);
        const cache = await ctx.openCache('pull');
        await writer.strings(await cacheClosure(ctx, cache, paths)).flush();
        break;
      }
      case ServeCommand.AddToStoreNar: {
        const path = await reader.readString('the store path', signal);
        const deriver = await reader.readString('the deriver', signal);
        const narHash = await reader.readString('the NAR hash', signal);
        const references = await reader.readStrings('the references', signal);
        await reader.readU64('registrationTime', signal);
        const narSize = await reader.readU64('narSize', signal);
        await reader.readBool('ultimate', signal);
        const sigs = await reader.readStrings('the signatures', signal);
        const ca = await reader.readString('the content address', signal);
        if (!options.write) {
          throw new UnsupportedError('this session is read-only: the client did not ask for --write');
        }
        await addPathFromWire(ctx, reader, { path, deriver, narHash, references, narSize, sigs, ca });
        await writer.u64(1).flush();
        break;
      }
      case ServeCommand.ImportPaths:
        throw new UnsupportedError(
          'niche takes uploads over ssh:// with AddToStoreNar (serve protocol 2.5, every Nix since 2.4), not ImportPaths',
        );
      case ServeCommand.ExportPaths:
        throw new UnsupportedError('ExportPaths is not served (no Nix client sends it); use DumpStorePath');
      case ServeCommand.BuildPaths:
      case ServeCommand.BuildDerivation:
        throw new UnsupportedError(
          `niche is a binary cache: it does not build (cache ${ctx.cacheName} serves and receives store paths only)`,
        );
      default:
        throw new ProtocolError(`unknown serve command ${command}`);
    }
  }
}
