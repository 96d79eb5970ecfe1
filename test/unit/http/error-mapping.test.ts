// How backend failures reach clients: a transient one (a connection refused, S3 throttling, PostgreSQL
// restarting, SQLite busy) is a 503 with Retry-After, which Nix 2.29+ waits out and retries, and names no
// file, host or bucket; any other failure stays a 500 with only a request id.
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';

import { DatabaseError, isTransientFailure, StorageError } from '../../../src/errors.js';
import { sendRawError } from '../../../src/http/error-mapping.js';

function errno(code: string, message = `connect ${code} 10.0.0.7:9000`): Error {
  return Object.assign(new Error(message), { code });
}

function s3Failure(name: string, httpStatusCode: number): Error {
  return Object.assign(new Error(`${name} from s3`), { name, $metadata: { httpStatusCode } });
}

describe('isTransientFailure', () => {
  it('recognises network, descriptor, SQLite, PostgreSQL and S3 failures worth a retry', () => {
    for (const cause of [
      errno('ECONNREFUSED'),
      errno('ECONNRESET'),
      errno('ETIMEDOUT'),
      errno('EMFILE'),
      errno('SQLITE_BUSY'),
      errno('SQLITE_BUSY_SNAPSHOT'),
      errno('57P01', 'terminating connection due to administrator command'),
      errno('08006', 'connection failure'),
      errno('53300', 'sorry, too many clients already'),
      errno('40001', 'could not serialize access'),
      new Error('Connection terminated unexpectedly'),
      s3Failure('SlowDown', 503),
      s3Failure('InternalError', 500),
      s3Failure('SomethingNew', 502),
      s3Failure('TooManyRequests', 429),
      new AggregateError([errno('ECONNREFUSED'), errno('ECONNREFUSED')], 'connect failed'),
      new Error('wrapped', { cause: errno('ECONNRESET') }),
    ]) {
      assert.equal(isTransientFailure(cause), true, String(cause));
    }
  });

  it('leaves lasting failures alone', () => {
    for (const cause of [
      errno('ENOENT'),
      errno('EACCES'),
      errno('ENOSPC'),
      errno('SQLITE_CORRUPT'),
      errno('23505', 'duplicate key value'),
      errno('42P01', 'relation does not exist'),
      s3Failure('AccessDenied', 403),
      s3Failure('NoSuchBucket', 404),
      new Error('plain'),
      'a string',
      undefined,
    ]) {
      assert.equal(isTransientFailure(cause), false, String(cause));
    }
  });

  it('stops on a cause chain that loops', () => {
    const a = new Error('a') as Error & { cause?: unknown };
    const b = new Error('b', { cause: a });
    a.cause = b;
    assert.equal(isTransientFailure(a), false);
  });
});

describe('backend failures over HTTP', () => {
  let server: Server;
  let base: string;
  let next: unknown;
  const logged: unknown[] = [];
  const log = { error: (o: unknown) => logged.push(o), debug: () => undefined };

  before(async () => {
    server = createServer((request, response) => {
      sendRawError(next, request, response, log);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(
    () =>
      new Promise<void>((resolve) =>
        server.close(() => {
          resolve();
        }),
      ),
  );

  async function answer(
    error: unknown,
  ): Promise<{ status: number; retryAfter: string | null; body: string }> {
    next = error;
    const response = await fetch(`${base}/main/nar/x.nar`);
    return {
      status: response.status,
      retryAfter: response.headers.get('retry-after'),
      body: await response.text(),
    };
  }

  it('a blob store that refuses connections is a 503 with Retry-After that names no host', async () => {
    const { status, retryAfter, body } = await answer(
      new StorageError('cannot read blob nar/x from S3: connect ECONNREFUSED 10.0.0.7:9000', {
        cause: errno('ECONNREFUSED'),
      }),
    );
    assert.equal(status, 503);
    assert.ok(Number(retryAfter) >= 1, `Retry-After ${retryAfter}`);
    assert.match(body, /STORAGE_FAILURE/);
    assert.match(body, /blob store is temporarily unavailable/);
    assert.doesNotMatch(body, /10\.0\.0\.7|nar\/x/);
  });

  it('PostgreSQL restarting is a 503 too', async () => {
    const { status, retryAfter, body } = await answer(
      new DatabaseError('reading path failed: terminating connection', {
        cause: errno('57P01', 'terminating'),
      }),
    );
    assert.equal(status, 503);
    assert.ok(retryAfter !== null);
    assert.match(body, /metadata store is temporarily unavailable/);
  });

  it('a lasting failure stays a 500 without Retry-After', async () => {
    const { status, retryAfter, body } = await answer(
      new StorageError('cannot read blob /srv/niche/nar/x: EACCES', { cause: errno('EACCES') }),
    );
    assert.equal(status, 500);
    assert.equal(retryAfter, null);
    assert.doesNotMatch(body, /srv\/niche/);
  });
});
