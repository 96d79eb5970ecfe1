// The client side of the JSON API (src/api/v1.ts): every request the client commands make goes through
// here, so the token, timeouts, response validation and the mapping of error answers to NicheErrors are
// decided once. Error bodies (`apiErrorSchema`) keep the server's code and message: 401 becomes an
// UnauthenticatedError, 403 a ForbiddenError, 404 a NotFoundError, and so on; 5xx, 408, 429 and
// network trouble become retryable errors (src/client/errors.ts). The token never appears in a message.
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { z } from 'zod';
import { API_PREFIX, apiErrorSchema } from '../api/v1.js';
import {
  ConflictError,
  type ErrorCode,
  ForbiddenError,
  InvalidInputError,
  NotFoundError,
  TooLargeError,
  UnauthenticatedError,
  UnsupportedError,
} from '../errors.js';
import { NetworkError, RemoteError, ResponseInvalidError } from './errors.js';

export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/** An upload that makes no progress (no body bytes taken, no answer) for this long is abandoned. */
export const DEFAULT_IDLE_TIMEOUT_MS = 300_000;
/** JSON answers larger than this are refused (a 10 000-path "missing" answer is about 1 MiB). */
const MAX_JSON_BYTES = 32 << 20;
/** Only this much of an error body is read. */
const MAX_ERROR_BYTES = 64 << 10;

export type FetchFunction = typeof fetch;

/** How a streamed request ended: the server's answer, or why there is none. */
type StreamOutcome =
  | { readonly ok: true; readonly status: number; readonly text: string; readonly retryAfter?: string }
  | { readonly ok: false; readonly error: unknown };

export interface HttpClientOptions {
  /** The server's base URL, e.g. `http://127.0.0.1:5000` (a path prefix is allowed, no trailing slash). */
  readonly serverUrl: string;
  readonly token?: string | undefined;
  /** Time limit for JSON requests. */
  readonly timeoutMs?: number;
  readonly userAgent?: string;
  /** Replaces global fetch (tests). */
  readonly fetch?: FetchFunction;
}

export interface RequestOptions {
  readonly signal?: AbortSignal | undefined;
}

export interface StreamRequestOptions extends RequestOptions {
  /** Abandon the request after this long without progress. */
  readonly idleTimeoutMs?: number;
  /** The body's length, if known: sent as Content-Length instead of chunked encoding. */
  readonly contentLength?: number;
}

// Codes the server may send that this client knows; anything else keeps a generic code and is named in
// the message.
const KNOWN_CODES: ReadonlySet<string> = new Set<ErrorCode>([
  'NIX32_INVALID',
  'HASH_INVALID',
  'STORE_PATH_INVALID',
  'NAR_INVALID',
  'NARINFO_INVALID',
  'CACHE_INFO_INVALID',
  'KEY_INVALID',
  'SIGNATURE_INVALID',
  'FILE_HASH_MISMATCH',
  'FILE_SIZE_MISMATCH',
  'NAR_HASH_MISMATCH',
  'NAR_SIZE_MISMATCH',
  'COMPRESSION_INVALID',
  'COMPRESSION_MISMATCH',
  'NAR_NOT_UPLOADED',
  'REFERENCE_MISSING',
  'STORE_PATH_MISMATCH',
  'PATH_CONFLICT',
  'UPLOAD_INCOMPLETE',
  'BODY_TOO_LARGE',
  'BAD_REQUEST',
  'NOT_SUPPORTED',
  'MEDIA_TYPE_UNSUPPORTED',
  'NOT_FOUND',
  'CACHE_NOT_FOUND',
  'CACHE_NAME_INVALID',
  'CACHE_EXISTS',
  'TOKEN_MISSING',
  'TOKEN_INVALID',
  'PERMISSION_DENIED',
  'STORAGE_FAILURE',
  'DATABASE_FAILURE',
  'SHUTTING_DOWN',
  'OVERLOADED',
  'INTERNAL',
]);

