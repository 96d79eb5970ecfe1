// The worker protocol (`nix-daemon --stdio`, ssh-ng:// stores; PROTOCOL-worker.md §10) for one cache: the
// part a binary cache serves. Reads (path info, NARs, the queries `nix copy --from` and `nix path-info` send
// first) and uploads (AddMultipleToStore, AddToStoreNar) go through the CacheService with the session's
// principal, re-authorized for every operation; uploads take the same checks as HTTP uploads (see
// serve-protocol.ts, whose helpers are shared). Everything else is refused with the protocol's error, which
// the client prints, after its whole request has been read so that the session stays usable (§10.4.4).
//
// An operation's failure is the client's to see: it goes out as STDERR_ERROR (with niche's message and
// code) and the session goes on, except where the wire can no longer be trusted (an unparsable request, a
// NAR that failed part-way, a NarFromPath refusal, which Nix up to 2.22 would not read: §10.4.5), where the
// error is sent and the session ends. runWorkerProtocol then returns that error, already reported.

import { Readable } from 'node:stream';
import type { CacheRecord, PathRecord } from '../db/metadata-store.js';
import { InvalidInputError, isNicheError, ProtocolError, UnsupportedError } from '../errors.js';
import { Hash } from '../nix/hash.js';
import { WireReader, type WireWriter } from '../nix/wire.js';
import {
  addPathFromWire,
  parseFullPath,
  sendNar,
  withIdleTimeout,
  type AddPathRequest,
  type ProtocolContext,
} from './serve-protocol.js';

export const WORKER_MAGIC_1 = 0x6e697863;
export const WORKER_MAGIC_2 = 0x6478696f;
/** 1.38, with no features: Nix 2.24 to 2.33 speak it, older clients negotiate down (§10.3). */
export const WORKER_PROTOCOL_VERSION = 0x126;
/** The oldest client accepted (Nix 2.0 speaks 1.20; the real daemon refuses below 1.10). */
const MIN_CLIENT_MINOR = 10;
/** Shown by `nix store info` as the server's version. */
const SERVER_VERSION = 'niche';
/** The handshake's trusted word: 2 = not a trusted user (niche checks every upload itself). */
const NOT_TRUSTED = 2;

export const Stderr = {
  Last: 0x616c7473,
  Error: 0x63787470,
  Next: 0x6f6c6d67,
  Read: 0x64617461,
} as const;

export const WorkerOp = {
  IsValidPath: 1,
  HasSubstitutes: 3,
  QueryPathHash: 4,
  QueryReferences: 5,
  QueryReferrers: 6,
  AddToStore: 7,
  AddTextToStore: 8,
  BuildPaths: 9,
  EnsurePath: 10,
  AddTempRoot: 11,
  AddIndirectRoot: 12,
  SyncWithGC: 13,
  FindRoots: 14,
  ExportPath: 16,
  QueryDeriver: 18,
  SetOptions: 19,
  CollectGarbage: 20,
  QuerySubstitutablePathInfo: 21,
  QueryDerivationOutputs: 22,
  QueryAllValidPaths: 23,
  QueryFailedPaths: 24,
  ClearFailedPaths: 25,
  QueryPathInfo: 26,
  ImportPaths: 27,
  QueryDerivationOutputNames: 28,
  QueryPathFromHashPart: 29,
  QuerySubstitutablePathInfos: 30,
  QueryValidPaths: 31,
  QuerySubstitutablePaths: 32,
  QueryValidDerivers: 33,
  OptimiseStore: 34,
  VerifyStore: 35,
  BuildDerivation: 36,
  AddSignatures: 37,
  NarFromPath: 38,
  AddToStoreNar: 39,
  QueryMissing: 40,
  QueryDerivationOutputMap: 41,
  RegisterDrvOutput: 42,
  QueryRealisation: 43,
  AddMultipleToStore: 44,
  AddBuildLog: 45,
  BuildPathsWithResults: 46,
  AddPermRoot: 47,
} as const;

const OP_NAMES = new Map<number, string>(Object.entries(WorkerOp).map(([name, op]) => [op, name]));

/** BuildResult statuses a cache answers with. */
const BuildStatus = { AlreadyValid: 2, MiscFailure: 9, NoSubstituters: 14 } as const;

/** Most bytes asked for with one STDERR_READ (AddToStoreNar at 1.21–1.22). */
const TUNNEL_CHUNK = 64 * 1024;

