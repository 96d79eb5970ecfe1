// Access logs: one JSON line per request (or per sampled request), through the server's pino logger, for
// every request the server answers: the read path's narinfo and NAR reads (src/http/read-path.ts), which
// never reach fastify, fastify's routes, and answers sent before a request body was read (a refused
// upload, src/http/linger.ts). Every response carries an `X-Request-Id`, the id its line has (and the one
// a 5xx's error line has, src/http/error-mapping.ts), whether or not the request was sampled.
//
// Cost, on the hot path: a request id is a per-process prefix and a counter (no random bytes per
// request); a sampled request reads the clock and the socket's byte counters twice and, once answered,
// writes one line. The line is built here, fields in a fixed order, and handed to the logger's
// destination as pino would write it (its level, time and bindings first): pino's generic serializer
// cost a narinfo hit about a tenth of its throughput. A narinfo answered from memory is logged at once, without a listener; any other answer
// is logged when its response closes, so a download cut off mid-way is logged with what was sent.
//
// What a line holds: reqId, method, url (at most 512 characters), cache and kind (classifyRoute, as the
// metrics have them), status (0: no answer was sent), bytesIn and bytesOut, ms, token (the id of the
// token that authenticated the request, never its secret, and only when the request was authenticated:
// a pull from a public cache never looks at credentials), remote, proto and ua (at most 200 characters).
// bytesIn: the request body's Content-Length once received whole; for a body cut short (or sent chunked),
// over HTTP/1.1, what the connection carried while the request was served (a lower bound). bytesOut,
// over HTTP/1.1: what the connection carried for the response, headers included; over HTTP/2, whose
// streams share the connection, the body's Content-Length, counted only for a complete response.
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import pino, { type Logger } from 'pino';
import type { Principal } from '../cache/auth.js';
import { ROUTE_KINDS } from '../metrics/server-metrics.js';
import { classifyRoute } from './request-metrics.js';
import { setRequestId } from './response-head.js';

/** An incoming `X-Request-Id` is kept when it looks like one (a proxy's, a client's): bounded, plain. */
const INCOMING_ID = /^[A-Za-z0-9._:+=/-]{1,128}$/;
const MAX_URL = 512;
const MAX_AGENT = 200;

/** Token ids of authenticated requests, noted where their principal is resolved. */
const tokens = new WeakMap<object, number>();

/**
 * Notes who `request` (the raw Node request) was authenticated as, for its access log line; called by
 * the read path and the routes where they resolve a principal.
 */
export function notePrincipal(request: object, principal: Principal): void {
  if (principal.kind === 'token') tokens.set(request, principal.token.id);
}

/** A request being logged. */
interface Entry {
  readonly request: IncomingMessage;
  readonly response: ServerResponse;
  readonly id: string;
  readonly startedAt: number;
  /** The socket's counters when the request arrived (HTTP/1.1 only). */
  readonly socket: Socket | undefined;
  readonly readAtStart: number;
  readonly writtenAtStart: number;
}

export interface AccessLogOptions {
  readonly logger: Logger;
  /** Fraction of requests logged, 0 < rate <= 1. */
  readonly sampleRate: number;
  /** The local store's mount path, for the cache column of its requests. */
  readonly localMountPath?: string | undefined;
}

export class AccessLog {
  readonly #logger: Logger;
  /** 0 when the logger writes nothing at info level (a silent log): ids only. */
  readonly #sampleRate: number;
  readonly #localPrefix: string | undefined;
  readonly #prefix = `${randomBytes(6).toString('hex')}-`;
  /** The logger's destination and bindings (`,"pid":…,"hostname":…`), when pino exposes them. */
  readonly #stream: { write(line: string): unknown } | undefined;
  readonly #bindings: string;
  #counter = 0;

  constructor(options: AccessLogOptions) {
    this.#logger = options.logger;
    this.#sampleRate = options.logger.isLevelEnabled('info') ? options.sampleRate : 0;
    this.#localPrefix = options.localMountPath === undefined ? undefined : `${options.localMountPath}/`;
    const internals = options.logger as unknown as Record<symbol, unknown>;
    const stream = internals[pino.symbols.streamSym] as { write?: unknown } | undefined;
    const bindings = internals[pino.symbols.chindingsSym];
    this.#stream =
      typeof stream?.write === 'function' && typeof bindings === 'string'
        ? (stream as { write(line: string): unknown })
        : undefined;
    this.#bindings = typeof bindings === 'string' ? bindings : '';
  }

