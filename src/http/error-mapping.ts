// The one place that turns errors into HTTP responses. Every NicheError kind has exactly one status. A 500
// (a bug, or a backend failing: a full disk, a database gone) tells the client only its code and a request
// id: the details (file paths, backend messages) go to the log under that id, never to the client.
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify';
import {
  DatabaseError,
  NicheError,
  OverloadedError,
  RangeNotSatisfiableError,
  StorageError,
  type ErrorKind,
} from '../errors.js';
import { requestIdOf, writeHead } from './response-head.js';

/** Retry-After of a 503 that names no better time (a backend down, shutting down). */
const DEFAULT_RETRY_AFTER_SECONDS = 5;

const STATUS: Record<ErrorKind, number> = {
  invalid: 400,
  unauthenticated: 401,
  forbidden: 403,
  'not-found': 404,
  conflict: 409,
  'too-large': 413,
  unsupported: 501,
  unavailable: 503,
  config: 500,
  internal: 500,
};

export function statusOf(error: NicheError): number {
  if (error instanceof RangeNotSatisfiableError) return 416;
  if (error.code === 'MEDIA_TYPE_UNSUPPORTED') return 415;
  return STATUS[error.kind];
}

type Logger = Pick<FastifyBaseLogger, 'error' | 'debug'>;

interface FastifyLikeError {
  readonly statusCode?: number;
  readonly code?: string;
  readonly message: string;
}

/** Errors raised by fastify itself (bad URL encoding, body limits) carry a 4xx statusCode. */
function fastifyClientError(error: unknown): FastifyLikeError | undefined {
  if (!(error instanceof Error) || !('statusCode' in error)) return undefined;
  const statusCode = (error as FastifyLikeError).statusCode;
  return statusCode !== undefined && statusCode >= 400 && statusCode < 500
    ? (error as FastifyLikeError)
    : undefined;
}

/** An error as the HTTP response it becomes: the same for fastify routes and the raw read path. */
interface ErrorResponse {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly contentType: string;
  readonly body: string;
}

/**
 * Classifies `error`, logs what deserves it, and builds the response. `givenId`: the request's id
 * (`X-Request-Id`, src/http/access-log.ts), if it has one, under which a 5xx is logged.
 */
function errorResponse(
  error: unknown,
  method: string,
  url: string,
  log: Logger,
  givenId: unknown,
): ErrorResponse {
  let status: number;
  let code: string;
  let message: string;
  const headers: Record<string, string> = { 'cache-control': 'no-store' };
  const clientError = fastifyClientError(error);
  if (error instanceof NicheError) {
    status = statusOf(error);
    code = error.code;
    message = error.message;
  } else if (clientError !== undefined) {
    status = clientError.statusCode ?? 400;
    code = status === 413 ? 'BODY_TOO_LARGE' : 'BAD_REQUEST';
    message = clientError.message;
  } else {
    status = 500;
    code = 'INTERNAL';
    message = 'internal server error';
  }
  if (status >= 500) {
    const requestId = typeof givenId === 'string' ? givenId : randomUUID();
    headers['x-request-id'] = requestId;
    const what = error instanceof NicheError ? 'request failed' : 'unexpected error';
    log.error({ err: error, method, url: logUrl(url), requestId }, what);
    // 503s are written for clients ("shutting down", "try again"); a 500's message is not, nor is a
    // backend's own message when it is only temporarily failing (it names files, hosts, buckets).
    if (status === 500) message = internalMessage(requestId);
    else if (error instanceof StorageError || error instanceof DatabaseError) {
      message = `the ${error instanceof StorageError ? 'blob' : 'metadata'} store is temporarily unavailable; retry later (request id ${requestId})`;
    }
  } else if (error instanceof NicheError) {
    log.debug({ code, message }, 'request refused');
  }
  if (status === 401) headers['www-authenticate'] = wwwAuthenticate(url);
  if (error instanceof RangeNotSatisfiableError) headers['content-range'] = `bytes */${error.size}`;
  // Every 503 says when to come back (Nix 2.29 and later wait that long before retrying).
  if (status === 503) {
    const seconds = error instanceof OverloadedError ? error.retryAfterSeconds : DEFAULT_RETRY_AFTER_SECONDS;
    headers['retry-after'] = String(seconds);
  }
  return { status, headers, ...errorBody(url, code, message) };
}