/** A framed stream's payload may be a whole closure; its strings (a build log, a text file) are skipped, not read. */
const MAX_SKIPPED_STRING = 1 << 30;

/** The session must end after this error (the wire is out of step, or the client would wait forever). */
class FatalOpError extends Error {
  constructor(readonly error: Error) {
    super(error.message, { cause: error });
  }
}

function asError(caught: unknown): Error {
  return caught instanceof Error ? caught : new Error(String(caught));
}

/** The message the client prints after `error: `. */
function clientMessage(error: Error): string {
  if (isNicheError(error)) return `niche: ${error.message} [${error.code}]`;
  return 'niche: internal error; see the server log';
}

/** A framed stream (§10.5) as a Readable: frame payloads in order, ending at the 0 frame. */
class FramedSource extends Readable {
  readonly #reader: WireReader;
  readonly #signal: AbortSignal;
  /** Bytes of the current frame not read yet. */
  #left = 0;
  #ended = false;
  #pumping: Promise<void> | undefined;

  constructor(reader: WireReader, signal: AbortSignal) {
    super({ highWaterMark: 256 * 1024 });
    this.#reader = reader;
    this.#signal = signal;
    this.on('error', () => undefined);
  }

  override _read(size: number): void {
    this.#pumping = this.#pump(size).catch((error: unknown) => {
      if (!this.destroyed) this.destroy(asError(error));
    });
  }

  async #pump(size: number): Promise<void> {
    if (this.#ended) {
      this.push(null);
      return;
    }
    if (this.#left === 0) {
      const length = await this.#reader.readU64('a frame length', this.#signal);
      if (length === 0) {
        this.#ended = true;
        if (!this.destroyed) this.push(null);
        return;
      }
      this.#left = length;
    }
    const chunk = await this.#reader.readSome(Math.min(this.#left, Math.max(size, 64 * 1024)), this.#signal);
    if (chunk === null) throw new ProtocolError('the connection ended inside a framed upload');
    this.#left -= chunk.length;
    if (this.destroyed) {
      // Given back: drain() skips it with the rest of the frame.
      this.#left += chunk.length;
      this.#reader.unread(chunk);
      return;
    }
    this.push(Buffer.from(chunk));
  }

  /** Stops reading ahead and skips the rest of the stream, terminator included, on the outer wire. */
  async drain(): Promise<void> {
    this.destroy();
    await this.#pumping;
    while (!this.#ended) {
      if (this.#left > 0) {
        const left = this.#left;
        this.#left = 0;
        await this.#reader.readBytesInto(left, () => undefined, 'a frame', this.#signal);
      }
      const length = await this.#reader.readU64('a frame length', this.#signal);
      if (length === 0) this.#ended = true;
      else this.#left = length;
    }
  }
}

/** Reads what is left of a framed upload's payload after the operation, and checks nothing was left over. */
async function finishFramed(inner: WireReader, framed: FramedSource, signal: AbortSignal): Promise<void> {
  const extra = !(await inner.atEnd(signal));
  await framed.drain();
  if (extra) throw new ProtocolError('the upload carried data after its last path');
}

export interface WorkerSession {
  readonly ctx: ProtocolContext;
  readonly reader: WireReader;
  readonly writer: WireWriter;
}

/**
 * Runs the worker protocol until the client closes its side. Returns undefined, or the error that ended
 * the session after it was sent to the client; throws what ends it otherwise (the connection failed).
 */