function knownCode(code: string | undefined): ErrorCode | undefined {
  return code !== undefined && KNOWN_CODES.has(code) ? (code as ErrorCode) : undefined;
}

/** Statuses that are not worth retrying even though they are 5xx (as Nix treats them, PROTOCOL.md §6.3). */
const FINAL_5XX = new Set([501, 505, 511]);

/** Longest Retry-After honoured; a longer one is cut to this (the retry policy's own cap applies too). */
const MAX_RETRY_AFTER_MS = 5 * 60_000;

/** A Retry-After header's wait in milliseconds: delay-seconds or an HTTP date; undefined if neither. */
export function parseRetryAfter(header: string | undefined, now: number = Date.now()): number | undefined {
  if (header === undefined) return undefined;
  const text = header.trim();
  // An HTTP date (IMF-fixdate, or the obsolete RFC 850 form) ends in GMT.
  const ms = /^\d{1,9}$/.test(text) ? Number(text) * 1000 : /GMT$/.test(text) ? Date.parse(text) - now : NaN;
  return Number.isNaN(ms) ? undefined : Math.min(MAX_RETRY_AFTER_MS, Math.max(0, ms));
}

/** Turns a failed answer into the matching NicheError. Exported for tests. */
export function errorFromResponse(status: number, body: string, where: string, retryAfter?: string): Error {
  let serverCode: string | undefined;
  let serverMessage: string | undefined;
  try {
    const parsed = apiErrorSchema.safeParse(JSON.parse(body));
    if (parsed.success) {
      serverCode = parsed.data.error.code;
      serverMessage = parsed.data.error.message;
    }
  } catch {
    // Not JSON: the plain-text form the cache routes use, `error CODE: message`.
    const match = /^error ([A-Z0-9_]+): (.*)$/s.exec(body.trim());
    if (match !== null) {
      serverCode = match[1];
      serverMessage = match[2];
    }
  }
  const code = knownCode(serverCode);
  const unknownCode = serverCode !== undefined && code === undefined ? ` [${serverCode}]` : '';
  const text = (serverMessage ?? (body.trim().slice(0, 200) || 'no details')).trim();
  const message = `${text}${unknownCode} (HTTP ${status} from ${where})`;
  switch (status) {
    case 400:
    case 422:
      return new InvalidInputError(code ?? 'BAD_REQUEST', message);
    case 401:
      return new UnauthenticatedError(code === 'TOKEN_MISSING' ? 'TOKEN_MISSING' : 'TOKEN_INVALID', message);
    case 403:
      return new ForbiddenError(message);
    case 404:
      return new NotFoundError(
        code === 'CACHE_NOT_FOUND' || code === 'NAR_NOT_UPLOADED' ? code : 'NOT_FOUND',
        message,
      );
    case 409:
      return code === 'PATH_CONFLICT' || code === 'CACHE_EXISTS'
        ? new ConflictError(code, message)
        : new RemoteError('conflict', code ?? 'SERVER_ERROR', message, status, false);
    case 413:
      return new TooLargeError(message);
    case 415:
    case 501:
      return code === undefined || code === 'NOT_SUPPORTED'
        ? new UnsupportedError(message)
        : new RemoteError('unsupported', code, message, status, false);
    case 408:
    case 429:
      return new RemoteError(
        'unavailable',
        code ?? 'SERVER_ERROR',
        message,
        status,
        true,
        parseRetryAfter(retryAfter),
      );
    default:
      if (status >= 500) {
        return new RemoteError(
          status === 503 ? 'unavailable' : 'internal',
          code ?? 'SERVER_ERROR',
          message,
          status,
          !FINAL_5XX.has(status),
          parseRetryAfter(retryAfter),
        );
      }
      return new RemoteError(
        status >= 400 ? 'invalid' : 'internal',
        code ?? 'SERVER_ERROR',
        `unexpected answer: ${message}`,
        status,
        false,
      );
  }
}

