// Every endpoint x every kind of credential, allowed and refused, as one table. Refusals are recognised by
// their error codes; anything else (success, or a 4xx about the request body) counts as "allowed".
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { UPLOAD_CONTENT_TYPE } from '../../src/api/v1.js';
import { createCacheWithKey } from '../../src/cache/admin-service.js';
import type { Permission } from '../../src/db/metadata-store.js';
import { basicAuth, startTestServer, type TestServer } from '../helpers/server.js';
import { fakeBaseName, fixture, narInfoText } from '../helpers/nar-fixtures.js';

type Kind =
  'anonymous' | 'revoked' | 'other' | 'pull' | 'push' | 'delete' | 'cacheAdmin' | 'serverAdmin' | 'root';

/** What each credential may do on the private cache `priv` (tokens are scoped to `priv*`). */
const GRANTED: Record<Kind, readonly Permission[] | 'none'> = {
  anonymous: 'none',
  revoked: 'none',
  other: [],
  pull: ['pull'],
  push: ['pull', 'push'],
  delete: ['pull', 'delete'],
  cacheAdmin: ['pull', 'cache-admin'],
  serverAdmin: ['server-admin'],
  root: ['pull', 'push', 'delete', 'cache-admin', 'server-admin'],
};

interface Endpoint {
  readonly name: string;
  readonly method: string;
  readonly url: () => string;
  readonly body?: () => string | Buffer;
  readonly needs: Permission | 'token-admin';
  /** Called before each case (e.g. to recreate what an allowed case deletes). */
  readonly setup?: () => Promise<void>;
}

let t: TestServer;
const tokens = new Map<Kind, string>();
let narinfoHash = '';
let narFile = '';
let victim = 0;

function outcome(status: number, text: string): string {
  if (status < 400) return 'ok';
  const code =
    /error (\w+):/.exec(text)?.[1] ?? (JSON.parse(text) as { error?: { code?: string } }).error?.code;
  return ['TOKEN_MISSING', 'TOKEN_INVALID', 'CACHE_NOT_FOUND', 'PERMISSION_DENIED'].includes(code ?? '')
    ? (code ?? '')
    : 'ok';
}

function expected(kind: Kind, endpoint: Endpoint): string {
  const granted = GRANTED[kind];
  if (granted === 'none') return kind === 'anonymous' ? 'TOKEN_MISSING' : 'TOKEN_INVALID';
  if (endpoint.needs === 'token-admin') return kind === 'root' ? 'ok' : 'PERMISSION_DENIED';
  if (endpoint.name === 'create cache') return granted.includes('server-admin') ? 'ok' : 'PERMISSION_DENIED';
  if (granted.length === 0) return 'CACHE_NOT_FOUND';
  return granted.includes(endpoint.needs) ? 'ok' : 'PERMISSION_DENIED';
}

const endpoints: readonly Endpoint[] = [
  { name: 'nix-cache-info', method: 'GET', url: () => '/priv/nix-cache-info', needs: 'pull' },
  { name: 'get narinfo', method: 'GET', url: () => `/priv/${narinfoHash}.narinfo`, needs: 'pull' },
  { name: 'head narinfo', method: 'HEAD', url: () => `/priv/${narinfoHash}.narinfo`, needs: 'pull' },
  { name: 'get nar', method: 'GET', url: () => `/priv/nar/${narFile}`, needs: 'pull' },
  { name: 'head nar', method: 'HEAD', url: () => `/priv/nar/${narFile}`, needs: 'pull' },
  {
    name: 'put nar',
    method: 'PUT',
    url: () => `/priv/nar/${'0'.repeat(52)}.nar`,
    body: () => 'not a nar',
    needs: 'push',
  },
  {
    name: 'put narinfo',
    method: 'PUT',
    url: () => `/priv/${'0'.repeat(32)}.narinfo`,
    body: () => 'bad',
    needs: 'push',
  },
  {
    name: 'put cache-info',
    method: 'PUT',
    url: () => '/priv/nix-cache-info',
    body: () => 'StoreDir: /nix/store\n',
    needs: 'push',
  },
  { name: 'api cache info', method: 'GET', url: () => '/api/v1/caches/priv', needs: 'pull' },
  {
    name: 'update cache',
    method: 'PATCH',
    url: () => '/api/v1/caches/priv',
    body: () => '{"priority":41}',
    needs: 'cache-admin',
  },
  {
    name: 'delete cache',
    method: 'DELETE',
    url: () => `/api/v1/caches/priv-victim-${victim}`,
    needs: 'server-admin',
    setup: async () => {
      victim += 1;
      await createCacheWithKey(t.server.stores.db, {
        name: `priv-victim-${victim}`,
        isPublic: false,
        priority: 40,
      });
    },
  },
  { name: 'list keys', method: 'GET', url: () => '/api/v1/caches/priv/keys', needs: 'cache-admin' },
  {
    name: 'add key',
    method: 'POST',
    url: () => '/api/v1/caches/priv/keys',
    body: () => '{"generate":true}',
    needs: 'cache-admin',
  },
  {
    name: 'retire key',
    method: 'POST',
    url: () => '/api/v1/caches/priv/keys/nope-1/retire',
    needs: 'cache-admin',
  },
  {
    name: 'missing',
    method: 'POST',
    url: () => '/api/v1/caches/priv/missing',
    body: () => '{"paths":[]}',
    needs: 'pull',
  },
  { name: 'list paths', method: 'GET', url: () => '/api/v1/caches/priv/paths?name=a', needs: 'pull' },
  {
    name: 'upload path',
    method: 'PUT',
    url: () => `/api/v1/caches/priv/paths/${'0'.repeat(32)}`,
    body: () => '{}\n',
    needs: 'push',
  },
  {
    name: 'delete path',
    method: 'DELETE',
    url: () => `/api/v1/caches/priv/paths/${'0'.repeat(32)}`,
    needs: 'delete',
  },
  {
    name: 'create cache',
    method: 'POST',
    url: () => '/api/v1/caches',
    body: () => `{"name":"priv-new-${victim++}","public":false}`,
    needs: 'server-admin',
  },
  { name: 'list tokens', method: 'GET', url: () => '/api/v1/tokens', needs: 'token-admin' },
  {
    name: 'create token',
    method: 'POST',
    url: () => '/api/v1/tokens',
    body: () => '{"scopes":[{"cache":"x","permissions":["pull"]}]}',
    needs: 'token-admin',
  },
  { name: 'revoke token', method: 'DELETE', url: () => '/api/v1/tokens/999999', needs: 'token-admin' },
];