export async function runWorkerProtocol(
  ctx: ProtocolContext,
  reader: WireReader,
  writer: WireWriter,
): Promise<Error | undefined> {
  const magic = await withIdleTimeout(ctx, (idle) => reader.readU64('the worker protocol magic', idle));
  if (magic !== WORKER_MAGIC_1) {
    throw new ProtocolError(`not the worker protocol: magic 0x${magic.toString(16)}`);
  }
  // Answered before the client's version is read: Nix 2.8 sends its magic alone and waits (§10.12).
  await writer.u64(WORKER_MAGIC_2).u64(WORKER_PROTOCOL_VERSION).flush();
  const clientVersion = await withIdleTimeout(ctx, (idle) => reader.readU64('the client version', idle));
  if (clientVersion >> 8 !== 1 || (clientVersion & 0xff) < MIN_CLIENT_MINOR) {
    throw new ProtocolError(`unsupported worker protocol version 0x${clientVersion.toString(16)}`);
  }
  const minor = Math.min(clientVersion & 0xff, WORKER_PROTOCOL_VERSION & 0xff);
  const signal = ctx.signal;
  if (minor >= 38) {
    await reader.readStrings('the client features', signal, 100);
    await writer.strings([]).flush();
  }
  if (minor >= 14 && (await reader.readU64('the cpu affinity flag', signal)) !== 0) {
    await reader.readU64('the cpu affinity', signal);
  }
  if (minor >= 11) await reader.readU64('reserveSpace', signal);
  if (minor >= 33) writer.string(SERVER_VERSION);
  if (minor >= 35) writer.u64(NOT_TRUSTED);
  const session = new Session(ctx, reader, writer, minor);
  // Access is checked before the handshake ends: a refused client fails to connect, with the message.
  try {
    await ctx.openCache('pull');
  } catch (caught) {
    const error = asError(caught);
    await session.sendError(error);
    return error;
  }
  await writer.u64(Stderr.Last).flush();

  for (;;) {
    if (await withIdleTimeout(ctx, (idle) => reader.atEnd(idle))) return undefined;
    const op = await reader.readU64('an operation', signal);
    ctx.log.debug({ op: OP_NAMES.get(op) ?? op }, 'worker operation');
    try {
      await session.run(op);
    } catch (caught) {
      if (caught instanceof ReportedError) continue;
      if (caught instanceof FatalOpError) {
        await session.sendError(caught.error);
        return caught.error;
      }
      const error = asError(caught);
      // A broken wire (the client's stream ended, a malformed frame, an abort) ends the session as it is.
      if (!isNicheError(error) || error instanceof ProtocolError) throw error;
      ctx.log.debug({ op, code: error.code, err: error }, 'worker operation refused');
      await session.sendError(error);
    }
  }
}

class Session {
  readonly #ctx: ProtocolContext;
  readonly #reader: WireReader;
  readonly #writer: WireWriter;
  readonly #minor: number;

  constructor(ctx: ProtocolContext, reader: WireReader, writer: WireWriter, minor: number) {
    this.#ctx = ctx;
    this.#reader = reader;
    this.#writer = writer;
    this.#minor = minor;
  }

