// The client's one HTTP module: the token goes out as a Bearer header, API error bodies become the
// matching NicheErrors with the server's code (never the token in a message), 5xx/429/network trouble is
// retryable and 4xx is not, answers are validated against src/api/v1.ts, and timeouts fire.
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { z } from 'zod';
import { cacheInfoSchema, whoamiSchema } from '../../../src/api/v1.js';
import { isRetryable, NetworkError, RemoteError, ResponseInvalidError } from '../../../src/client/errors.js';
import { ApiClient, errorFromResponse, parseRetryAfter } from '../../../src/client/http.js';
import {
  ConflictError,
  ForbiddenError,
  InvalidInputError,
  NotFoundError,
  UnauthenticatedError,
  UnsupportedError,
} from '../../../src/errors.js';

type Handler = (request: IncomingMessage, response: ServerResponse) => void;

let server: Server;
let url: string;
let handler: Handler = (_request, response) => response.end();

before(async () => {
  server = createServer((request, response) => {
    handler(request, response);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no address');
  url = `http://127.0.0.1:${address.port}`;
});
after(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

const json =
  (status: number, body: unknown): Handler =>
  (_request, response) => {
    response.writeHead(status, { 'content-type': 'application/json' });
    response.end(JSON.stringify(body));
  };

const apiError = (code: string, message: string): unknown => ({ error: { code, message } });

describe('errorFromResponse', () => {
  const cases: [number, string, new (...args: never[]) => Error, string][] = [
    [400, 'REFERENCE_MISSING', InvalidInputError, 'REFERENCE_MISSING'],
    [401, 'TOKEN_MISSING', UnauthenticatedError, 'TOKEN_MISSING'],
    [401, 'SOMETHING_NEW', UnauthenticatedError, 'TOKEN_INVALID'],
    [403, 'PERMISSION_DENIED', ForbiddenError, 'PERMISSION_DENIED'],
    [404, 'CACHE_NOT_FOUND', NotFoundError, 'CACHE_NOT_FOUND'],
    [404, 'WHATEVER', NotFoundError, 'NOT_FOUND'],
    [409, 'PATH_CONFLICT', ConflictError, 'PATH_CONFLICT'],
    [501, 'NOT_SUPPORTED', UnsupportedError, 'NOT_SUPPORTED'],
    [415, 'MEDIA_TYPE_UNSUPPORTED', RemoteError, 'MEDIA_TYPE_UNSUPPORTED'],
    [503, 'SHUTTING_DOWN', RemoteError, 'SHUTTING_DOWN'],
    [500, 'NEW_SERVER_CODE', RemoteError, 'SERVER_ERROR'],
  ];
  for (const [status, serverCode, type, code] of cases) {
    it(`maps ${status} ${serverCode} to ${type.name} ${code}`, () => {
      const error = errorFromResponse(status, JSON.stringify(apiError(serverCode, 'what went wrong')), 'h:1');
      assert.ok(error instanceof type, error.constructor.name);
      assert.equal((error as { code?: string }).code, code);
      assert.match(error.message, /what went wrong/);
      assert.match(error.message, /HTTP \d+ from h:1/);
      if (code !== serverCode && status !== 401 && status !== 404)
        assert.match(error.message, new RegExp(serverCode));
    });
  }

  it('reads plain-text errors and classifies retryability', () => {
    const plain = errorFromResponse(400, 'error NAR_INVALID: bad padding\n', 'h');
    assert.equal((plain as { code?: string }).code, 'NAR_INVALID');
    assert.match(plain.message, /bad padding/);
    assert.ok(isRetryable(errorFromResponse(503, '', 'h')));
    assert.ok(isRetryable(errorFromResponse(429, '', 'h')));
    assert.ok(isRetryable(errorFromResponse(502, '<html>bad gateway</html>', 'h')));
    assert.ok(!isRetryable(errorFromResponse(501, '', 'h')));
    assert.ok(!isRetryable(errorFromResponse(400, '', 'h')));
    assert.ok(!isRetryable(errorFromResponse(404, '', 'h')));
  });
});

describe('Retry-After', () => {
  it('is read as seconds or an HTTP date, bounded, and kept on retryable errors', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    assert.equal(parseRetryAfter('2', now), 2000);
    assert.equal(parseRetryAfter(' 0 ', now), 0);
    assert.equal(parseRetryAfter('Thu, 01 Jan 2026 00:00:30 GMT', now), 30_000);
    assert.equal(parseRetryAfter('Wed, 31 Dec 2025 23:00:00 GMT', now), 0, 'a date in the past: at once');
    assert.equal(parseRetryAfter('999999999', now), 300_000, 'at most five minutes');
    for (const junk of [undefined, '', 'soon', '-1', '1.5'])
      assert.equal(parseRetryAfter(junk, now), undefined);
    const overloaded = errorFromResponse(503, JSON.stringify(apiError('OVERLOADED', 'busy')), 'h', '2');
    assert.ok(overloaded instanceof RemoteError && isRetryable(overloaded));
    assert.equal(overloaded.code, 'OVERLOADED');
    assert.equal(overloaded.retryAfterMs, 2000);
    const tooMany = errorFromResponse(429, '', 'h', '7');
    assert.ok(tooMany instanceof RemoteError);
    assert.equal(tooMany.retryAfterMs, 7000);
  });

  it('comes from the answer of a JSON request and of a streamed upload', async () => {
    handler = (request, response) => {
      request.resume();
      response.writeHead(503, { 'content-type': 'application/json', 'retry-after': '3' });
      response.end(JSON.stringify(apiError('OVERLOADED', 'too many uploads')));
    };
    const client = new ApiClient({ serverUrl: url, token: 'nch_secret' });
    const check = (error: unknown): boolean => {
      assert.ok(error instanceof RemoteError, String(error));
      assert.equal(error.code, 'OVERLOADED');
      assert.equal(error.retryAfterMs, 3000);
      return true;
    };
    await assert.rejects(client.get('/whoami', whoamiSchema), check);
    async function* one(): AsyncGenerator<Uint8Array> {
      yield await Promise.resolve(Buffer.from('body'));
    }
    await assert.rejects(client.putStream('/p', one(), 'x/y', z.object({})), check);
  });
});

describe('ApiClient', () => {
  it('sends the token as a Bearer header and validates the answer', async () => {
    let authorization: string | undefined;
    handler = (request, response) => {
      authorization = request.headers.authorization;
      json(200, { token: null })(request, response);
    };
    const client = new ApiClient({ serverUrl: `${url}/`, token: 'nch_secret' });
    assert.deepEqual(await client.get('/whoami', whoamiSchema), { token: null });
    assert.equal(authorization, 'Bearer nch_secret');
    const anonymous = new ApiClient({ serverUrl: url, token: '' });
    await anonymous.get('/whoami', whoamiSchema);
    assert.equal(authorization, undefined);
  });

  it('declares every write as JSON, with a body or without', async () => {
    const seen: string[] = [];
    handler = (request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        seen.push(
          `${request.method} ${request.headers['content-type'] ?? '-'} ${Buffer.concat(chunks).toString()}`,
        );
        json(200, { missing: [] })(request, response);
      });
    };
    const client = new ApiClient({ serverUrl: url, token: 'nch_secret' });
    const schema = z.object({ missing: z.array(z.string()) });
    await client.post('/caches/x/missing', { paths: [] }, schema);
    await client.post('/caches/x/keys/k/retire', undefined, schema);
    await client.get('/caches/x/missing', schema);
    assert.deepEqual(seen, ['POST application/json {"paths":[]}', 'POST application/json ', 'GET - ']);
  });

  it('turns API errors into NicheErrors without the token in the message', async () => {
    handler = json(401, apiError('TOKEN_INVALID', 'the token was revoked'));
    const client = new ApiClient({ serverUrl: url, token: 'nch_secret' });
    await assert.rejects(client.get('/caches/x', cacheInfoSchema), (error: unknown) => {
      assert.ok(error instanceof UnauthenticatedError);
      assert.equal(error.code, 'TOKEN_INVALID');
      assert.match(error.message, /the token was revoked/);
      assert.doesNotMatch(error.message, /nch_secret/);
      return true;
    });
  });

  it('refuses answers that are not JSON or do not match the schema', async () => {
    handler = (_request, response) => response.end('<html>hello</html>');
    const client = new ApiClient({ serverUrl: url });
    await assert.rejects(client.get('/whoami', whoamiSchema), ResponseInvalidError);
    handler = json(200, { name: 'x' });
    await assert.rejects(client.get('/caches/x', cacheInfoSchema), /unexpected answer/);
  });

  it('reports an unreachable server and a slow one as retryable network errors', async () => {
    const closed = new ApiClient({ serverUrl: 'http://127.0.0.1:1' });
    await assert.rejects(closed.get('/whoami', whoamiSchema), (error: unknown) => {
      assert.ok(error instanceof NetworkError && isRetryable(error));
      return true;
    });
    handler = () => undefined; // never answers
    const slow = new ApiClient({ serverUrl: url, timeoutMs: 100 });
    await assert.rejects(slow.get('/whoami', whoamiSchema), (error: unknown) => {
      assert.ok(error instanceof NetworkError);
      assert.match(error.message, /no answer within/);
      return true;
    });
  });

  it('streams a PUT body, and surfaces an error of the body source as itself', async () => {
    let received = 0;
    handler = (request, response) => {
      request.on('data', (chunk: Buffer) => (received += chunk.length));
      request.on('end', () => {
        json(200, { ok: true })(request, response);
      });
    };
    const client = new ApiClient({ serverUrl: url });
    async function* chunks(count: number, fail: boolean): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < count; i++) yield await Promise.resolve(Buffer.alloc(64 * 1024, i));
      if (fail) throw new Error('the store path vanished');
    }
    const schema = z.object({ ok: z.boolean() });
    assert.deepEqual(await client.putStream('/p', chunks(32, false), 'x/y', schema), { ok: true });
    assert.equal(received, 32 * 64 * 1024);
    await assert.rejects(client.putStream('/p', chunks(4, true), 'x/y', schema), /the store path vanished/);
  });

  it('takes an answer sent before the body was read, stops sending, and releases the body source', async () => {
    // The server refuses from the headers alone and never reads the body, like niche does for a token
    // without push permission.
    let requests = 0;
    handler = (request, response) => {
      // Only this test's requests (a late one of an earlier test may still arrive).
      if (request.url?.endsWith('/early') === true) requests++;
      json(403, apiError('PERMISSION_DENIED', 'this token lacks the push permission'))(request, response);
    };
    let pulled = 0;
    let released = false;
    async function* endless(): AsyncGenerator<Uint8Array> {
      try {
        for (;;) {
          pulled++;
          yield await Promise.resolve(Buffer.alloc(256 * 1024, 1));
        }
      } finally {
        released = true;
      }
    }
    const client = new ApiClient({ serverUrl: url, token: 'nch_secret' });
    const started = Date.now();
    await assert.rejects(client.putStream('/early', endless(), 'x/y', z.object({})), (error: unknown) => {
      assert.ok(error instanceof ForbiddenError, String(error));
      assert.match(error.message, /lacks the push permission \(HTTP 403/);
      return true;
    });
    assert.ok(Date.now() - started < 5_000);
    assert.equal(requests, 1);
    const pulledAtAnswer = pulled;
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.ok(released, 'the body source is closed (its files with it)');
    assert.equal(pulled, pulledAtAnswer, 'nothing more is read from the source');
  });

  it('still reports the answer when the server closes the connection while the body is being sent', async () => {
    handler = (request, response) => {
      response.writeHead(401, { 'content-type': 'application/json' });
      response.end(JSON.stringify(apiError('TOKEN_INVALID', 'the token was revoked')), () => {
        // Some time later the connection is torn down with the body still arriving (writes fail).
        setTimeout(() => request.socket.destroy(), 50);
      });
    };
    async function* slow(): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < 400; i++) {
        await new Promise((resolve) => setTimeout(resolve, 1));
        yield Buffer.alloc(64 * 1024, 2);
      }
    }
    const client = new ApiClient({ serverUrl: url, token: 'nch_secret' });
    await assert.rejects(client.putStream('/p', slow(), 'x/y', z.object({})), (error: unknown) => {
      assert.ok(error instanceof UnauthenticatedError, String(error));
      assert.match(error.message, /the token was revoked/);
      return true;
    });
  });

  it('abandons an upload that makes no progress', async () => {
    handler = () => undefined;
    const client = new ApiClient({ serverUrl: url });
    async function* one(): AsyncGenerator<Uint8Array> {
      yield await Promise.resolve(Buffer.from('x'));
    }
    await assert.rejects(
      client.putStream('/p', one(), 'x/y', z.object({}), { idleTimeoutMs: 150 }),
      (error: unknown) => error instanceof NetworkError && /no progress/.test(error.message),
    );
  });
});