before(async () => {
  t = await startTestServer();
  const db = t.server.stores.db;
  await createCacheWithKey(db, { name: 'priv', isPublic: false, priority: 40 });
  await createCacheWithKey(db, { name: 'other', isPublic: false, priority: 40 });
  const admin = await t.token(['*'], ['pull', 'push', 'delete', 'cache-admin', 'server-admin']);
  tokens.set('root', admin);
  tokens.set('other', await t.token(['other'], ['pull', 'push', 'delete', 'cache-admin', 'server-admin']));
  for (const kind of ['pull', 'push', 'delete', 'cacheAdmin', 'serverAdmin'] as const) {
    const granted = GRANTED[kind];
    assert.ok(granted !== 'none');
    tokens.set(kind, await t.token(['priv*'], granted));
  }
  const revoked = await t.token(['priv*'], ['pull', 'push']);
  const listed = await db.listTokens();
  const last = listed.at(-1);
  assert.ok(last);
  await db.revokeToken(last.id, new Date());
  tokens.set('revoked', revoked);

  // One path in priv, so reads of existing objects can succeed.
  const fx = await fixture('permissions\n');
  const base = fakeBaseName('perm');
  narinfoHash = base.slice(0, 32);
  narFile = fx.fileName;
  const auth = { authorization: basicAuth(admin) };
  assert.equal(
    (await fetch(`${t.url}/priv/nar/${fx.fileName}`, { method: 'PUT', body: fx.file, headers: auth })).status,
    201,
  );
  const put = await fetch(`${t.url}/priv/${narinfoHash}.narinfo`, {
    method: 'PUT',
    body: narInfoText(base, fx),
    headers: auth,
  });
  assert.equal(put.status, 201);
});

after(async () => {
  await t.stop();
});

describe('every endpoint x every credential', () => {
  for (const endpoint of endpoints) {
    for (const kind of Object.keys(GRANTED) as Kind[]) {
      const want =
        endpoint.method === 'HEAD' ? headExpected(expected(kind, endpoint)) : expected(kind, endpoint);
      it(`${endpoint.name} as ${kind}: ${want}`, async () => {
        await endpoint.setup?.();
        const token = tokens.get(kind);
        const headers: Record<string, string> =
          token === undefined ? {} : { authorization: `Bearer ${token}` };
        const body = endpoint.body?.();
        // As niche's client sends them: API writes always declare their type (src/http/routes/api).
        if (endpoint.url().includes('/paths/') && endpoint.method === 'PUT') {
          headers['content-type'] = UPLOAD_CONTENT_TYPE;
        } else if (endpoint.url().startsWith('/api/') && endpoint.method !== 'DELETE') {
          if (endpoint.method !== 'GET') headers['content-type'] = 'application/json';
        } else if (body !== undefined) {
          headers['content-type'] = 'application/octet-stream';
        }
        const response = await fetch(`${t.url}${endpoint.url()}`, {
          method: endpoint.method,
          headers,
          ...(body === undefined ? {} : { body }),
        });
        const text = await response.text();
        const got =
          endpoint.method === 'HEAD' ? headOutcome(response.status) : outcome(response.status, text);
        assert.equal(got, want, `${response.status} ${text.slice(0, 200)}`);
        if (got.startsWith('TOKEN_')) {
          // Nix answers a Basic challenge from netrc; the API never invites a browser's Basic prompt.
          const scheme = endpoint.url().startsWith('/api/') ? 'Bearer' : 'Basic';
          assert.equal(response.headers.get('www-authenticate'), `${scheme} realm="niche"`);
        }
      });
    }
  }
});

/** HEAD responses have no body: refusals are told apart by status alone (both 401s look alike). */
function headOutcome(status: number): string {
  return { 401: 'TOKEN_*', 403: 'PERMISSION_DENIED', 404: 'CACHE_NOT_FOUND' }[status] ?? 'ok';
}

function headExpected(want: string): string {
  return want === 'TOKEN_MISSING' || want === 'TOKEN_INVALID' ? 'TOKEN_*' : want;
}
