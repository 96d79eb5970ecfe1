// One SSH session of one principal on one cache, whichever front end carried it (the embedded ssh2 server
// or `niche ssh-serve` behind OpenSSH): the command the client asked to run picks the protocol, the
// principal is re-checked every few seconds (a revoked or expired key loses access mid-session), and
// whatever ends the session becomes an exit code and, when it is an error, a message on stderr, which is
// where Nix looks for the reason a remote store failed.

import { Transform, type Readable, type Writable } from 'node:stream';
import { authorize, type Principal } from '../cache/auth.js';
import type { CacheService } from '../cache/cache-service.js';
import type { CacheRecord, Permission } from '../db/metadata-store.js';
import { isNicheError, ProtocolError } from '../errors.js';
import { WireReader, WireWriter, writeWithBackpressure } from '../nix/wire.js';
import { parseSshCommand } from './command.js';
import { runServeProtocol, type ProtocolContext } from './serve-protocol.js';
import { runWorkerProtocol } from './worker-protocol.js';

/** How long the principal of a session is trusted before it is looked up again. */
export const PRINCIPAL_REFRESH_MS = 5_000;
/** How long a session may wait for the client's next command. */
export const DEFAULT_IDLE_TIMEOUT_MS = 10 * 60_000;

export interface SshSessionLog {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface SshSessionOptions {
  readonly service: CacheService;
  readonly principal: Principal;
  /** Looks the principal up again (revocation, expiry, changed scopes). */
  readonly refreshPrincipal?: () => Promise<Principal>;
  readonly cacheName: string;
  /** The command the client asked to run (undefined: a shell). */
  readonly command: string | undefined;
  readonly input: Readable;
  readonly output: Writable;
  /** Where error messages go (the SSH channel's stderr); defaults to nowhere. */
  readonly stderr?: Writable;
  readonly log: SshSessionLog;
  readonly signal?: AbortSignal;
  readonly idleTimeoutMs?: number;
  /** Clock for the refresh interval (tests). */
  readonly now?: () => number;
}

export interface SshSessionResult {
  readonly exitCode: number;
  readonly error?: Error;
}

/** Runs the session to its end; never throws (failures are in the result). */
export async function runSshSession(options: SshSessionOptions): Promise<SshSessionResult> {
  const now = options.now ?? Date.now;
  const stop = new AbortController();
  const signal = options.signal === undefined ? stop.signal : AbortSignal.any([options.signal, stop.signal]);
  let principal = options.principal;
  let checkedAt = now();
  const currentPrincipal = async (): Promise<Principal> => {
    if (options.refreshPrincipal !== undefined && now() - checkedAt >= PRINCIPAL_REFRESH_MS) {
      principal = await options.refreshPrincipal();
      checkedAt = now();
    }
    return principal;
  };
  const ctx: ProtocolContext = {
    service: options.service,
    cacheName: options.cacheName,
    async openCache(needed: Permission): Promise<CacheRecord> {
      const who = await currentPrincipal();
      const cache = await options.service.open(options.cacheName, who, needed);
      // `open` grants public pulls to anyone; the session's key must still be a valid one.
      if (who.kind === 'invalid') authorize(undefined, options.cacheName, who, needed);
      return cache;
    },
    signal,
    idleTimeoutMs: options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
    log: options.log,
  };
  const onClose = (): void => {
    stop.abort(new Error('the connection closed'));
  };
  options.output.once('close', onClose);
  // A client that stops moving data in the middle of an operation (an upload that stalls, a download it
  // stops reading) is cut after the idle timeout too: the protocols only time the wait for the next
  // operation. Bytes from the client are counted on their way to the reader; bytes to it by the output
  // draining. While the server itself works (nothing to read, nothing pending), the clock runs as well:
  // no operation of a cache takes minutes without moving data.
  const idleMs = ctx.idleTimeoutMs;
  let lastInput = Date.now();
  let lastOutput = Date.now();
  const input = new Transform({
    highWaterMark: 64 * 1024,
    transform(chunk: Buffer, _encoding, callback) {
      lastInput = Date.now();
      callback(null, chunk);
    },
  });
  const inputFailed = (error: Error): void => {
    input.destroy(error);
  };
  const outputDrained = (): void => {
    lastOutput = Date.now();
  };
  options.input.on('error', inputFailed);
  options.input.pipe(input);
  options.output.on('drain', outputDrained);
  const watchdog = setInterval(
    () => {
      const at = Date.now();
      const output = options.output;
      const outputStuck = output.writableLength > 0 && at - lastOutput > idleMs;
      if (at - lastInput > idleMs && (outputStuck || output.writableLength === 0)) {
        const error = new ProtocolError(`the client moved no data for ${Math.round(idleMs / 1000)} s`);
        stop.abort(error);
        // A write waiting for a reader that never reads learns of it only this way.
        if (outputStuck) output.destroy(error);
      }
    },
    Math.max(10, Math.min(5_000, Math.floor(idleMs / 4))),
  );
  watchdog.unref();
  try {
    const command = parseSshCommand(options.command);
    const reader = new WireReader(input);
    const writer = new WireWriter(options.output);
    if (command.protocol === 'serve') {
      await runServeProtocol(ctx, reader, writer, { write: command.write });
    } else {
      // The worker protocol sends its errors to the client itself; one that ended the session is only logged.
      const reported = await runWorkerProtocol(ctx, reader, writer);
      if (reported !== undefined) {
        options.log.info(
          { cache: options.cacheName, code: isNicheError(reported) ? reported.code : undefined },
          `SSH session ended with an error sent to the client: ${reported.message}`,
        );
        return { exitCode: 1, error: reported };
      }
    }
    return { exitCode: 0 };
  } catch (caught) {
    const error = caught instanceof Error ? caught : new Error(String(caught));
    const known = isNicheError(error);
    options.log[known ? 'info' : 'warn'](
      { cache: options.cacheName, err: error, code: known ? error.code : undefined },
      'SSH session ended with an error',
    );
    const message = known ? error.message : 'internal error; see the server log';
    if (options.stderr !== undefined && !options.stderr.destroyed) {
      const code = known ? ` [${error.code}]` : '';
      await writeWithBackpressure(options.stderr, Buffer.from(`error: niche: ${message}${code}\n`)).catch(
        () => undefined,
      );
    }
    return { exitCode: 1, error };
  } finally {
    clearInterval(watchdog);
    options.output.off('close', onClose);
    options.output.off('drain', outputDrained);
    options.input.off('error', inputFailed);
    options.input.unpipe(input);
    input.destroy();
    stop.abort(new Error('the session ended'));
  }
}
