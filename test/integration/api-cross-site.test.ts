// The JSON API against cross-site requests (issue 10, item 7). A web page can make a browser send
// "simple" requests (GET, HEAD, POST with no Content-Type or a text/plain, form or multipart one) with the
// credentials it holds for niche, without asking niche first. So every API write must declare the JSON
// (or upload) content type, which no other site can make a browser send without a CORS preflight that
// niche never grants; and the API's 401s must not invite the browser to ask for and keep Basic
// credentials.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { UPLOAD_CONTENT_TYPE, type KeyInfo } from '../../src/api/v1.js';
import { basicAuth, startTestServer, type TestServer } from '../helpers/server.js';

let t: TestServer;
let root: string;

before(async () => {
  t = await startTestServer();
  root = await t.token(['*'], ['pull', 'push', 'delete', 'cache-admin', 'server-admin']);
});
after(async () => {
  await t.stop();
});

async function send(
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: string,
): Promise<{ status: number; text: string; headers: Headers }> {
  const response = await fetch(`${t.url}${path}`, {
    method,
    headers,
    ...(body === undefined ? {} : { body }),
  });
  return { status: response.status, text: await response.text(), headers: response.headers };
}

async function activeKeys(): Promise<string[]> {
  const response = await send('GET', '/api/v1/caches/main/keys', { authorization: `Bearer ${root}` });
  const { keys } = JSON.parse(response.text) as { keys: KeyInfo[] };
  return keys.filter((key) => key.retiredAt === null).map((key) => key.name);
}

describe('the JSON API and cross-site requests', () => {
  it('refuses writes a browser would send cross-site with cached credentials, and changes nothing', async () => {
    const added = await send(
      'POST',
      '/api/v1/caches/main/keys',
      { authorization: `Bearer ${root}`, 'content-type': 'application/json' },
      '{"generate":true}',
    );
    assert.equal(added.status, 201, added.text);
    const keys = await activeKeys();
    assert.equal(keys.length, 2);
    const victim = keys[0] ?? '';
    const browser = { authorization: basicAuth(root) };
    const simple: [string, string, Record<string, string>, string | undefined][] = [
      // <form enctype="text/plain"> or fetch(…, {mode: 'no-cors'}) from any page.
      ['POST', `/api/v1/caches/main/keys/${victim}/retire`, { 'content-type': 'text/plain' }, '{}'],
      ['POST', `/api/v1/caches/main/keys/${victim}/retire`, {}, undefined],
      [
        'POST',
        '/api/v1/caches',
        { 'content-type': 'application/x-www-form-urlencoded' },
        'name=evil&public=true',
      ],
      ['POST', '/api/v1/caches', { 'content-type': 'text/plain;charset=UTF-8' }, '{"name":"evil"}'],
      [
        'POST',
        '/api/v1/tokens',
        { 'content-type': 'multipart/form-data; boundary=x' },
        '{"scopes":[{"cache":"*","permissions":["server-admin"]}]}',
      ],
      ['POST', '/api/v1/caches/main/missing', { 'content-type': 'text/plain' }, '{"paths":[]}'],
    ];
    for (const [method, path, headers, body] of simple) {
      const response = await send(method, path, { ...browser, ...headers }, body);
      assert.equal(response.status, 415, `${method} ${path}: ${response.text}`);
      const error = (JSON.parse(response.text) as { error: { code: string; message: string } }).error;
      assert.equal(error.code, 'MEDIA_TYPE_UNSUPPORTED');
      assert.match(error.message, /needs Content-Type: application\/json/);
    }
    assert.deepEqual(await activeKeys(), keys);
    assert.equal((await send('GET', '/api/v1/caches/evil', { authorization: `Bearer ${root}` })).status, 404);
    const tokens = await send('GET', '/api/v1/tokens', { authorization: `Bearer ${root}` });
    assert.equal((JSON.parse(tokens.text) as { tokens: unknown[] }).tokens.length, 1);

    // What niche's client sends is accepted (parameters of the media type included).
    const retired = await send('POST', `/api/v1/caches/main/keys/${victim}/retire`, {
      authorization: `Bearer ${root}`,
      'content-type': 'application/json; charset=utf-8',
    });
    assert.equal(retired.status, 200, retired.text);
  });

  it('takes the one-request upload only with its own content type', async () => {
    const hash = '0'.repeat(32);
    for (const type of ['application/json', 'text/plain', 'application/octet-stream']) {
      const response = await send(
        'PUT',
        `/api/v1/caches/main/paths/${hash}`,
        { authorization: `Bearer ${root}`, 'content-type': type },
        '{}\n',
      );
      assert.equal(response.status, 415, `${type}: ${response.text}`);
      assert.match(response.text, new RegExp(`needs Content-Type: ${UPLOAD_CONTENT_TYPE}`));
    }
    const right = await send(
      'PUT',
      `/api/v1/caches/main/paths/${hash}`,
      { authorization: `Bearer ${root}`, 'content-type': UPLOAD_CONTENT_TYPE },
      '{}\n',
    );
    assert.equal(right.status, 400, right.text); // past the type check, to the metadata's validation
  });

  it('asks for a bearer token on the API and for Basic credentials (Nix netrc) on the cache routes', async () => {
    const api = await send('GET', '/api/v1/tokens', {});
    assert.equal(api.status, 401);
    assert.equal(api.headers.get('www-authenticate'), 'Bearer realm="niche"');
    const invalid = await send('GET', '/api/v1/whoami', { authorization: 'Bearer nch_notarealtoken' });
    assert.equal(invalid.status, 401);
    assert.equal(invalid.headers.get('www-authenticate'), 'Bearer realm="niche"');
    const write = await send(
      'POST',
      '/api/v1/caches',
      { 'content-type': 'application/json' },
      '{"name":"x"}',
    );
    assert.equal(write.status, 401);
    assert.equal(write.headers.get('www-authenticate'), 'Bearer realm="niche"');
    const cache = await send('PUT', `/main/${'0'.repeat(32)}.narinfo`, {}, 'x');
    assert.equal(cache.status, 401);
    assert.equal(cache.headers.get('www-authenticate'), 'Basic realm="niche"');
  });

  it('grants no CORS preflight, so a page cannot send a JSON write either', async () => {
    const preflight = await send('OPTIONS', '/api/v1/caches/main/keys', {
      origin: 'https://evil.example',
      'access-control-request-method': 'POST',
      'access-control-request-headers': 'content-type, authorization',
    });
    assert.ok(preflight.status >= 400, `${preflight.status}`);
    for (const [name] of preflight.headers) assert.doesNotMatch(name, /^access-control-/);
    const read = await send('GET', '/api/v1/caches', { origin: 'https://evil.example' });
    assert.equal(read.status, 200);
    for (const [name] of read.headers) assert.doesNotMatch(name, /^access-control-/);
  });
});
