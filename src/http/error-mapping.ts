// The one place that turns errors into HTTP responses. Every NicheError kind has exactly one status; any
// other error is a 500 whose details go to the log, not to the client.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { NicheError, RangeNotSatisfiableError, type ErrorKind } from '../errors.js';

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
  return STATUS[error.kind];
}

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

export function sendError(error: unknown, request: FastifyRequest, reply: FastifyReply): void {
  let status: number;
  let code: string;
  let message: string;
  const clientError = fastifyClientError(error);
  if (error instanceof NicheError) {
    status = statusOf(error);
    code = error.code;
    message = error.message;
    if (status >= 500)
      request.log.error({ err: error, method: request.method, url: request.url }, 'request failed');
    else request.log.debug({ code, message }, 'request refused');
  } else if (clientError !== undefined) {
    status = clientError.statusCode ?? 400;
    code = status === 413 ? 'BODY_TOO_LARGE' : 'BAD_REQUEST';
    message = clientError.message;
  } else {
    status = 500;
    code = 'INTERNAL';
    message = 'internal server error';
    request.log.error({ err: error, method: request.method, url: request.url }, 'unexpected error');
  }

  if (reply.sent || reply.raw.headersSent) {
    // Bytes already flowed: the only honest signal left is to break the connection.
    reply.raw.destroy(error instanceof Error ? error : undefined);
    return;
  }
  reply.code(status).header('cache-control', 'no-store');
  if (status === 401) reply.header('www-authenticate', 'Basic realm="niche"');
  if (error instanceof RangeNotSatisfiableError) reply.header('content-range', `bytes */${error.size}`);
  // A refused upload may not have been read to the end; don't keep reading it.
  if (request.method === 'PUT' || request.method === 'POST') reply.header('connection', 'close');
  sendBody(request, reply, code, message);
}

function sendBody(request: FastifyRequest, reply: FastifyReply, code: string, message: string): FastifyReply {
  if (request.url.startsWith('/api/')) {
    return reply.type('application/json; charset=utf-8').send({ error: { code, message } });
  }
  return reply.type('text/plain; charset=utf-8').send(`error ${code}: ${message}\n`);
}

/**
 * The ordinary "not here" answer of the hot read paths (a narinfo miss is half of what Nix asks), sent
 * without building an Error and going through the error handler; the same response sendError gives for
 * NotFoundError('NOT_FOUND').
 */
export function sendNotFound(request: FastifyRequest, reply: FastifyReply, message: string): FastifyReply {
  reply.code(404).header('cache-control', 'no-store');
  return sendBody(request, reply, 'NOT_FOUND', message);
}