/** Reads at most `limit` bytes of a body; `undefined` if it is longer (the rest is discarded). */
async function readLimited(response: Response, limit: number): Promise<string | undefined> {
  if (response.body === null) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader: ReadableStreamDefaultReader<Uint8Array> = response.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > limit) {
        await reader.cancel();
        return undefined;
      }
      chunks.push(value);
    }
  } finally {
    reader.releaseLock();
  }
  return Buffer.concat(chunks).toString('utf8');
}

export class ApiClient {
  readonly serverUrl: string;
  readonly hasToken: boolean;
  private readonly token: string | undefined;
  private readonly timeoutMs: number;
  private readonly userAgent: string;
  private readonly fetchFn: FetchFunction;

  constructor(options: HttpClientOptions) {
    this.serverUrl = options.serverUrl.replace(/\/+$/, '');
    this.token = options.token === '' ? undefined : options.token;
    this.hasToken = this.token !== undefined;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.userAgent = options.userAgent ?? 'niche-client';
    this.fetchFn = options.fetch ?? fetch;
  }

  /** `<server>/api/v1<path>`; `path` starts with `/` and has its segments encoded by the caller. */
  apiUrl(path: string): string {
    return `${this.serverUrl}${API_PREFIX}${path}`;
  }

  async get<T>(path: string, schema: z.ZodType<T>, options: RequestOptions = {}): Promise<T> {
    return this.json('GET', path, undefined, schema, options);
  }

  async post<T>(path: string, body: unknown, schema: z.ZodType<T>, options: RequestOptions = {}): Promise<T> {
    return this.json('POST', path, body, schema, options);
  }

  /**
   * PUTs a streamed body (pulled as the connection takes it, so memory stays bounded) and validates the
   * JSON answer. Errors thrown by `body` itself are rethrown as they are (they are local, not the
   * network's); a request without progress for `idleTimeoutMs` fails with a retryable NetworkError.
   *
   * The server may answer before it has read the body (a 401/403 checked from the headers, a path it
   * already has, a metadata line it refuses). That answer is what counts: sending stops as soon as it
   * arrives, and a write that fails afterwards (EPIPE, ECONNRESET: the server closed the connection) does
   * not hide it. This is why uploads use node:http rather than fetch, which fails the whole request on a
   * write error even when the answer is already in the socket buffer.
   */
  async putStream<T>(
    path: string,
    body: AsyncIterable<Uint8Array>,
    contentType: string,
    schema: z.ZodType<T>,
    options: StreamRequestOptions = {},
  ): Promise<T> {
    const { status, text, retryAfter } = await this.streamRequest('PUT', path, body, contentType, options);
    return this.parseAnswer(status, text, path, schema, retryAfter);
  }