  /**
   * Gives the request its id (the `X-Request-Id` response header) and, if it is sampled, starts its
   * line; call `end` once the handlers have run.
   */
  begin(request: IncomingMessage, response: ServerResponse): Entry | undefined {
    const incoming = request.headers['x-request-id'];
    const id =
      typeof incoming === 'string' && INCOMING_ID.test(incoming)
        ? incoming
        : this.#prefix + (this.#counter++).toString(36);
    // Sent with the head (src/http/response-head.ts): setHeader costs the read path dearly.
    setRequestId(response, id);
    if (this.#sampleRate < 1 && Math.random() >= this.#sampleRate) return undefined;
    const socket = request.httpVersionMajor === 2 ? undefined : request.socket;
    return {
      request,
      response,
      id,
      startedAt: performance.now(),
      socket,
      readAtStart: socket?.bytesRead ?? 0,
      writtenAtStart: socket?.bytesWritten ?? 0,
    };
  }

  /** Writes the line now if the answer is complete, else when the response closes. */
  end(entry: Entry): void {
    if (entry.response.writableEnded) {
      this.#write(entry);
      return;
    }
    entry.response.once('close', () => {
      this.#write(entry);
    });
  }

  #write(entry: Entry): void {
    const { request, response, socket } = entry;
    const method = request.method ?? 'GET';
    const url = request.url ?? '/';
    const route = classifyRoute(method, url, this.#localPrefix);
    const status = response.headersSent ? response.statusCode : 0;
    // A body received whole: its declared length (part of it may have come with the headers, before the
    // request was seen). Else, over HTTP/1.1, what the connection carried since.
    const declared = request.headers['content-length'];
    let bytesIn: number | undefined =
      request.complete && declared !== undefined ? Number(declared) : undefined;
    let bytesOut: number | undefined;
    if (socket !== undefined) {
      bytesIn ??= socket.bytesRead - entry.readAtStart;
      bytesOut = socket.bytesWritten - entry.writtenAtStart;
    } else {
      const length = response.getHeader('content-length');
      bytesOut = response.writableFinished && length !== undefined ? Number(length) : undefined;
    }
    const agent = request.headers['user-agent'];
    const fields: AccessFields = {
      reqId: entry.id,
      method,
      url: url.length > MAX_URL ? `${url.slice(0, MAX_URL)}…` : url,
      cache: route.local ? 'local' : route.cache,
      kind: ROUTE_KINDS[route.kind],
      status,
      bytesIn,
      bytesOut,
      ms: Math.round((performance.now() - entry.startedAt) * 1000) / 1000,
      token: tokens.get(request),
      remote: request.socket.remoteAddress,
      proto: request.httpVersion,
      ua: agent === undefined || agent.length <= MAX_AGENT ? agent : agent.slice(0, MAX_AGENT),
    };
    if (this.#stream === undefined) {
      this.#logger.info(fields, 'request');
      return;
    }
    this.#stream.write(
      `{"level":30,"time":${Date.now()}${this.#bindings}${jsonFields(fields)},"msg":"request"}\n`,
    );
  }
}

interface AccessFields {
  readonly reqId: string;
  readonly method: string;
  readonly url: string;
  readonly cache: string | undefined;
  readonly kind: string | undefined;
  readonly status: number;
  readonly bytesIn: number | undefined;
  readonly bytesOut: number | undefined;
  readonly ms: number;
  readonly token: number | undefined;
  readonly remote: string | undefined;
  readonly proto: string;
  readonly ua: string | undefined;
}

/** `,"reqId":…,…` for the fields that are set, as JSON.stringify would write them. */
function jsonFields(fields: AccessFields): string {
  let out = `,"reqId":${JSON.stringify(fields.reqId)},"method":${JSON.stringify(fields.method)},"url":${JSON.stringify(fields.url)}`;
  if (fields.cache !== undefined) out += `,"cache":${JSON.stringify(fields.cache)}`;
  if (fields.kind !== undefined) out += `,"kind":"${fields.kind}"`;
  out += `,"status":${fields.status}`;
  if (fields.bytesIn !== undefined && Number.isFinite(fields.bytesIn)) out += `,"bytesIn":${fields.bytesIn}`;
  if (fields.bytesOut !== undefined && Number.isFinite(fields.bytesOut))
    out += `,"bytesOut":${fields.bytesOut}`;
  out += `,"ms":${fields.ms}`;
  if (fields.token !== undefined) out += `,"token":${fields.token}`;
  if (fields.remote !== undefined) out += `,"remote":${JSON.stringify(fields.remote)}`;
  out += `,"proto":${JSON.stringify(fields.proto)}`;
  if (fields.ua !== undefined) out += `,"ua":${JSON.stringify(fields.ua)}`;
  return out;
}
