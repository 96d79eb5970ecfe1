// Response heads of the raw read path (src/http/read-path.ts, error-mapping.ts), written as a flat list of
// header names and values, and the request id (src/http/access-log.ts) that goes with each response.
//
// A head given to writeHead as an object assembled per response (a spread of shared headers, or
// properties added to a literal) is slower than a literal of fixed shape, and a 404 sent that way left
// about 170 bytes per request that outlived V8's young generation: scavenges took 1.5 ms instead of 0.5,
// and old-space collections followed. A head that starts with `setHeader` (the request id, before) has
// writeHead merge every header into setHeader's own map, which costs the same way. A flat list of names
// and values is read once, in order, by HTTP/1.1 and by the HTTP/2 compatibility layer alike.
// Measured (c=1, scratch harness with --trace-gc-nvp; docs/design.md, "Response heads"): narinfo misses
// 30k/s -> 37k/s and p99 1.7-2.0 ms -> 0.6-0.7 ms; hits with request ids 47.5k/s -> 50k/s.
import type { ServerResponse } from 'node:http';

const REQUEST_ID = Symbol('niche.requestId');

interface Tagged {
  [REQUEST_ID]?: string;
}

/** Gives the response its request id, sent as `X-Request-Id` with its head. */
export function setRequestId(response: ServerResponse, id: string): void {
  (response as Tagged)[REQUEST_ID] = id;
}

/** The response's request id, if the access log gave it one. */
export function requestIdOf(response: ServerResponse): string | undefined {
  return (response as Tagged)[REQUEST_ID];
}

/**
 * Writes the head: `headers` is names and values in turn (lower-case names). The request id is added
 * unless `headers` already has one.
 */
export function writeHead(response: ServerResponse, status: number, headers: string[]): void {
  const id = (response as Tagged)[REQUEST_ID];
  if (id !== undefined && !hasName(headers, 'x-request-id')) headers.push('x-request-id', id);
  response.writeHead(status, headers);
}

function hasName(headers: readonly string[], name: string): boolean {
  for (let i = 0; i < headers.length; i += 2) if (headers[i] === name) return true;
  return false;
}