  private async streamRequest(
    method: string,
    path: string,
    body: AsyncIterable<Uint8Array>,
    contentType: string,
    options: StreamRequestOptions,
  ): Promise<{ status: number; text: string; retryAfter: string | undefined }> {
    const url = this.apiUrl(path);
    const idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    const callerSignal = options.signal;
    callerSignal?.throwIfAborted();
    const headers: Record<string, string> = {
      accept: 'application/json',
      'user-agent': this.userAgent,
      'content-type': contentType,
    };
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`;
    if (options.contentLength !== undefined) headers['content-length'] = String(options.contentLength);
    const send = url.startsWith('https:') ? httpsRequest : httpRequest;
    const request = send(url, { method, headers });
    const source = body[Symbol.asyncIterator]();
    // Changed by the event handlers below, hence one object rather than narrowed locals.
    const state = { answered: false, settled: false, sourceDone: false, lastProgress: Date.now() };

    // Settles once: with the answer (status and body text), or with why there is none.
    let settle!: (outcome: StreamOutcome) => void;
    const outcome = new Promise<StreamOutcome>((resolve) => {
      settle = resolve;
    });
    const finish = (result: StreamOutcome): void => {
      if (state.settled) return;
      state.settled = true;
      settle(result);
    };
    const fail = (error: unknown): void => {
      finish({ ok: false, error });
      request.destroy();
    };
    const networkError = (why: string, cause?: unknown): NetworkError =>
      new NetworkError(`${method} ${url} failed: ${why}`, { cause });

    request.on('response', (response) => {
      state.answered = true;
      state.lastProgress = Date.now();
      const status = response.statusCode ?? 0;
      const header = response.headers['retry-after'];
      const retryAfter = typeof header === 'string' ? header : undefined;
      const limit = status >= 200 && status < 300 ? MAX_JSON_BYTES : MAX_ERROR_BYTES;
      const chunks: Buffer[] = [];
      let size = 0;
      response.on('data', (chunk: Buffer) => {
        state.lastProgress = Date.now();
        size += chunk.length;
        if (size > limit) {
          if (status >= 200 && status < 300) {
            fail(new ResponseInvalidError(`the answer from ${new URL(url).host} is too large`));
          } else {
            // Enough of an error body to report it.
            finish({ ok: true, status, text: Buffer.concat(chunks).toString('utf8'), retryAfter });
            request.destroy();
          }
          return;
        }
        chunks.push(chunk);
      });
      response.on('end', () => {
        finish({ ok: true, status, text: Buffer.concat(chunks).toString('utf8'), retryAfter });
        // An answer that came before the whole body was sent ends the upload; the connection cannot be
        // reused with a body half-sent.
        if (!state.sourceDone) request.destroy();
      });
      const broken = (why: string, cause?: unknown): void => {
        // The connection broke while the answer arrived: an error status is still worth reporting.
        if (status >= 400)
          finish({ ok: true, status, text: Buffer.concat(chunks).toString('utf8'), retryAfter });
        else fail(networkError(`reading the answer failed: ${why}`, cause));
      };
      response.on('error', (error) => {
        broken(error.message, error);
      });
      response.on('close', () => {
        if (!response.complete) broken('the connection closed');
      });
    });
    request.on('error', (error) => {
      // A write that failed because the server answered and closed: the 'response' handler has the answer.
      if (state.answered) return;
      fail(networkError(error.message, error));
    });
    request.on('close', () => {
      if (!state.answered) fail(networkError('the connection closed without an answer'));
    });

    const watchdog = setInterval(
      () => {
        if (Date.now() - state.lastProgress > idleTimeoutMs) {
          fail(new NetworkError(`no progress for ${Math.round(idleTimeoutMs / 1000)} s`));
        }
      },
      Math.min(1000, idleTimeoutMs),
    );
    const onAbort = (): void => {
      fail(callerSignal?.reason);
    };
    callerSignal?.addEventListener('abort', onAbort, { once: true });

    // Sends the body as the connection takes it, until it ends or an answer (or failure) arrives.
    const stopSending = (): boolean => state.settled || state.answered;
    const pump = async (): Promise<void> => {
      for (;;) {
        if (stopSending()) return;
        let next: IteratorResult<Uint8Array>;
        try {
          next = await source.next();
        } catch (error) {
          state.sourceDone = true;
          fail(error);
          return;
        }
        if (next.done === true) {
          state.sourceDone = true;
          if (!stopSending()) request.end();
          state.lastProgress = Date.now();
          return;
        }
        if (stopSending()) return;
        state.lastProgress = Date.now();
        if (!request.write(next.value)) {
          await new Promise<void>((resolve) => {
            const go = (): void => {
              request.off('drain', go);
              request.off('close', go);
              request.off('response', go);
              resolve();
            };
            request.on('drain', go);
            request.on('close', go);
            request.on('response', go);
          });
        }
      }
    };
    // `pump` never rejects; the outcome settles even if the source stalls (the watchdog fails it).
    void pump();
    try {
      const result = await outcome;
      if (!result.ok) {
        if (callerSignal?.aborted === true) throw callerSignal.reason;
        throw result.error;
      }
      return { status: result.status, text: result.text, retryAfter: result.retryAfter };
    } finally {
      clearInterval(watchdog);
      callerSignal?.removeEventListener('abort', onAbort);
      // Stop reading the body's source (closing the files it reads) when it was not read to the end.
      if (!state.sourceDone) void source.return?.().catch(() => undefined);
    }
  }

  private async json<T>(
    method: string,
    path: string,
    body: unknown,
    schema: z.ZodType<T>,
    options: RequestOptions,
  ): Promise<T> {
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const signal = options.signal === undefined ? timeout : AbortSignal.any([timeout, options.signal]);
    // Every write says it is JSON, even without a body: the server refuses writes that do not (a browser
    // cannot be made to send that content type by another site, src/http/routes/api/index.ts).
    const response = await this.send(
      method,
      path,
      method === 'GET'
        ? undefined
        : { body: body === undefined ? '' : JSON.stringify(body), contentType: 'application/json' },
      signal,
      options.signal,
    );
    return this.answer(response, path, schema);
  }

  private async send(
    method: string,
    path: string,
    payload: { body: string; contentType: string } | undefined,
    signal: AbortSignal,
    callerSignal: AbortSignal | undefined,
  ): Promise<Response> {
    const url = this.apiUrl(path);
    const headers: Record<string, string> = { accept: 'application/json', 'user-agent': this.userAgent };
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`;
    if (payload !== undefined) headers['content-type'] = payload.contentType;
    try {
      return await this.fetchFn(url, {
        method,
        headers,
        signal,
        redirect: 'follow',
        ...(payload === undefined ? {} : { body: payload.body }),
      });
    } catch (error) {
      if (callerSignal?.aborted === true) throw callerSignal.reason;
      const cause = error instanceof Error && error.cause instanceof Error ? error.cause : error;
      const why =
        error instanceof Error && error.name === 'TimeoutError'
          ? `no answer within ${Math.round(this.timeoutMs / 1000)} s`
          : cause instanceof Error
            ? cause.message
            : String(cause);
      throw new NetworkError(`${method} ${url} failed: ${why}`, { cause: error });
    }
  }

