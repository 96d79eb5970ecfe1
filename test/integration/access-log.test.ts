// Access logs (src/http/access-log.ts): one JSON line per request through the server's logger, for the
// read path's narinfo and NAR reads (which never reach fastify), uploads, the API, and an upload refused
// before its body was read; the token id of authenticated requests and never the secret; the request id
// sent as X-Request-Id; sampling and off.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { hashToken } from '../../src/cache/tokens.js';
import { fakeBaseName, fixture, narInfoText } from '../helpers/nar-fixtures.js';
import { LogSink } from '../helpers/log-sink.js';
import { basicAuth, startTestServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

interface Line {
  readonly msg: string;
  readonly level: number;
  readonly reqId: string;
  readonly method: string;
  readonly url: string;
  readonly cache?: string;
  readonly kind: string;
  readonly status: number;
  readonly bytesIn?: number;
  readonly bytesOut?: number;
  readonly ms: number;
  readonly token?: number;
  readonly remote?: string;
  readonly proto: string;
  readonly ua?: string;
}

function accessLines(sink: LogSink): Line[] {
  return sink.lines
    .map((text) => JSON.parse(text) as Line)
    .filter((line) => line.msg === 'request' && typeof line.reqId === 'string');
}

/** The line of the request whose response carried `id`, once written. */
function lineOf(sink: LogSink, id: string | null): Promise<Line> {
  assert.ok(id !== null && id !== '', 'the response has an X-Request-Id');
  return waitFor(() => accessLines(sink).find((line) => line.reqId === id), {
    what: `the access log line of request ${id}`,
    timeoutMs: 5_000,
  });
}

async function tokenId(t: TestServer, secret: string): Promise<number> {
  const record = (await t.server.stores.db.listTokens()).find(
    (token) => token.tokenHash === hashToken(secret),
  );
  assert.ok(record !== undefined);
  return record.id;
}

describe('access log lines', { timeout: 60_000 }, () => {
  const sink = new LogSink();
  let t: TestServer;
  let push: string;
  let pullOnly: string;
  let narInfoPath: string;
  let narPath: string;
  let narBytes: number;

  before(async () => {
    // Warn-level logging: access lines are written whatever the level (only `silent` stops them).
    t = await startTestServer({ start: { logger: pino({ level: 'warn' }, sink) } });
    push = await t.token(['main'], ['pull', 'push']);
    pullOnly = await t.token(['main'], ['pull']);
    const fx = await fixture('access log\n', 'xz');
    const base = fakeBaseName('access-log');
    narPath = `/main/nar/${fx.fileName}`;
    narBytes = fx.file.length;
    narInfoPath = `/main/${base.slice(0, 32)}.narinfo`;
    for (const [path, body] of [
      [narPath, fx.file],
      [narInfoPath, narInfoText(base, fx)],
    ] as const) {
      const response = await fetch(`${t.url}${path}`, {
        method: 'PUT',
        body,
        headers: { authorization: basicAuth(push) },
      });
      assert.ok(response.ok, await response.text());
      const line = await lineOf(sink, response.headers.get('x-request-id'));
      assert.equal(line.kind, 'upload');
      assert.equal(line.method, 'PUT');
      assert.equal(line.cache, 'main');
      assert.equal(line.status, response.status);
      assert.equal(line.token, await tokenId(t, push));
      assert.ok((line.bytesIn ?? 0) >= Buffer.byteLength(body), `bytesIn ${line.bytesIn}`);
    }
  });
  after(async () => {
    await t.stop();
  });

  it('never holds a token secret', () => {
    const text = sink.lines.join('\n');
    assert.ok(!text.includes(push) && !text.includes(pullOnly), 'no secret in the log');
    assert.ok(!text.includes(basicAuth(push).slice(6)), 'no credentials in the log');
  });

  it('logs narinfo hits (from the database, then from memory) and misses, HEAD too', async () => {
    for (const method of ['GET', 'GET', 'HEAD']) {
      const response = await fetch(`${t.url}${narInfoPath}`, {
        method,
        headers: { authorization: basicAuth(pullOnly), 'user-agent': 'curl/8 Nix/2.8.0' },
      });
      const body = await response.text();
      assert.equal(response.status, 200);
      const line = await lineOf(sink, response.headers.get('x-request-id'));
      assert.equal(line.level, 30);
      assert.equal(line.method, method);
      assert.equal(line.url, narInfoPath);
      assert.equal(line.cache, 'main');
      assert.equal(line.kind, 'narinfo');
      assert.equal(line.status, 200);
      assert.equal(line.proto, '1.1');
      assert.equal(line.ua, 'curl/8 Nix/2.8.0');
      assert.equal(line.remote, '127.0.0.1');
      assert.ok(line.ms >= 0 && line.ms < 5_000);
      // Headers and body: more than the body alone.
      assert.ok((line.bytesOut ?? 0) > Buffer.byteLength(body), `bytesOut ${line.bytesOut}`);
      // A public cache never looks at credentials: the request was not authenticated.
      assert.equal(line.token, undefined);
    }
    const miss = `/main/${'0'.repeat(32)}.narinfo`;
    const response = await fetch(`${t.url}${miss}`);
    assert.equal(response.status, 404);
    const line = await lineOf(sink, response.headers.get('x-request-id'));
    assert.deepEqual([line.kind, line.status, line.url], ['narinfo', 404, miss]);
  });

  it('logs a NAR download with the bytes sent', async () => {
    const response = await fetch(`${t.url}${narPath}`);
    assert.equal((await response.arrayBuffer()).byteLength, narBytes);
    const line = await lineOf(sink, response.headers.get('x-request-id'));
    assert.deepEqual([line.kind, line.status, line.cache], ['nar', 200, 'main']);
    assert.ok((line.bytesOut ?? 0) > narBytes, `bytesOut ${line.bytesOut}`);
  });

  it('logs API requests, with the token id when authenticated', async () => {
    const response = await fetch(`${t.url}/api/v1/caches/main`, {
      headers: { authorization: `Bearer ${pullOnly}` },
    });
    assert.equal(response.status, 200);
    const line = await lineOf(sink, response.headers.get('x-request-id'));
    assert.deepEqual([line.kind, line.status, line.cache], ['api', 200, 'main']);
    const missing = await fetch(`${t.url}/api/v1/tokens`, {
      headers: { authorization: `Bearer ${pullOnly}` },
    });
    assert.equal(missing.status, 403);
    const refused = await lineOf(sink, missing.headers.get('x-request-id'));
    assert.deepEqual([refused.kind, refused.status], ['api', 403]);
    assert.equal(refused.token, await tokenId(t, pullOnly));
  });

  it('logs an upload refused before its body was read (an early answer), with the token', async () => {
    const path = `/main/nar/${'1'.repeat(52)}.nar`;
    const head =
      `PUT ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${pullOnly}\r\n` +
      `content-type: application/octet-stream\r\ncontent-length: ${8 << 20}\r\n\r\n`;
    const received = await new Promise<string>((resolve) => {
      const socket = connect(t.server.port, '127.0.0.1');
      let text = '';
      socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
      socket.on('error', () => undefined);
      socket.on('close', () => {
        resolve(text);
      });
      socket.write(head);
      socket.write(Buffer.alloc(1 << 20, 0x61));
    });
    assert.match(received, /^HTTP\/1\.1 403 /);
    const id = /^x-request-id: (.+)$/im.exec(received)?.[1]?.trim() ?? null;
    const line = await lineOf(sink, id);
    assert.deepEqual([line.method, line.kind, line.status, line.url], ['PUT', 'upload', 403, path]);
    assert.equal(line.token, await tokenId(t, pullOnly));
  });

  it('sends a request id: its own, or a plain one the client sent', async () => {
    const ids = new Set<string>();
    for (let i = 0; i < 3; i++) {
      const response = await fetch(`${t.url}/main/nix-cache-info`);
      const id = response.headers.get('x-request-id') ?? '';
      assert.match(id, /^[0-9a-f]{12}-[0-9a-z]+$/);
      ids.add(id);
    }
    assert.equal(ids.size, 3, 'ids differ');
    const given = await fetch(`${t.url}${narInfoPath}`, { headers: { 'x-request-id': 'edge-42.abc' } });
    assert.equal(given.headers.get('x-request-id'), 'edge-42.abc');
    assert.equal((await lineOf(sink, 'edge-42.abc')).url, narInfoPath);
    for (const bad of ['a b', 'x'.repeat(129), 'evil"\\']) {
      const response = await fetch(`${t.url}${narInfoPath}`, { headers: { 'x-request-id': bad } });
      assert.match(response.headers.get('x-request-id') ?? '', /^[0-9a-f]{12}-/);
    }
  });
});

describe('access log settings', { timeout: 60_000 }, () => {
  it('off: no lines and no request ids', async () => {
    const sink = new LogSink();
    const t = await startTestServer({
      flags: { accessLog: 'off' },
      start: { logger: pino({ level: 'info' }, sink) },
    });
    try {
      for (let i = 0; i < 20; i++) {
        const response = await fetch(`${t.url}/main/${'0'.repeat(32)}.narinfo`);
        assert.equal(response.status, 404);
        assert.equal(response.headers.get('x-request-id'), null);
      }
      assert.equal(accessLines(sink).length, 0);
    } finally {
      await t.stop();
    }
  });

  it('a sample rate logs about that fraction of requests, every response keeping its id', async () => {
    const sink = new LogSink();
    const t = await startTestServer({
      flags: { accessLog: '0.25' },
      start: { logger: pino({ level: 'info' }, sink) },
    });
    try {
      const ids: string[] = [];
      for (let i = 0; i < 400; i++) {
        const response = await fetch(`${t.url}/main/${'0'.repeat(32)}.narinfo`);
        await response.arrayBuffer();
        ids.push(response.headers.get('x-request-id') ?? '');
      }
      assert.equal(new Set(ids).size, 400);
      await new Promise((resolve) => setTimeout(resolve, 100));
      const logged = accessLines(sink);
      // Binomial(400, 0.25): mean 100, standard deviation 8.7; these bounds are 6 deviations away.
      assert.ok(logged.length > 48 && logged.length < 152, `${logged.length} lines for 400 requests`);
      for (const line of logged) assert.ok(ids.includes(line.reqId));
    } finally {
      await t.stop();
    }
  });
});
