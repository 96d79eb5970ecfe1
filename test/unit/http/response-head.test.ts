import assert from 'node:assert/strict';
import {
  createServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { requestIdOf, setRequestId, writeHead } from '../../../src/http/response-head.js';

/** Answers one request with `answer`, and returns the status and headers the client received. */
async function exchange(answer: (response: ServerResponse) => void): Promise<{
  status: number | undefined;
  headers: IncomingHttpHeaders;
  raw: string[];
}> {
  const server = createServer((_request, response) => {
    answer(response);
    response.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const { port } = server.address() as AddressInfo;
    return await new Promise((resolve, reject) => {
      httpRequest({ port, host: '127.0.0.1', path: '/' }, (response) => {
        response.resume();
        response.on('end', () => {
          resolve({ status: response.statusCode, headers: response.headers, raw: response.rawHeaders });
        });
      })
        .on('error', reject)
        .end();
    });
  } finally {
    server.close();
  }
}

describe('response heads', () => {
  it('sends the listed headers in order, and no request id when the response has none', async () => {
    const got = await exchange((response) => {
      assert.equal(requestIdOf(response), undefined);
      writeHead(response, 404, [
        'cache-control',
        'no-store',
        'content-type',
        'text/plain',
        'content-length',
        '0',
      ]);
    });
    assert.equal(got.status, 404);
    assert.deepEqual(
      got.raw
        .filter((_, i) => i % 2 === 0)
        .filter((name) => !['Date', 'Connection', 'Keep-Alive'].includes(name)),
      ['cache-control', 'content-type', 'content-length'],
    );
    assert.equal(got.headers['x-request-id'], undefined);
  });

  it("adds the response's request id, once", async () => {
    const tagged = await exchange((response) => {
      setRequestId(response, 'abc-1');
      assert.equal(requestIdOf(response), 'abc-1');
      writeHead(response, 200, ['content-length', '0']);
    });
    assert.equal(tagged.headers['x-request-id'], 'abc-1');
    // A head that names its own id (a 5xx's, logged under it) keeps it and gets no second one.
    const own = await exchange((response) => {
      setRequestId(response, 'abc-2');
      writeHead(response, 500, ['content-length', '0', 'x-request-id', 'abc-2']);
    });
    assert.equal(own.raw.filter((name) => name.toLowerCase() === 'x-request-id').length, 1);
    assert.equal(own.headers['x-request-id'], 'abc-2');
  });
});