  private async answer<T>(response: Response, path: string, schema: z.ZodType<T>): Promise<T> {
    const where = new URL(this.apiUrl(path)).host;
    if (!response.ok) {
      const text = (await readLimited(response, MAX_ERROR_BYTES).catch(() => '')) ?? '';
      throw errorFromResponse(response.status, text, where, response.headers.get('retry-after') ?? undefined);
    }
    const text = await readLimited(response, MAX_JSON_BYTES).catch((error: unknown) => {
      throw new NetworkError(`reading the answer from ${where} failed`, { cause: error });
    });
    if (text === undefined) throw new ResponseInvalidError(`the answer from ${where} is too large`);
    return this.parseAnswer(response.status, text, path, schema);
  }

  /** Maps an answer to its error, or validates its JSON body against `schema`. */
  private parseAnswer<T>(
    status: number,
    text: string,
    path: string,
    schema: z.ZodType<T>,
    retryAfter?: string,
  ): T {
    const where = new URL(this.apiUrl(path)).host;
    if (status < 200 || status >= 300) throw errorFromResponse(status, text, where, retryAfter);
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (error) {
      throw new ResponseInvalidError(
        `${where} did not answer with JSON; is ${this.serverUrl} a niche server?`,
        { cause: error },
      );
    }
    const parsed = schema.safeParse(value);
    if (!parsed.success) {
      throw new ResponseInvalidError(
        `unexpected answer from ${where} to ${path}: ${parsed.error.issues
          .slice(0, 3)
          .map((issue) => `${issue.path.join('.')}: ${issue.message}`)
          .join('; ')}`,
      );
    }
    return parsed.data;
  }
}