  get #signal(): AbortSignal {
    return this.#ctx.signal;
  }

  /** STDERR_ERROR in the negotiated format (§10.4.2). */
  async sendError(error: Error): Promise<void> {
    const message = clientMessage(error);
    this.#writer.u64(Stderr.Error);
    if (this.#minor >= 26) {
      this.#writer.string('Error').u64(0).string('Error').string(message).u64(0).u64(0);
    } else {
      this.#writer.string(message).u64(1);
    }
    await this.#writer.flush();
  }

  #path(what = 'a store path'): Promise<string> {
    return this.#reader.readString(what, this.#signal);
  }

  #paths(what = 'store paths'): Promise<string[]> {
    return this.#reader.readStrings(what, this.#signal);
  }

  async #flag(what: string): Promise<boolean> {
    return (await this.#reader.readU64(what, this.#signal)) !== 0;
  }

  /** Reads a u64 whose value does not matter, whatever it is (2^64 - 1 included: `nix store gc`'s maxFreed). */
  async #skipU64(what: string): Promise<void> {
    await this.#reader.readBytesInto(8, () => undefined, what, this.#signal);
  }

  /** Reads a string of up to MAX_SKIPPED_STRING bytes without keeping it. */
  async #skipString(what: string): Promise<void> {
    const length = await this.#reader.readU64(`the length of ${what}`, this.#signal);
    if (length > MAX_SKIPPED_STRING)
      throw new ProtocolError(`${what} is longer than ${MAX_SKIPPED_STRING} bytes`);
    const padded = length + ((8 - (length % 8)) % 8);
    await this.#reader.readBytesInto(padded, () => undefined, what, this.#signal);
  }

  #last(): void {
    this.#writer.u64(Stderr.Last);
  }

  async run(op: number): Promise<void> {
    const reader = this.#reader;
    const writer = this.#writer;
    const signal = this.#signal;
    switch (op) {
      case WorkerOp.IsValidPath: {
        const path = await this.#path();
        const cache = await this.#ctx.openCache('pull');
        const found = await this.#ctx.service.getPathInfo(cache, path);
        this.#last();
        await writer.bool(found !== undefined).flush();
        return;
      }
      case WorkerOp.QueryValidPaths: {
        const paths = await this.#paths();
        if (this.#minor >= 27) await this.#flag('substitute');
        const cache = await this.#ctx.openCache('pull');
        for (const path of paths) parseFullPath(path, cache.storeDir);
        const missing = new Set(await this.#ctx.service.missingPaths(cache, paths));
        this.#last();
        await writer.strings(paths.filter((path) => !missing.has(path))).flush();
        return;
      }
      case WorkerOp.QueryPathInfo: {
        const path = await this.#path();
        const cache = await this.#ctx.openCache('pull');
        parseFullPath(path, cache.storeDir);
        const found = await this.#ctx.service.getPathInfo(cache, path);
        if (this.#minor < 17 && found === undefined) {
          throw new InvalidInputError('NOT_FOUND', `path '${path}' is not valid`);
        }
        this.#last();
        if (this.#minor >= 17) writer.bool(found !== undefined);
        if (found !== undefined) this.#pathInfo(cache, found.path, this.#minor);
        await writer.flush();
        return;
      }
      case WorkerOp.QueryPathFromHashPart: {
        const hashPart = await reader.readString('a hash part', signal);
        const cache = await this.#ctx.openCache('pull');
        const path = await this.#ctx.service.pathFromHashPart(cache, hashPart);
        this.#last();
        await writer.string(path ?? '').flush();
        return;
      }
      case WorkerOp.NarFromPath: {
        const path = await this.#path();
        // Nix up to 2.22 reads a NAR whatever the reply: a refusal must end the session (§10.4.5), and a
        // NAR that fails part-way can only end it.
        const sent = { started: false };
        try {
          const cache = await this.#ctx.openCache('pull');
          parseFullPath(path, cache.storeDir);
          if ((await this.#ctx.service.getPathInfo(cache, path)) === undefined) {
            throw new InvalidInputError('NOT_FOUND', `path '${path}' is not in cache ${cache.name}`);
          }
          await sendNar(this.#ctx, cache, path, async (chunk) => {
            if (!sent.started) {
              sent.started = true;
              this.#last();
            }
            await writer.raw(chunk).flush();
          });
        } catch (caught) {
          throw sent.started ? caught : new FatalOpError(asError(caught));
        }
        return;
      }
      case WorkerOp.QueryMissing: {
        const targets = await reader.readStrings('the targets', signal);
        const cache = await this.#ctx.openCache('pull');
        const unknown: string[] = [];
        const opaque: string[] = [];
        for (const target of targets) {
          const { path, build } = this.#target(target, cache.storeDir);
          (build ? unknown : opaque).push(path);
        }
        unknown.push(...(await this.#ctx.service.missingPaths(cache, opaque)));
        this.#last();
        await writer.strings([]).strings([]).strings(unknown).u64(0).u64(0).flush();
        return;
      }
      case WorkerOp.BuildPathsWithResults:
      case WorkerOp.BuildPaths: {
        const targets = await reader.readStrings('the targets', signal);
        if (op === WorkerOp.BuildPathsWithResults || this.#minor >= 15)
          await reader.readU64('buildMode', signal);
        const cache = await this.#ctx.openCache('pull');
        // A failure's message is the one an error would carry, code included, as the client prints it.
        const results: { target: string; status: number; error?: Error }[] = [];
        const parsed = targets.map((target) => this.#target(target, cache.storeDir));
        const opaque = parsed.filter((target) => !target.build).map((target) => target.path);
        const missing = new Set(await this.#ctx.service.missingPaths(cache, opaque));
        for (const [i, target] of targets.entries()) {
          if (parsed[i]?.build !== false) {
            results.push({
              target,
              status: BuildStatus.MiscFailure,
              error: new UnsupportedError(
                `cache ${cache.name} is a binary cache: it does not build ${target}`,
              ),
            });
          } else if (missing.has(target)) {
            results.push({
              target,
              status: BuildStatus.NoSubstituters,
              error: new InvalidInputError('NOT_FOUND', `path '${target}' is not in cache ${cache.name}`),
            });
          } else results.push({ target, status: BuildStatus.AlreadyValid });
        }
        if (op === WorkerOp.BuildPaths) {
          const failed = results.find((result) => result.error !== undefined);
          if (failed?.error !== undefined) throw failed.error;
          this.#last();
          await writer.u64(1).flush();
          return;
        }
        this.#last();
        writer.u64(results.length);
        for (const result of results) {
          // Then timesBuilt, isNonDeterministic, startTime, stopTime (≥ 1.29, and this op needs 1.34),
          // cpuUser and cpuSystem, none (≥ 1.37), and no builtOutputs.
          writer
            .string(result.target)
            .u64(result.status)
            .string(result.error === undefined ? '' : clientMessage(result.error))
            .u64(0)
            .u64(0)
            .u64(0)
            .u64(0);
          if (this.#minor >= 37) writer.u64(0).u64(0);
          writer.u64(0);
        }
        await writer.flush();
        return;
      }
      case WorkerOp.AddMultipleToStore: {
        await this.#flag('repair');
        await this.#flag('dontCheckSigs');
        await this.#framed(async (inner) => {
          await this.#ctx.openCache('push');
          const count = await inner.readU64('the number of paths', signal);
          for (let i = 0; i < count; i++) {
            const info = await readPathInfo(inner, signal, 16, true);
            await addPathFromWire(this.#ctx, inner, info);
          }
        });
        this.#last();
        await writer.flush();
        return;
      }
      case WorkerOp.AddToStoreNar: {
        const path = await this.#path();
        const rest = await readPathInfo(reader, signal, 16, false);
        await this.#flag('repair');
        await this.#flag('dontCheckSigs');
        const info = { ...rest, path };
        if (this.#minor >= 23) {
          await this.#framed(async (inner) => {
            await addPathFromWire(this.#ctx, inner, info);
          });
        } else if (this.#minor >= 21) {
          await this.#tunnelled(info);
        } else {
          // Below 1.21 the NAR follows inline, as long as narSize says: a refusal leaves it on the wire.
          try {
            await addPathFromWire(this.#ctx, reader, info);
          } catch (caught) {
            const error = asError(caught);
            throw isNicheError(error) ? new FatalOpError(error) : error;
          }
        }
        this.#last();
        await writer.flush();
        return;
      }
      case WorkerOp.SetOptions: {
        for (let i = 0; i < 12; i++) await this.#skipU64('an option');
        if (this.#minor >= 12) {
          const count = await reader.readCount('the overridden settings', signal, 10_000);
          for (let i = 0; i < count; i++) {
            await reader.readString('a setting name', signal);
            await reader.readString('a setting value', signal);
          }
        }
        this.#last();
        await writer.flush();
        return;
      }
      case WorkerOp.QueryReferrers:
      case WorkerOp.QueryValidDerivers: {
        await this.#path();
        await this.#ctx.openCache('pull');
        this.#last();
        await writer.strings([]).flush();
        return;
      }
      case WorkerOp.QuerySubstitutablePaths: {
        await this.#paths();
        this.#last();
        await writer.strings([]).flush();
        return;
      }
      case WorkerOp.QuerySubstitutablePathInfos: {
        if (this.#minor >= 22) {
          const count = await reader.readCount('the paths', signal);
          for (let i = 0; i < count; i++) {
            await this.#path();
            await reader.readString('a content address', signal);
          }
        } else await this.#paths();
        this.#last();
        await writer.u64(0).flush();
        return;
      }
      case WorkerOp.QueryRealisation: {
        await reader.readString('a derivation output', signal);
        await this.#ctx.openCache('pull');
        this.#last();
        await writer.strings([]).flush();
        return;
      }
      case WorkerOp.AddTempRoot: {
        await this.#path();
        this.#last();
        await writer.u64(1).flush();
        return;
      }
      case WorkerOp.SyncWithGC: {
        this.#last();
        await writer.u64(1).flush();
        return;
      }
      default:
        await this.#refuse(op);
    }
  }

  /** Reads the request of an operation a cache does not do, then refuses it (§10.8). */
  async #refuse(op: number): Promise<void> {
    const reader = this.#reader;
    const signal = this.#signal;
    const name = OP_NAMES.get(op);
    const refusal = new UnsupportedError(
      `operation ${op}${name === undefined ? '' : ` (${name})`} is not supported by this cache: niche serves ` +
        `and receives store paths only (cache ${this.#ctx.cacheName})`,
    );
    switch (op) {
      case WorkerOp.HasSubstitutes:
      case WorkerOp.QueryPathHash:
      case WorkerOp.QueryReferences:
      case WorkerOp.EnsurePath:
      case WorkerOp.QueryDeriver:
      case WorkerOp.QuerySubstitutablePathInfo:
      case WorkerOp.QueryDerivationOutputs:
      case WorkerOp.QueryDerivationOutputNames:
      case WorkerOp.AddIndirectRoot:
      case WorkerOp.QueryDerivationOutputMap:
        await this.#path();
        break;
      case WorkerOp.FindRoots:
      case WorkerOp.QueryAllValidPaths:
      case WorkerOp.OptimiseStore:
        break;
      case WorkerOp.ExportPath:
        await this.#path();
        await reader.readU64('sign', signal);
        break;
      case WorkerOp.AddTextToStore:
        await reader.readString('a name', signal);
        await this.#skipString('the text');
        await this.#paths('the references');
        break;
      case WorkerOp.CollectGarbage:
        await reader.readU64('action', signal);
        await this.#paths();
        // ignoreLiveness, maxFreed (2^64 - 1 for no limit), and three obsolete words.
        for (let i = 0; i < 5; i++) await this.#skipU64('a GC option');
        break;
      case WorkerOp.VerifyStore:
        await reader.readU64('checkContents', signal);
        await reader.readU64('repair', signal);
        break;
      case WorkerOp.AddSignatures:
        await this.#path();
        await reader.readStrings('the signatures', signal);
        break;
      case WorkerOp.RegisterDrvOutput:
        await this.#skipString('the realisation');
        if (this.#minor < 31) await this.#path();
        break;
      case WorkerOp.AddPermRoot:
        await this.#path();
        await this.#path('the GC root');
        break;
      case WorkerOp.BuildDerivation: {
        await this.#path('the derivation');
        const outputs = await reader.readCount('the outputs', signal, 1000);
        for (let i = 0; i < outputs * 4; i++) await reader.readString('an output field', signal);
        await this.#paths('the input sources');
        await reader.readString('the platform', signal);
        await reader.readString('the builder', signal);
        await reader.readStrings('the arguments', signal);
        const env = await reader.readCount('the environment', signal, 100_000);
        for (let i = 0; i < env * 2; i++) await this.#skipString('an environment entry');
        await reader.readU64('buildMode', signal);
        break;
      }
      case WorkerOp.AddToStore:
        if (this.#minor < 25) throw new FatalOpError(refusal);
        await reader.readString('a name', signal);
        await reader.readString('a content-address method', signal);
        await this.#paths('the references');
        await reader.readU64('repair', signal);
        await this.#framed(() => Promise.reject(refusal));
        return;
      case WorkerOp.AddBuildLog:
        await reader.readString('a derivation', signal);
        await this.#framed(() => Promise.reject(refusal));
        return;
      default:
        // ImportPaths' data would come on request, the removed ops and unknown ones have no known layout.
        throw new FatalOpError(
          name === undefined ? new ProtocolError(`operation ${op} is not supported by this cache`) : refusal,
        );
    }
    throw refusal;
  }

  /**
   * Runs `work` on the payload of a framed stream that follows on the wire. On failure the error goes out
   * at once (so the client stops sending, §10.5) and the rest of the stream is read and dropped; the
   * failure is then thrown as already reported.
   */
  async #framed(work: (inner: WireReader) => Promise<void>): Promise<void> {
    const framed = new FramedSource(this.#reader, this.#signal);
    const inner = new WireReader(framed);
    try {
      await work(inner);
      await finishFramed(inner, framed, this.#signal);
    } catch (caught) {
      const error = asError(caught);
      // Not niche's refusal (an abort, a bug): the session ends, reported by its runner.
      if (!isNicheError(error)) throw error;
      await this.sendError(error);
      // Throws if the wire itself is broken, which ends the session.
      await framed.drain();
      throw new ReportedError(error);
    }
  }

  /**
   * Adds a path whose NAR the client sends when asked (STDERR_READ, 1.21–1.22): never more than narSize in
   * all, and no request is left unanswered when the operation ends, so a refusal keeps the session.
   */
  async #tunnelled(info: AddPathRequest): Promise<void> {
    const tunnel = new TunnelSource(this.#reader, this.#writer, info.narSize, this.#signal);
    try {
      await addPathFromWire(this.#ctx, new WireReader(tunnel), info);
    } catch (caught) {
      await tunnel.settle();
      // The client's answers themselves were wrong: the wire cannot be trusted any more.
      if (tunnel.failure !== undefined) throw new FatalOpError(tunnel.failure);
      throw caught;
    }
    await tunnel.settle();
  }

  /**
   * The store path a DerivedPath string (§10.7.6) names, and whether it asks for a build: `drv!outputs`,
   * and below 1.30 a bare .drv too (from 1.30 on, that is the derivation file itself).
   */
  #target(target: string, storeDir: string): { path: string; build: boolean } {
    const bang = target.indexOf('!');
    const path = bang === -1 ? target : target.slice(0, bang);
    parseFullPath(path, storeDir);
    return { path, build: bang !== -1 || (this.#minor < 30 && path.endsWith('.drv')) };
  }

  /** The unkeyed ValidPathInfo (§10.6) at `format`. */
  #pathInfo(cache: CacheRecord, path: PathRecord, format: number): void {
    const storeDir = cache.storeDir;
    this.#writer
      .string(path.deriver === undefined ? '' : `${storeDir}/${path.deriver}`)
      .string(Hash.parseAny(path.narHash, 'sha256').toBase16())
      .strings(path.references.map((reference) => `${storeDir}/${reference}`))
      .u64(Math.floor(path.createdAt.getTime() / 1000))
      .u64(path.narSize);
    if (format >= 16) {
      this.#writer
        .u64(0) // ultimate: niche did not build it
        .strings(path.signatures)
        .string(path.ca ?? '');
    }
  }
}

/** The NAR of an AddToStoreNar at 1.21–1.22 (§10.7.8), asked for with STDERR_READ as it is read. */
class TunnelSource extends Readable {
  readonly #reader: WireReader;
  readonly #writer: WireWriter;
  readonly #signal: AbortSignal;
  /** Bytes not asked for yet. */
  #left: number;
  #asking: Promise<void> | undefined;
  /** Why asking failed (the client's answer was wrong, or the connection broke). */
  failure: Error | undefined;

  constructor(reader: WireReader, writer: WireWriter, length: number, signal: AbortSignal) {
    super({ highWaterMark: TUNNEL_CHUNK });
    this.#reader = reader;
    this.#writer = writer;
    this.#left = length;
    this.#signal = signal;
    this.on('error', () => undefined);
  }

  override _read(): void {
    if (this.#left === 0) {
      this.push(null);
      return;
    }
    this.#asking = this.#ask().catch((error: unknown) => {
      this.failure = asError(error);
      if (!this.destroyed) this.destroy(this.failure);
    });
  }

  async #ask(): Promise<void> {
    const wanted = Math.min(this.#left, TUNNEL_CHUNK);
    await this.#writer.u64(Stderr.Read).u64(wanted).flush();
    const data = await this.#reader.readBytes('the data asked for with STDERR_READ', this.#signal, wanted);
    if (data.length === 0) throw new ProtocolError('the client answered STDERR_READ with no data');
    this.#left -= data.length;
    if (this.destroyed) return;
    this.push(data);
    if (this.#left === 0) this.push(null);
  }

  /** Asks for nothing more, and waits for the answer to a request already sent (the wire stays in step). */
  async settle(): Promise<void> {
    this.destroy();
    await this.#asking;
  }
}

/** An error already sent to the client; the session goes on. */
class ReportedError extends Error {
  constructor(readonly error: Error) {
    super(error.message, { cause: error });
  }
}

/** A ValidPathInfo as uploads carry it (format 16: with ultimate, sigs and ca), keyed or not. */
async function readPathInfo(
  reader: WireReader,
  signal: AbortSignal,
  format: number,
  keyed: boolean,
): Promise<AddPathRequest> {
  const path = keyed ? await reader.readString('the store path', signal) : '';
  const deriver = await reader.readString('the deriver', signal);
  const narHash = await reader.readString('the NAR hash', signal);
  const references = await reader.readStrings('the references', signal);
  await reader.readU64('registrationTime', signal);
  const narSize = await reader.readU64('narSize', signal);
  let sigs: string[] = [];
  let ca = '';
  if (format >= 16) {
    await reader.readU64('ultimate', signal);
    sigs = await reader.readStrings('the signatures', signal);
    ca = await reader.readString('the content address', signal);
  }
  return { path, deriver, narHash, references, narSize, sigs, ca };
}

export { ReportedError };