function internalMessage(requestId: string): string {
  return `internal server error; the server's log has the details under request id ${requestId}`;
}

/** URLs are logged bounded: one hostile request must not write megabytes of log. */
function logUrl(url: string): string {
  return url.length > 512 ? `${url.slice(0, 512)}…` : url;
}

/**
 * The challenge of a 401. Nix sends netrc credentials as HTTP Basic, so the cache routes ask for Basic;
 * the JSON API asks for a bearer token, which browsers never send on their own: a Basic challenge there
 * would have a browser cache the credentials and attach them to requests other sites make it send.
 */
export function wwwAuthenticate(url: string): string {
  return url.startsWith('/api/') ? 'Bearer realm="niche"' : 'Basic realm="niche"';
}

function errorBody(url: string, code: string, message: string): { contentType: string; body: string } {
  if (url.startsWith('/api/')) {
    return {
      contentType: 'application/json; charset=utf-8',
      body: JSON.stringify({ error: { code, message } }),
    };
  }
  return { contentType: 'text/plain; charset=utf-8', body: `error ${code}: ${message}\n` };
}

export function sendError(error: unknown, request: FastifyRequest, reply: FastifyReply): void {
  if (reply.sent || reply.raw.headersSent) {
    logMidStream(error, request.method, request.url, request.log);
    // Bytes already flowed: the only honest signal left is to break the connection.
    reply.raw.destroy(error instanceof Error ? error : undefined);
    return;
  }
  const response = errorResponse(
    error,
    request.method,
    request.url,
    request.log,
    reply.raw.getHeader('x-request-id'),
  );
  void reply.code(response.status).headers(response.headers).type(response.contentType).send(response.body);
}

/** `sendError` for the raw read path (src/http/read-path.ts), which answers without fastify. */
export function sendRawError(
  error: unknown,
  request: IncomingMessage,
  response: ServerResponse,
  log: Logger,
): void {
  const method = request.method ?? 'GET';
  const url = request.url ?? '/';
  if (response.headersSent) {
    logMidStream(error, method, url, log);
    response.destroy(error instanceof Error ? error : undefined);
    return;
  }
  const mapped = errorResponse(error, method, url, log, requestIdOf(response));
  sendRaw(response, mapped.status, Object.entries(mapped.headers).flat(), mapped.contentType, mapped.body);
}

/**
 * The ordinary "not here" answer of the hot read paths (a narinfo miss is half of what Nix asks), sent
 * without building an Error: the same response sendRawError gives for NotFoundError('NOT_FOUND').
 */
export function sendRawNotFound(request: IncomingMessage, response: ServerResponse, message: string): void {
  const { contentType, body } = errorBody(request.url ?? '/', 'NOT_FOUND', message);
  sendRaw(response, 404, NOT_FOUND_HEADERS, contentType, body);
}

const NOT_FOUND_HEADERS: readonly string[] = ['cache-control', 'no-store'];

/** Sends `body` with its type and length and `headers` (names and values in turn). */
function sendRaw(
  response: ServerResponse,
  status: number,
  headers: readonly string[],
  contentType: string,
  body: string,
): void {
  writeHead(response, status, [
    'content-type',
    contentType,
    'content-length',
    String(Buffer.byteLength(body)),
    ...headers,
  ]);
  response.end(body);
}

/** An error after the status line went out: a client that went away is routine, anything else is not. */
function logMidStream(error: unknown, method: string, url: string, log: Logger): void {
  if ((error as { code?: unknown } | undefined)?.code === 'ERR_STREAM_PREMATURE_CLOSE') return;
  log.error({ err: error, method, url: logUrl(url) }, 'response aborted mid-stream');
}
